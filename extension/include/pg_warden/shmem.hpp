/*
 * shmem.hpp — the LWLocks of the one "pg_warden" tranche, by index. Every
 * subsystem takes its locks from here (one tranche, one place that counts
 * them); the subsystem table kSubsystems in pg_warden.cpp lists the
 * subsystems in the same order, with the locks each takes. Each lock's
 * protocol is in its subsystem's header.
 */
#pragma once

namespace warden {

enum WardenLWLock : int {
  kKeysLock = 0,     /* usage.hpp: adding keys */
  kSampleLock,       /* usage.hpp: the sampler's published sample */
  kAdmissionLock,    /* admission.hpp: budgets and overrides */
  kConfigLock,       /* loader.hpp: loader state */
  kIdlePoliciesLock, /* policies.hpp: the loaded idle policies */
  kTerminationsLock, /* terminations.hpp: the terminations ring */
  kHistoryLock,      /* history.hpp: usage history */
  kLWLockCount       /* keep last */
};

}  // namespace warden

/*
 * policies.hpp — idle-termination policies: the rows of warden.idle_policies
 * as the loader copies them into shared memory (enforced by the sampler, see
 * enforcer.hpp), and warden.terminate_idle().
 *
 * Shared memory: at most kMaxIdlePolicies enabled policies (the loader
 * ignores the rest with a WARNING; add_idle_policy refuses a 65th row), under
 * idle_policies_lock: exclusive while the loader publishes, shared while the
 * sampler copies them (only when the loader's generation changed).
 */
#pragma once

#include "pg_warden/cron.hpp" /* C++ only: include policies.hpp before pg.hpp */

#include "pg_warden/pg.hpp"
#include "pg_warden/usage.hpp"

namespace warden {

constexpr int kMaxIdlePolicies = 64;
constexpr int kMaxPatternBytes = 255;

/* An enabled policy as loaded (plain data, lives in shared memory). */
struct IdlePolicy {
  char name[NAMEDATALEN];
  int64 idle_timeout_us;
  bool any_application, any_role, any_database;
  char application[kMaxPatternBytes + 1];
  char role[NAMEDATALEN];
  char database[NAMEDATALEN];
  uint8 states; /* StateBit()s */
  int32 keep_min;
  bool scheduled;
  CronSchedule schedule;
  bool dry_run;
  bool owner_superuser;
};

constexpr uint8 StateBit(SessionState s) { return static_cast<uint8>(1u << static_cast<int>(s)); }

Size IdlePoliciesShmemSize();
void IdlePoliciesShmemInit();

/* Copies the loaded policies into out[kMaxIdlePolicies]; returns how many. */
int CopyIdlePolicies(IdlePolicy *out);

/* Loader callbacks (see loader.hpp). */
void LoadIdlePolicies();
void ClearIdlePolicies();

}  // namespace warden

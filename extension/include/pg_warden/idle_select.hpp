/*
 * idle_select.hpp — which idle sessions a policy terminates, as a pure
 * function (no PostgreSQL headers; unit-tested in tests/unit/).
 *
 * Candidates are the sessions that match a policy and are not protected.
 * They are grouped (same group = same database, role and application_name);
 * in each group the keep_min most recently idle are kept; the others idle
 * for at least timeout are victims, oldest idle first. The earliest moment a
 * waiting candidate reaches the timeout becomes the caller's next deadline.
 */
#pragma once

#include <cstdint>

#include "pg_warden/cpp_only.hpp"

namespace warden {

struct IdleCandidate {
  int32_t index;      /* into the caller's session array */
  int64_t group;      /* sessions of one (database, role, application) share it */
  int64_t idle_since; /* microseconds, any epoch (the same as now) */
};

/*
 * Reorders c: the victims come first, oldest idle first; returns how many.
 * *deadline (0 = none) is lowered to the earliest time a waiting candidate
 * beyond keep_min reaches timeout. Never throws.
 */
int SelectIdleVictims(IdleCandidate *c, int n, int32_t keep_min, int64_t timeout, int64_t now,
                      int64_t *deadline) noexcept;

}  // namespace warden

/*
 * policies.hpp — idle-termination policies: the rows of warden.idle_policies
 * as the loader copies them into shared memory, their enforcement by the
 * sampler worker, and warden.terminate_idle().
 *
 * Shared memory: at most kMaxIdlePolicies enabled policies (the loader
 * ignores the rest with a WARNING; add_idle_policy refuses a 65th row), under
 * idle_policies_lock: exclusive while the loader publishes, shared while the
 * worker copies them (only when the loader's generation changed).
 */
#pragma once

#include "pg_warden/pg.hpp"
#include "pg_warden/tracking.hpp"

namespace warden {

constexpr int kMaxIdlePolicies = 64;
constexpr int kMaxPatternBytes = 255;

Size IdlePoliciesShmemSize();
void IdlePoliciesShmemInit();

/* Loader callbacks (see loader.hpp). */
/* Printable ASCII only? (what application_name can hold; patterns with other bytes never match) */
bool ApplicationPatternIsAscii(const char *pattern);

void LoadIdlePolicies();
void ClearIdlePolicies();

/*
 * The sampler worker, after each sample: terminates (or records, in dry run)
 * the offenders of every enabled policy whose schedule matches now. Returns
 * when it must run again to be on time (the earliest moment a waiting
 * candidate reaches its idle_timeout, or the next minute when a policy has a
 * schedule), 0 for "nothing pending". roleids[i] is the role of sampled[i],
 * slots[i] its BackendSlot index (0 .. MaxBackends - 1).
 */
TimestampTz EnforceIdlePolicies(const SampledBackend *sampled, const Oid *roleids,
                                const int32 *slots, int32 n, TimestampTz now);

}  // namespace warden

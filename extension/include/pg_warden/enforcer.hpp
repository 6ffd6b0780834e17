/*
 * enforcer.hpp — idle policies enforced by the sampler (enforcer.cpp).
 */
#pragma once

#include "pg_warden/pg.hpp"
#include "pg_warden/usage.hpp"

namespace warden {

/*
 * The sampler, after each sample: terminates (or records, in dry run)
 * the offenders of every enabled policy whose schedule matches now. Returns
 * when it must run again to be on time (the earliest moment a waiting
 * candidate reaches its idle_timeout, or the next minute when a policy has a
 * schedule), 0 for "nothing pending". roleids[i] is the role of sampled[i],
 * slots[i] its BackendSlot index (0 .. MaxBackends - 1).
 */
TimestampTz EnforceIdlePolicies(const SampledBackend *sampled, const Oid *roleids,
                                const int32 *slots, int32 n, TimestampTz now);

}  // namespace warden

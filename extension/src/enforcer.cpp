/*
 * enforcer.cpp — the sampler's side of idle policies: after each sample it
 * picks, per enabled policy whose schedule matches now, the sessions idle
 * past the timeout (idle_select.hpp), re-checks each right before acting
 * (same pid, backend start and idle period, still idle long enough), and
 * terminates or records them (terminations.hpp). Runs in the sampler only.
 *
 * Selection rules: client backends only, never roles in
 * warden.exempt_roles, never a superuser's session unless the policy's
 * owner is a superuser, and never Patroni's own session (a superuser's whose
 * application_name is "Patroni") (a short transaction reads pg_authid, a
 * shared catalog, only when such a check is needed).
 *
 * Locks: idle_policies_lock (shared) through CopyIdlePolicies, only when
 * the loader's generation moved; terminations_lock through
 * TerminateAndRecord; ProcArrayLock through BackendPidGetProc.
 */
#include "pg_warden/cron.hpp"
#include "pg_warden/idle_select.hpp"
#include "pg_warden/match.hpp"

#include "pg_warden/enforcer.hpp"

#include "pg_warden/guc.hpp"
#include "pg_warden/loader.hpp"
#include "pg_warden/policies.hpp"
#include "pg_warden/terminations.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

using Candidate = IdleCandidate;

IdlePolicy local_policies[kMaxIdlePolicies];
int local_count = 0;
uint64 local_generation = PG_UINT64_MAX;

/*
 * Decisions already taken, per backend slot, so that a session is terminated
 * once and recorded once per idle period (and, for dry runs, per policy):
 * killed[slot] and dry[slot * kMaxIdlePolicies + policy] hold the pid and
 * the state start of the idle period decided on. Exact (no hashing), sized
 * for MaxBackends, allocated in the sampler on first use.
 */
struct Decided {
  int32 pid;
  TimestampTz state_start;
};
Decided *killed = nullptr;
Decided *dry_decided = nullptr;

void AllocateDecided() {
  if (killed != nullptr) return;
  const Size m = static_cast<Size>(usage->max_backends);
  killed = static_cast<Decided *>(MemoryContextAllocZero(TopMemoryContext, sizeof(Decided) * m));
  dry_decided = static_cast<Decided *>(
      MemoryContextAllocZero(TopMemoryContext, sizeof(Decided) * m * kMaxIdlePolicies));
}

bool Same(const Decided &d, const SampledBackend &sb) {
  return d.pid == sb.pid && d.state_start == sb.state_start;
}

IdlePolicy previous_policies[kMaxIdlePolicies];

/*
 * A new generation (any configuration change: a budget too) keeps the dry-run
 * decisions of every policy that is still there unchanged, at its new index;
 * an added or edited policy decides afresh.
 */
void RefreshPolicies() {
  const uint64 gen = ConfigGeneration();
  if (gen == local_generation) return;
  const int previous_count = local_count;
  memcpy(previous_policies, local_policies, sizeof(IdlePolicy) * previous_count);
  local_count = CopyIdlePolicies(local_policies);
  local_generation = gen;
  if (dry_decided == nullptr) return;
  int from[kMaxIdlePolicies];
  bool moved = local_count != previous_count;
  for (int p = 0; p < local_count; p++) {
    from[p] = -1;
    for (int q = 0; q < previous_count && from[p] < 0; q++)
      if (memcmp(&local_policies[p], &previous_policies[q], sizeof(IdlePolicy)) == 0) from[p] = q;
    moved |= from[p] != p;
  }
  if (!moved) return;
  Decided row[kMaxIdlePolicies];
  for (int slot = 0; slot < usage->max_backends; slot++) {
    Decided *decided = &dry_decided[static_cast<Size>(slot) * kMaxIdlePolicies];
    memcpy(row, decided, sizeof(row));
    memset(decided, 0, sizeof(row));
    for (int p = 0; p < local_count; p++)
      if (from[p] >= 0) decided[p] = row[from[p]];
  }
}

bool PolicyMatches(const IdlePolicy &p, const UsageKey &key) {
  const KeyFilter filter{p.any_database ? nullptr : p.database, p.any_role ? nullptr : p.role,
                         p.any_application ? nullptr : p.application};
  return KeyMatches(filter, key.database, key.role, key.application);
}

/* Superuser flags per role for one round (inside its transaction). */
struct SuperuserCache {
  static constexpr int kSize = 256;
  Oid roles[kSize];
  bool super[kSize];
  void Reset() { memset(roles, 0, sizeof(roles)); }
  bool Get(Oid role) {
    uint32 i = role % kSize;
    for (int probes = 0; probes < kSize; probes++, i = (i + 1) % kSize) {
      if (roles[i] == role) return super[i];
      if (roles[i] == InvalidOid) {
        roles[i] = role;
        super[i] = superuser_arg(role);
        return super[i];
      }
    }
    return superuser_arg(role);
  }
};
SuperuserCache superusers;

struct Victim {
  int32 index;
  int32 slot;
  int32 policy;
  bool confirmed;
};

Candidate *cands = nullptr;
Victim *victims = nullptr;
int16 *victim_of = nullptr;
int32 buffers_for = 0;

int CompareVictimPid(const void *a, const void *b, void *arg) {
  const SampledBackend *s = static_cast<const SampledBackend *>(arg);
  const int32 x = s[static_cast<const Victim *>(a)->index].pid;
  const int32 y = s[static_cast<const Victim *>(b)->index].pid;
  return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Re-reads every victim's pgstat entry just before acting: same session
 * (pid + backend start), same idle period, still in a state the policy
 * names, idle for at least the timeout.
 */
void ConfirmVictims(const SampledBackend *s, int nvictims) {
  qsort_arg(victims, nvictims, sizeof(Victim), CompareVictimPid, const_cast<SampledBackend *>(s));
  pgstat_clear_backend_activity_snapshot();
  const TimestampTz now = GetCurrentTimestamp();
  const int n = pgstat_fetch_stat_numbackends();
  for (int i = 1; i <= n; i++) {
    LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
    if (local == nullptr) continue;
    const PgBackendStatus *be = &local->backendStatus;
    if (be->st_backendType != B_BACKEND) continue;
    int lo = 0, hi = nvictims - 1;
    while (lo <= hi) {
      const int mid = (lo + hi) / 2;
      const int32 pid = s[victims[mid].index].pid;
      if (pid == be->st_procpid) {
        Victim &v = victims[mid];
        const SampledBackend &sb = s[v.index];
        const IdlePolicy &p = local_policies[v.policy];
        v.confirmed = be->st_proc_start_timestamp == sb.backend_start &&
                      be->st_state_start_timestamp == sb.state_start &&
                      (p.states & StateBit(SessionStateOf(be->st_state))) != 0 &&
                      now - be->st_state_start_timestamp >= p.idle_timeout_us;
        break;
      }
      if (pid < be->st_procpid)
        lo = mid + 1;
      else
        hi = mid - 1;
    }
  }
  pgstat_clear_backend_activity_snapshot();
}

void ActOn(const SampledBackend &sb, Oid roleid, int32 slot, int32 policy_index) {
  const IdlePolicy &p = local_policies[policy_index];
  const bool dry = p.dry_run || !guc_enforce;
  Decided &decided = dry ? dry_decided[slot * kMaxIdlePolicies + policy_index] : killed[slot];
  if (Same(killed[slot], sb) || Same(decided, sb)) return;
  TerminationRecord rec;
  memset(&rec, 0, sizeof(rec));
  rec.pid = sb.pid;
  const UsageKey &key = SessionKey(sb);
  strlcpy(rec.database, key.database, NAMEDATALEN);
  strlcpy(rec.role, key.role, NAMEDATALEN);
  strlcpy(rec.application, key.application, NAMEDATALEN);
  FormatClientAddr(sb.client_addr, rec.client_addr, sizeof(rec.client_addr));
  strlcpy(rec.state, SessionStateName(sb.state), sizeof(rec.state));
  strlcpy(rec.policy, p.name, NAMEDATALEN);
  rec.source = TerminationSource::kPolicy;
  rec.dry_run = dry;
  if (TerminateAndRecord(&rec, roleid, sb.state_start, sb.entry))
    decided = Decided{sb.pid, sb.state_start};
}

}  // namespace

TimestampTz EnforceIdlePolicies(const SampledBackend *s, const Oid *roleids, const int32 *slots,
                                int32 n, TimestampTz now) {
  RefreshPolicies();
  if (local_count == 0 || n == 0) return 0;

  /* Schedules use the server's time zone (the `timezone` setting). */
  pg_tm tm;
  fsec_t fsec;
  int tz;
  if (timestamp2tm(now, &tz, &tm, &fsec, nullptr, nullptr) != 0) return 0;
  const int wday = j2day(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday));
  bool active[kMaxIdlePolicies];
  bool any_active = false, any_scheduled = false;
  for (int p = 0; p < local_count; p++) {
    const IdlePolicy &pol = local_policies[p];
    active[p] = !pol.scheduled ||
                CronMatches(pol.schedule, tm.tm_min, tm.tm_hour, tm.tm_mday, tm.tm_mon, wday);
    any_active |= active[p];
    any_scheduled |= pol.scheduled;
  }
  /* a schedule may start matching at the next minute */
  TimestampTz deadline =
      any_scheduled ? now + (60 - tm.tm_sec) * USECS_PER_SEC - static_cast<int64>(fsec) : 0;
  if (!any_active) return deadline;

  AllocateDecided();
  if (buffers_for < usage->max_backends) {
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    const Size m = static_cast<Size>(usage->max_backends);
    cands = static_cast<Candidate *>(palloc(sizeof(Candidate) * m));
    victims = static_cast<Victim *>(palloc(sizeof(Victim) * m));
    victim_of = static_cast<int16 *>(palloc(sizeof(int16) * m));
    buffers_for = usage->max_backends;
    MemoryContextSwitchTo(old);
  }

  bool in_transaction = false;
  MemoryContext caller_context = CurrentMemoryContext;
  int nvictims = 0;
  for (int i = 0; i < n; i++) victim_of[i] = -1;
  for (int p = 0; p < local_count; p++) {
    if (!active[p]) continue;
    const IdlePolicy &pol = local_policies[p];
    int nc = 0;
    for (int i = 0; i < n; i++) {
      const SampledBackend &sb = s[i];
      if ((pol.states & StateBit(sb.state)) == 0 || sb.entry <= 0) continue;
      const UsageKey &key = SessionKey(sb);
      if (!PolicyMatches(pol, key) || IsExemptRole(key.role)) continue;
      /* a superuser's session: only for a superuser's policy, and never Patroni's own */
      if (!pol.owner_superuser || IsPatroniApplication(key.application)) {
        if (!in_transaction) {
          /* superuser flags come from pg_authid (a shared catalog) */
          SetCurrentStatementStartTimestamp();
          StartTransactionCommand();
          superusers.Reset();
          in_transaction = true;
        }
        if (superusers.Get(roleids[i])) continue;
      }
      cands[nc++] = Candidate{i, sb.entry, sb.state_start};
    }
    int64 due = deadline;
    const int nv = SelectIdleVictims(cands, nc, pol.keep_min, pol.idle_timeout_us, now, &due);
    deadline = due;
    for (int v = 0; v < nv; v++) {
      const int32 idx = cands[v].index;
      if (victim_of[idx] >= 0) continue; /* an earlier policy has it */
      victim_of[idx] = static_cast<int16>(p);
      victims[nvictims++] = Victim{idx, slots[idx], p, false};
    }
  }

  /* drop decisions already taken in this idle period */
  int keep = 0;
  for (int v = 0; v < nvictims; v++) {
    const SampledBackend &sb = s[victims[v].index];
    const IdlePolicy &pol = local_policies[victims[v].policy];
    const bool dry = pol.dry_run || !guc_enforce;
    const int32 slot = victims[v].slot;
    if (Same(killed[slot], sb) ||
        (dry && Same(dry_decided[slot * kMaxIdlePolicies + victims[v].policy], sb)))
      continue;
    victims[keep++] = victims[v];
  }
  nvictims = keep;

  if (nvictims > 0) {
    ConfirmVictims(s, nvictims);
    /* oldest idle first */
    qsort_arg(
        victims, nvictims, sizeof(Victim),
        [](const void *a, const void *b, void *arg) -> int {
          const SampledBackend *ss = static_cast<const SampledBackend *>(arg);
          const TimestampTz x = ss[static_cast<const Victim *>(a)->index].state_start;
          const TimestampTz y = ss[static_cast<const Victim *>(b)->index].state_start;
          return x < y ? -1 : x > y ? 1 : 0;
        },
        const_cast<SampledBackend *>(s));
    for (int v = 0; v < nvictims; v++)
      if (victims[v].confirmed)
        ActOn(s[victims[v].index], roleids[victims[v].index], victims[v].slot, victims[v].policy);
  }
  if (in_transaction) {
    CommitTransactionCommand();
    MemoryContextSwitchTo(caller_context);
  }
  const TimestampTz after = GetCurrentTimestamp();
  if (deadline != 0 && deadline <= after) deadline = after + 1000; /* never spin */
  return deadline;
}

}  // namespace warden

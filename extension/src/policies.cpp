/*
 * policies.cpp — idle-termination policies (see policies.hpp):
 *   - argument validation shared by add_idle_policy, the table's row trigger
 *     and terminate_idle (warden.validate_idle_policy);
 *   - warden.config_changed(), the statement trigger that tells the loader;
 *   - loading warden.idle_policies into shared memory (loader worker);
 *   - enforcement by the sampler worker and warden.terminate_idle().
 *
 * Selection rules (both paths): client backends only, never the caller, never
 * roles in warden.exempt_roles, never a superuser's session unless the
 * policy's owner (or terminate_idle's caller) is a superuser. The remaining
 * matching sessions are grouped by (database, role, application_name); in
 * each group the keep_min most recently idle are kept, and the others idle
 * for at least the timeout are terminated, oldest idle first.
 *
 * Locks: idle_policies_lock (see policies.hpp); terminations_lock through
 * RecordTermination; ProcArrayLock through BackendPidGetProc.
 */
#include "pg_warden/cron.hpp"
#include "pg_warden/idle_select.hpp"

#include "pg_warden/policies.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/loader.hpp"
#include "pg_warden/terminations.hpp"

namespace warden {
namespace {

struct IdlePolicy {
  char name[NAMEDATALEN];
  int64 idle_timeout_us;
  bool any_application, any_role, any_database;
  char application[kMaxPatternBytes + 1];
  char role[NAMEDATALEN];
  char database[NAMEDATALEN];
  uint8 states; /* bits: 1 << SessionState */
  int32 keep_min;
  bool scheduled;
  CronSchedule schedule;
  bool dry_run;
  bool owner_superuser;
};

struct IdlePoliciesShared {
  LWLock *lock;
  int32 count;
  IdlePolicy policies[kMaxIdlePolicies];
};

IdlePoliciesShared *idle_policies = nullptr;

constexpr uint8 Bit(SessionState s) { return static_cast<uint8>(1u << static_cast<int>(s)); }
constexpr uint8 kAnyIdle = Bit(SessionState::kIdle) | Bit(SessionState::kIdleInTransaction) |
                           Bit(SessionState::kIdleInTransactionAborted);

/* -- validation (PostgreSQL regime: ereports directly) ------------------------ */

[[noreturn]] void InvalidArgument(const char *arg, const char *why) {
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("invalid value for \"%s\": %s", arg, why)));
  pg_unreachable();
}

int64 IntervalUsecs(const Interval *iv) {
  /* months as 30 days, like extract(epoch); saturate instead of overflowing */
  const double us = static_cast<double>(iv->time) + static_cast<double>(iv->day) * USECS_PER_DAY +
                    static_cast<double>(iv->month) * DAYS_PER_MONTH * USECS_PER_DAY;
  if (us > 1e17) return INT64CONST(100000000000000000);
  return static_cast<int64>(us);
}

int64 ValidateTimeout(const char *arg, bool isnull, Datum d) {
  if (isnull) InvalidArgument(arg, "must not be NULL");
  const int64 us = IntervalUsecs(DatumGetIntervalP(d));
  if (us <= 0) InvalidArgument(arg, "must be a positive interval");
  return us;
}

uint8 ParseState(const char *s) {
  if (strcmp(s, "idle") == 0) return Bit(SessionState::kIdle);
  if (strcmp(s, "idle in transaction") == 0) return Bit(SessionState::kIdleInTransaction);
  if (strcmp(s, "idle in transaction (aborted)") == 0)
    return Bit(SessionState::kIdleInTransactionAborted);
  if (strcmp(s, "any idle") == 0) return kAnyIdle;
  return 0;
}

uint8 ValidateState(bool isnull, Datum d) {
  if (isnull) InvalidArgument("state", "must not be NULL");
  char *s = TextDatumGetCString(d);
  const uint8 bits = ParseState(s);
  if (bits == 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid value for \"state\": \"%s\"", s),
                    errhint("Use 'idle', 'idle in transaction', 'idle in transaction (aborted)' "
                            "or 'any idle'.")));
  return bits;
}

/* Copies an optional text argument, checking its length; returns false if NULL. */
bool ValidateText(const char *arg, bool isnull, Datum d, char *out, size_t size) {
  out[0] = '\0';
  if (isnull) return false;
  text *t = DatumGetTextPP(d);
  if (static_cast<size_t>(VARSIZE_ANY_EXHDR(t)) >= size) {
    char why[64];
    snprintf(why, sizeof(why), "longer than %d bytes", static_cast<int>(size - 1));
    InvalidArgument(arg, why);
  }
  text_to_cstring_buffer(t, out, size);
  return true;
}

/*
 * PostgreSQL keeps only printable ASCII in application_name (any other byte
 * becomes '?'), so a pattern with other characters could never match: refuse it.
 */
void ValidateApplicationPattern(const char *arg, const char *pattern) {
  if (!ApplicationPatternIsAscii(pattern))
    InvalidArgument(arg,
                    "must be printable ASCII (PostgreSQL replaces any other character "
                    "of application_name with '?')");
}

int32 ValidateKeepMin(bool isnull, Datum d) {
  if (isnull) InvalidArgument("keep_min", "must not be NULL");
  const int32 v = DatumGetInt32(d);
  if (v < 0) InvalidArgument("keep_min", "must not be negative");
  return v;
}

bool ValidateBool(const char *arg, bool isnull, Datum d) {
  if (isnull) InvalidArgument(arg, "must not be NULL");
  return DatumGetBool(d);
}

/* The C++ parser behind a PostgreSQL-regime call: no exception escapes. */
bool TryParseCron(const char *expr, CronSchedule *out, char *err, size_t errsize) noexcept {
  try {
    *out = ParseCron(expr);
    return true;
  } catch (const std::exception &e) {
    strlcpy(err, e.what(), errsize);
  } catch (...) {
    strlcpy(err, "invalid cron expression", errsize);
  }
  return false;
}

bool ValidateSchedule(bool isnull, Datum d, CronSchedule *out) {
  if (isnull) return false;
  char *s = TextDatumGetCString(d);
  char err[256];
  if (!TryParseCron(s, out, err, sizeof(err)))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid value for \"schedule\": %s", err),
                    errdetail("The schedule was \"%s\".", s),
                    errhint("A schedule has 5 fields: minute hour day-of-month month "
                            "day-of-week, e.g. '* 0-5 * * *'.")));
  return true;
}

/*
 * Every argument of add_idle_policy, in order: (name, idle_timeout,
 * application, role, database, state, keep_min, schedule, dry_run).
 */
void ValidatePolicyArgs(FunctionCallInfo fcinfo, IdlePolicy *p) {
  memset(p, 0, sizeof(*p));
  if (PG_ARGISNULL(0)) InvalidArgument("name", "must not be NULL");
  ValidateText("name", false, PG_GETARG_DATUM(0), p->name, NAMEDATALEN);
  if (p->name[0] == '\0') InvalidArgument("name", "must not be empty");
  p->idle_timeout_us = ValidateTimeout("idle_timeout", PG_ARGISNULL(1), PG_GETARG_DATUM(1));
  p->any_application = !ValidateText("application", PG_ARGISNULL(2), PG_GETARG_DATUM(2),
                                     p->application, sizeof(p->application));
  ValidateApplicationPattern("application", p->application);
  p->any_role = !ValidateText("role", PG_ARGISNULL(3), PG_GETARG_DATUM(3), p->role, NAMEDATALEN);
  p->any_database =
      !ValidateText("database", PG_ARGISNULL(4), PG_GETARG_DATUM(4), p->database, NAMEDATALEN);
  p->states = ValidateState(PG_ARGISNULL(5), PG_GETARG_DATUM(5));
  p->keep_min = ValidateKeepMin(PG_ARGISNULL(6), PG_GETARG_DATUM(6));
  p->scheduled = ValidateSchedule(PG_ARGISNULL(7), PG_GETARG_DATUM(7), &p->schedule);
  p->dry_run = ValidateBool("dry_run", PG_ARGISNULL(8), PG_GETARG_DATUM(8));
}

/* -- selection ---------------------------------------------------------------- */

using Candidate = IdleCandidate;

/* SIGTERM, as pg_terminate_backend sends it, to the same session only. */
bool SignalTerminate(int32 pid, Oid roleid) {
  PGPROC *proc = BackendPidGetProc(pid);
  if (proc == nullptr || proc->roleId != roleid) return false;
#ifdef HAVE_SETSID
  if (kill(-pid, SIGTERM) == 0) return true;
#endif
  return kill(pid, SIGTERM) == 0;
}

void LogDecision(const TerminationRecord &r) {
  const char *by = r.policy[0] ? r.policy : "terminate_idle";
  if (r.dry_run)
    ereport(LOG, (errmsg("pg_warden: dry run: would terminate session %d of application \"%s\", "
                         "role \"%s\", database \"%s\": %s for %.3f s (%s \"%s\")",
                         r.pid, r.application, r.role, r.database, r.state, r.idle_seconds,
                         r.policy[0] ? "policy" : "by", by)));
  else
    ereport(LOG, (errmsg("pg_warden: terminated session %d of application \"%s\", role \"%s\", "
                         "database \"%s\": %s for %.3f s (%s \"%s\")",
                         r.pid, r.application, r.role, r.database, r.state, r.idle_seconds,
                         r.policy[0] ? "policy" : "by", by)));
}

void CountTerminated(int32 entry) {
  if (entry >= 0 && static_cast<uint32>(entry) < pg_atomic_read_u32(&tracking->used))
    pg_atomic_fetch_add_u64(&tracking->entries[entry].terminated, 1);
}

/* -- the worker's side ----------------------------------------------------------- */

IdlePolicy local_policies[kMaxIdlePolicies];
int local_count = 0;
uint64 local_generation = PG_UINT64_MAX;

/*
 * Decisions already taken, per backend slot, so that a session is terminated
 * once and recorded once per idle period (and, for dry runs, per policy):
 * killed[slot] and dry[slot * kMaxIdlePolicies + policy] hold the pid and
 * the state start of the idle period decided on. Exact (no hashing), sized
 * for MaxBackends, allocated in the worker on first use.
 */
struct Decided {
  int32 pid;
  TimestampTz state_start;
};
Decided *killed = nullptr;
Decided *dry_decided = nullptr;

void AllocateDecided() {
  if (killed != nullptr) return;
  const Size m = static_cast<Size>(tracking->max_backends);
  killed = static_cast<Decided *>(MemoryContextAllocZero(TopMemoryContext, sizeof(Decided) * m));
  dry_decided = static_cast<Decided *>(
      MemoryContextAllocZero(TopMemoryContext, sizeof(Decided) * m * kMaxIdlePolicies));
}

bool Same(const Decided &d, const SampledBackend &sb) {
  return d.pid == sb.pid && d.state_start == sb.state_start;
}

void RefreshPolicies() {
  const uint64 gen = ConfigGeneration();
  if (gen == local_generation || idle_policies == nullptr) return;
  LWLockAcquire(idle_policies->lock, LW_SHARED);
  local_count = idle_policies->count;
  memcpy(local_policies, idle_policies->policies, sizeof(IdlePolicy) * local_count);
  LWLockRelease(idle_policies->lock);
  local_generation = gen;
  /* policy indexes may have moved: a dry run records its decisions afresh */
  if (dry_decided != nullptr)
    memset(dry_decided, 0,
           sizeof(Decided) * static_cast<Size>(tracking->max_backends) * kMaxIdlePolicies);
}

bool KeyMatches(const IdlePolicy &p, const UsageKey &key) {
  if (!p.any_database && strcmp(p.database, key.database) != 0) return false;
  if (!p.any_role && strcmp(p.role, key.role) != 0) return false;
  if (!p.any_application && !LikeMatch(key.application, p.application)) return false;
  return true;
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
                      (p.states & Bit(SessionStateOf(be->st_state))) != 0 &&
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
  rec.at = GetCurrentTimestamp(); /* before the signal: idle_seconds proves it was not early */
  if (!dry && !SignalTerminate(sb.pid, roleid)) return;
  decided = Decided{sb.pid, sb.state_start};
  rec.pid = sb.pid;
  const UsageKey &key = tracking->entries[sb.entry].key;
  strlcpy(rec.database, key.database, NAMEDATALEN);
  strlcpy(rec.role, key.role, NAMEDATALEN);
  strlcpy(rec.application, key.application, NAMEDATALEN);
  FormatClientAddr(sb.client_addr, rec.client_addr, sizeof(rec.client_addr));
  strlcpy(rec.state, SessionStateName(sb.state), sizeof(rec.state));
  rec.idle_seconds = static_cast<double>(rec.at - sb.state_start) / USECS_PER_SEC;
  strlcpy(rec.policy, p.name, NAMEDATALEN);
  rec.source = TerminationSource::kPolicy;
  rec.dry_run = dry;
  RecordTermination(rec);
  if (!dry) CountTerminated(sb.entry);
  LogDecision(rec);
}

/* -- terminate_idle ---------------------------------------------------------------- */

struct GroupKey {
  Oid database;
  Oid role;
  char application[NAMEDATALEN];
};

int32 EntryOfPid(int32 pid) {
  for (int32 i = 0; i < tracking->max_backends; i++) {
    BackendSlot *slot = &tracking->slots[i];
    SpinLockAcquire(&slot->mutex);
    const int32 slot_pid = slot->pid, entry = slot->entry;
    SpinLockRelease(&slot->mutex);
    if (slot_pid == pid) return entry;
  }
  return -1;
}

}  // namespace

/* -- shared memory and loading ------------------------------------------------------ */

Size IdlePoliciesShmemSize() { return MAXALIGN(sizeof(IdlePoliciesShared)); }

void IdlePoliciesShmemInit() {
  bool found = false;
  idle_policies = static_cast<IdlePoliciesShared *>(
      ShmemInitStruct("pg_warden idle policies", IdlePoliciesShmemSize(), &found));
  if (found) return;
  memset(idle_policies, 0, sizeof(IdlePoliciesShared));
  idle_policies->lock = &GetNamedLWLockTranche("pg_warden")[kIdlePoliciesLock].lock;
}

void ClearIdlePolicies() {
  LWLockAcquire(idle_policies->lock, LW_EXCLUSIVE);
  idle_policies->count = 0;
  LWLockRelease(idle_policies->lock);
}

void LoadIdlePolicies() {
  static const char *query =
      "SELECT p.name, p.idle_timeout, p.application, p.role, p.database, p.state, p.keep_min,"
      "       p.schedule, p.dry_run, coalesce(r.rolsuper, false),"
      "       coalesce(r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'pg_signal_backend', 'MEMBER'),"
      "                false), p.owner"
      "  FROM warden.idle_policies p"
      "  LEFT JOIN pg_catalog.pg_roles r ON r.rolname = p.owner"
      " WHERE p.enabled ORDER BY p.name";
  if (SPI_execute(query, true, 0) != SPI_OK_SELECT)
    elog(ERROR, "pg_warden loader: could not read warden.idle_policies");
  IdlePolicy *loaded = static_cast<IdlePolicy *>(palloc0(sizeof(IdlePolicy) * kMaxIdlePolicies));
  int count = 0;
  for (uint64 row = 0; row < SPI_processed; row++) {
    HeapTuple tup = SPI_tuptable->vals[row];
    TupleDesc desc = SPI_tuptable->tupdesc;
    bool isnull[12];
    Datum v[12];
    for (int c = 0; c < 12; c++) v[c] = SPI_getbinval(tup, desc, c + 1, &isnull[c]);
    const char *name = TextDatumGetCString(v[0]);
    if (count == kMaxIdlePolicies) {
      ereport(WARNING, (errmsg("pg_warden: more than %d enabled idle policies; ignoring \"%s\" "
                               "and the ones after it",
                               kMaxIdlePolicies, name)));
      break;
    }
    if (!DatumGetBool(v[10])) {
      ereport(WARNING, (errmsg("pg_warden: idle policy \"%s\" is ignored: its owner \"%s\" is "
                               "neither a superuser nor a member of pg_signal_backend",
                               name, isnull[11] ? "" : NameStr(*DatumGetName(v[11])))));
      continue;
    }
    IdlePolicy &p = loaded[count];
    strlcpy(p.name, name, NAMEDATALEN);
    p.idle_timeout_us = isnull[1] ? 0 : IntervalUsecs(DatumGetIntervalP(v[1]));
    p.any_application = isnull[2];
    if (!isnull[2])
      text_to_cstring_buffer(DatumGetTextPP(v[2]), p.application, sizeof(p.application));
    p.any_role = isnull[3];
    if (!isnull[3]) text_to_cstring_buffer(DatumGetTextPP(v[3]), p.role, NAMEDATALEN);
    p.any_database = isnull[4];
    if (!isnull[4]) text_to_cstring_buffer(DatumGetTextPP(v[4]), p.database, NAMEDATALEN);
    p.states = isnull[5] ? 0 : ParseState(TextDatumGetCString(v[5]));
    p.keep_min = isnull[6] ? 0 : DatumGetInt32(v[6]);
    p.scheduled = !isnull[7];
    char err[256];
    if (p.scheduled && !TryParseCron(TextDatumGetCString(v[7]), &p.schedule, err, sizeof(err))) {
      ereport(WARNING, (errmsg("pg_warden: idle policy \"%s\" is ignored: invalid schedule: %s",
                               name, err)));
      continue;
    }
    if (p.idle_timeout_us <= 0 || p.states == 0 || p.keep_min < 0) {
      ereport(WARNING, (errmsg("pg_warden: idle policy \"%s\" is ignored: invalid row", name)));
      continue;
    }
    p.dry_run = !isnull[8] && DatumGetBool(v[8]);
    p.owner_superuser = DatumGetBool(v[9]);
    count++;
  }
  LWLockAcquire(idle_policies->lock, LW_EXCLUSIVE);
  memcpy(idle_policies->policies, loaded, sizeof(IdlePolicy) * count);
  idle_policies->count = count;
  LWLockRelease(idle_policies->lock);
  pfree(loaded);
  /* LOG when the number changed; a reload for a role change stays quiet */
  static int previous_count = -1;
  ereport(count != previous_count ? LOG : DEBUG1,
          (errmsg("pg_warden: loaded %d idle policies", count)));
  previous_count = count;
}

/* -- enforcement by the worker -------------------------------------------------------- */

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
  if (buffers_for < tracking->max_backends) {
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    const Size m = static_cast<Size>(tracking->max_backends);
    cands = static_cast<Candidate *>(palloc(sizeof(Candidate) * m));
    victims = static_cast<Victim *>(palloc(sizeof(Victim) * m));
    victim_of = static_cast<int16 *>(palloc(sizeof(int16) * m));
    buffers_for = tracking->max_backends;
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
      if ((pol.states & Bit(sb.state)) == 0 || sb.entry <= 0) continue;
      const UsageKey &key = tracking->entries[sb.entry].key;
      if (!KeyMatches(pol, key) || IsExemptRole(key.role)) continue;
      if (!pol.owner_superuser) {
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

bool ApplicationPatternIsAscii(const char *s) {
  for (; *s; s++)
    if (static_cast<unsigned char>(*s) < 0x20 || static_cast<unsigned char>(*s) > 0x7E)
      return false;
  return true;
}

}  // namespace warden

using namespace warden;

/* warden.validate_idle_policy(<add_idle_policy's arguments>): raises on bad input. */
WARDEN_FUNCTION(validate_idle_policy) {
  IdlePolicy p;
  ValidatePolicyArgs(fcinfo, &p);
  PG_RETURN_VOID();
}

/* Statement trigger on configuration tables: tell the loader at commit. */
WARDEN_FUNCTION(config_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("warden.config_changed() must be called as a trigger")));
  TriggerData *trigdata = reinterpret_cast<TriggerData *>(fcinfo->context);
  CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
  return PointerGetDatum(nullptr);
}

/*
 * terminate_idle(older_than, application, role, database, state, keep_min,
 * dry_run): the same rules as a policy, once, in the calling backend.
 */
WARDEN_FUNCTION(terminate_idle) {
  RequireTracking();
  const bool caller_super = superuser();
  if (!caller_super && !has_privs_of_role(GetUserId(), ROLE_PG_SIGNAL_BACKEND))
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied to terminate idle sessions"),
                    errdetail("Only superusers and members of pg_signal_backend may call "
                              "warden.terminate_idle().")));
  const int64 timeout_us = ValidateTimeout("older_than", PG_ARGISNULL(0), PG_GETARG_DATUM(0));
  char application[kMaxPatternBytes + 1], role[NAMEDATALEN], database[NAMEDATALEN];
  const bool has_app = ValidateText("application", PG_ARGISNULL(1), PG_GETARG_DATUM(1), application,
                                    sizeof(application));
  ValidateApplicationPattern("application", application);
  const bool has_role =
      ValidateText("role", PG_ARGISNULL(2), PG_GETARG_DATUM(2), role, NAMEDATALEN);
  const bool has_db =
      ValidateText("database", PG_ARGISNULL(3), PG_GETARG_DATUM(3), database, NAMEDATALEN);
  const uint8 states = ValidateState(PG_ARGISNULL(4), PG_GETARG_DATUM(4));
  const int32 keep_min = ValidateKeepMin(PG_ARGISNULL(5), PG_GETARG_DATUM(5));
  const bool dry_run = ValidateBool("dry_run", PG_ARGISNULL(6), PG_GETARG_DATUM(6)) || !guc_enforce;

  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  const Oid role_oid = has_role ? get_role_oid(role, true) : InvalidOid;
  const Oid db_oid = has_db ? get_database_oid(database, true) : InvalidOid;
  if ((has_role && !OidIsValid(role_oid)) || (has_db && !OidIsValid(db_oid))) return (Datum)0;

  pgstat_clear_backend_activity_snapshot();
  const TimestampTz now = GetCurrentTimestamp();
  const int n = pgstat_fetch_stat_numbackends();
  Candidate *c = static_cast<Candidate *>(palloc(sizeof(Candidate) * Max(n, 1)));
  PgBackendStatus *bes =
      static_cast<PgBackendStatus *>(palloc(sizeof(PgBackendStatus) * Max(n, 1)));
  int nc = 0;
  for (int i = 1; i <= n; i++) {
    LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
    if (local == nullptr) continue;
    const PgBackendStatus *be = &local->backendStatus;
    if (be->st_backendType != B_BACKEND || be->st_procpid <= 0 || be->st_procpid == MyProcPid)
      continue;
    if ((states & Bit(SessionStateOf(be->st_state))) == 0) continue;
    if (has_db && be->st_databaseid != db_oid) continue;
    if (has_role && be->st_userid != role_oid) continue;
    const char *app = be->st_appname ? be->st_appname : "";
    if (has_app && !LikeMatch(app, application)) continue;
    if (!caller_super && superuser_arg(be->st_userid)) continue;
    const char *role_name = GetUserNameFromId(be->st_userid, true);
    if (role_name && IsExemptRole(role_name)) continue;
    GroupKey gk;
    memset(&gk, 0, sizeof(gk));
    gk.database = be->st_databaseid;
    gk.role = be->st_userid;
    strlcpy(gk.application, app, NAMEDATALEN);
    bes[nc] = *be;
    c[nc] = Candidate{nc,
                      static_cast<int64>(hash_bytes_extended(
                          reinterpret_cast<const unsigned char *>(&gk), sizeof(gk), 0)),
                      be->st_state_start_timestamp};
    nc++;
  }
  int64_t unused = 0;
  const int nv = SelectIdleVictims(c, nc, keep_min, timeout_us, now, &unused);
  for (int v = 0; v < nv; v++) {
    const PgBackendStatus &be = bes[c[v].index];
    TerminationRecord rec;
    memset(&rec, 0, sizeof(rec));
    rec.at = GetCurrentTimestamp();
    if (!dry_run && !SignalTerminate(be.st_procpid, be.st_userid)) continue;
    rec.pid = be.st_procpid;
    const char *dbname = get_database_name(be.st_databaseid);
    const char *rolename = GetUserNameFromId(be.st_userid, true);
    strlcpy(rec.database, dbname ? dbname : "", NAMEDATALEN);
    strlcpy(rec.role, rolename ? rolename : "", NAMEDATALEN);
    strlcpy(rec.application, be.st_appname ? be.st_appname : "", NAMEDATALEN);
    FormatClientAddr(be.st_clientaddr, rec.client_addr, sizeof(rec.client_addr));
    strlcpy(rec.state, SessionStateName(SessionStateOf(be.st_state)), sizeof(rec.state));
    rec.idle_seconds = static_cast<double>(rec.at - be.st_state_start_timestamp) / USECS_PER_SEC;
    rec.source = TerminationSource::kManual;
    rec.dry_run = dry_run;
    RecordTermination(rec);
    if (!dry_run) CountTerminated(EntryOfPid(rec.pid));
    LogDecision(rec);
    PutTerminationRow(rsinfo, rec);
  }
  pgstat_clear_backend_activity_snapshot();
  return (Datum)0;
}

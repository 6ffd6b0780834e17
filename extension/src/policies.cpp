/*
 * policies.cpp — idle-termination policies (see policies.hpp): their rows
 * and validation (warden.validate_idle_policy, shared by add_idle_policy,
 * the table's row trigger and terminate_idle), loading warden.idle_policies
 * into shared memory (the loader), and the SQL function
 * warden.terminate_idle(). The sampler's enforcement is in enforcer.cpp.
 *
 * Selection rules (policies and terminate_idle): client backends only, never
 * the caller, never roles in warden.exempt_roles, never a superuser's
 * session unless the policy's owner (or terminate_idle's caller) is a
 * superuser, and never Patroni's own session (a superuser's session named
 * "Patroni"). The remaining matching sessions are grouped by (database,
 * role, application_name); in each group the keep_min most recently idle
 * are kept, and the others idle for at least the timeout are terminated,
 * oldest idle first.
 *
 * Locks: idle_policies_lock (see policies.hpp); terminations_lock through
 * TerminateAndRecord; ProcArrayLock through BackendPidGetProc.
 */
#include "pg_warden/cron.hpp"
#include "pg_warden/idle_select.hpp"
#include "pg_warden/match.hpp"

#include "pg_warden/policies.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/terminations.hpp"
#include "pg_warden/validate.hpp"

namespace warden {
namespace {

constexpr int64 kMinIdleTimeoutUs = 10 * 1000;

struct IdlePoliciesShared {
  LWLock *lock;
  int32 count;
  IdlePolicy policies[kMaxIdlePolicies];
};

IdlePoliciesShared *idle_policies = nullptr;

constexpr uint8 kAnyIdle = StateBit(SessionState::kIdle) |
                           StateBit(SessionState::kIdleInTransaction) |
                           StateBit(SessionState::kIdleInTransactionAborted);

/* -- validation (PostgreSQL regime: ereports directly) ------------------------ */

uint8 ParseState(const char *s) {
  if (strcmp(s, "idle") == 0) return StateBit(SessionState::kIdle);
  if (strcmp(s, "idle in transaction") == 0) return StateBit(SessionState::kIdleInTransaction);
  if (strcmp(s, "idle in transaction (aborted)") == 0)
    return StateBit(SessionState::kIdleInTransactionAborted);
  if (strcmp(s, "any idle") == 0) return kAnyIdle;
  return 0;
}

uint8 ValidateState(FunctionCallInfo fcinfo, int argno) {
  RequireArgument(fcinfo, argno, "state");
  char *s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
  const uint8 bits = ParseState(s);
  if (bits == 0)
    InvalidArgument("state", psprintf("\"%s\"", s), nullptr,
                    "Use 'idle', 'idle in transaction', 'idle in transaction (aborted)' "
                    "or 'any idle'.");
  return bits;
}

bool BoolArgument(FunctionCallInfo fcinfo, int argno, const char *arg) {
  RequireArgument(fcinfo, argno, arg);
  return PG_GETARG_BOOL(argno);
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

/*
 * Can the schedule ever match? Only a day of month can rule out every date
 * (31 in a 30-day month, 30 February): with the day of week also restricted,
 * cron matches either, and every week has every weekday.
 */
bool ScheduleCanMatch(const CronSchedule &s) {
  if (!s.dom_restricted || s.dow_restricted) return true;
  static const int kDaysInMonth[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  for (int month = 1; month <= 12; month++) {
    if ((s.months & (1u << month)) == 0) continue;
    for (int day = 1; day <= kDaysInMonth[month]; day++)
      if (s.days_of_month & (1u << day)) return true;
  }
  return false;
}

bool ValidateSchedule(FunctionCallInfo fcinfo, int argno, CronSchedule *out) {
  if (PG_ARGISNULL(argno)) return false;
  char *s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
  char err[256];
  if (!TryParseCron(s, out, err, sizeof(err)))
    InvalidArgument("schedule", err, psprintf("The schedule was \"%s\".", s),
                    "A schedule has 5 fields: minute hour day-of-month month "
                    "day-of-week, e.g. '* 0-5 * * *'.");
  if (!ScheduleCanMatch(*out))
    InvalidArgument("schedule", "never matches: no month named has those days",
                    psprintf("The schedule was \"%s\".", s),
                    "A policy with this schedule would never apply.");
  return true;
}

/*
 * Every argument of add_idle_policy, in order: (name, idle_timeout,
 * application, role, database, state, keep_min, schedule, dry_run).
 */
void ValidatePolicyArgs(FunctionCallInfo fcinfo, IdlePolicy *p) {
  memset(p, 0, sizeof(*p));
  RequireArgument(fcinfo, 0, "name");
  TextArgument(fcinfo, 0, "name", p->name, NAMEDATALEN);
  if (p->name[0] == '\0') InvalidArgument("name", "must not be empty");
  p->idle_timeout_us = PositiveIntervalArgument(fcinfo, 1, "idle_timeout");
  /* The worker samples every warden.sample_interval (at least 10 ms) and
     wakes at a candidate's deadline to the millisecond: below its reach a
     timeout would be a promise it cannot keep. */
  if (p->idle_timeout_us < kMinIdleTimeoutUs)
    InvalidArgument("idle_timeout", "must be at least 10 milliseconds", nullptr,
                    "The worker cannot see a session idle for less: it samples every "
                    "warden.sample_interval (10 ms at least).");
  p->any_application =
      !TextArgument(fcinfo, 2, "application", p->application, sizeof(p->application));
  CheckApplicationPattern("application", p->application);
  p->any_role = !TextArgument(fcinfo, 3, "role", p->role, NAMEDATALEN);
  p->any_database = !TextArgument(fcinfo, 4, "database", p->database, NAMEDATALEN);
  CheckRoleExists(p->any_role ? nullptr : p->role);
  CheckDatabaseExists(p->any_database ? nullptr : p->database);
  p->states = ValidateState(fcinfo, 5);
  p->keep_min = NonNegativeArgument(fcinfo, 6, "keep_min");
  p->scheduled = ValidateSchedule(fcinfo, 7, &p->schedule);
  p->dry_run = BoolArgument(fcinfo, 8, "dry_run");
}

struct GroupKey {
  Oid database;
  Oid role;
  char application[NAMEDATALEN];
};

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

int CopyIdlePolicies(IdlePolicy *out) {
  LWLockAcquire(idle_policies->lock, LW_SHARED);
  const int count = idle_policies->count;
  memcpy(out, idle_policies->policies, sizeof(IdlePolicy) * count);
  LWLockRelease(idle_policies->lock);
  return count;
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
      "       coalesce(r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'pg_signal_backend', 'USAGE'),"
      "                false), p.owner"
      "  FROM warden.idle_policies p"
      "  LEFT JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) p.owner"
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
                               "not a superuser and lacks the privileges of pg_signal_backend",
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

}  // namespace warden

using namespace warden;

/* warden.validate_idle_policy(<add_idle_policy's arguments>): raises on bad input. */
WARDEN_FUNCTION(validate_idle_policy) {
  IdlePolicy p;
  ValidatePolicyArgs(fcinfo, &p);
  PG_RETURN_VOID();
}

/*
 * terminate_idle(older_than, application, role, database, state, keep_min,
 * dry_run): the same rules as a policy, once, in the calling backend.
 */
WARDEN_FUNCTION(terminate_idle) {
  RequirePreloaded();
  const bool caller_super = superuser();
  if (!caller_super && !has_privs_of_role(GetUserId(), ROLE_PG_SIGNAL_BACKEND))
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied to terminate idle sessions"),
                    errdetail("Only superusers and members of pg_signal_backend may call "
                              "warden.terminate_idle().")));
  const int64 timeout_us = PositiveIntervalArgument(fcinfo, 0, "older_than");
  char application[kMaxPatternBytes + 1], role[NAMEDATALEN], database[NAMEDATALEN];
  const bool has_app = TextArgument(fcinfo, 1, "application", application, sizeof(application));
  CheckApplicationPattern("application", application);
  const bool has_role = TextArgument(fcinfo, 2, "role", role, NAMEDATALEN);
  const bool has_db = TextArgument(fcinfo, 3, "database", database, NAMEDATALEN);
  const uint8 states = ValidateState(fcinfo, 4);
  const int32 keep_min = NonNegativeArgument(fcinfo, 5, "keep_min");
  const bool dry_run = BoolArgument(fcinfo, 6, "dry_run") || !guc_enforce;
  /* one rule for every function: an unknown role or database is an error, not "nobody" */
  if (has_role) CheckRoleExists(role);
  if (has_db) CheckDatabaseExists(database);

  if (!guc_enforce && !PG_GETARG_BOOL(6))
    ereport(NOTICE, (errmsg("warden.enforce is off: no session is terminated"),
                     errdetail("The rows returned are dry runs (dry_run = true): the sessions "
                               "that would have been terminated."),
                     errhint("Set warden.enforce = on to terminate.")));
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  const Oid role_oid = has_role ? get_role_oid(role, true) : InvalidOid;
  const Oid db_oid = has_db ? get_database_oid(database, true) : InvalidOid;
  if ((has_role && !OidIsValid(role_oid)) || (has_db && !OidIsValid(db_oid))) return (Datum)0;

  pgstat_clear_backend_activity_snapshot();
  const TimestampTz now = GetCurrentTimestamp();
  const int n = pgstat_fetch_stat_numbackends();
  IdleCandidate *c = static_cast<IdleCandidate *>(palloc(sizeof(IdleCandidate) * Max(n, 1)));
  PgBackendStatus *bes =
      static_cast<PgBackendStatus *>(palloc(sizeof(PgBackendStatus) * Max(n, 1)));
  int nc = 0;
  for (int i = 1; i <= n; i++) {
    LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
    if (local == nullptr) continue;
    const PgBackendStatus *be = &local->backendStatus;
    if (be->st_backendType != B_BACKEND || be->st_procpid <= 0 || be->st_procpid == MyProcPid)
      continue;
    if ((states & StateBit(SessionStateOf(be->st_state))) == 0) continue;
    if (has_db && be->st_databaseid != db_oid) continue;
    if (has_role && be->st_userid != role_oid) continue;
    const char *app = be->st_appname ? be->st_appname : "";
    if (!KeyMatches(KeyFilter{nullptr, nullptr, has_app ? application : nullptr}, "", "", app))
      continue;
    /* a superuser's session: only for a superuser, and never Patroni's own */
    if ((!caller_super || IsPatroniApplication(app)) && superuser_arg(be->st_userid)) continue;
    const char *role_name = GetUserNameFromId(be->st_userid, true);
    if (role_name && IsExemptRole(role_name)) continue;
    GroupKey gk;
    memset(&gk, 0, sizeof(gk));
    gk.database = be->st_databaseid;
    gk.role = be->st_userid;
    strlcpy(gk.application, app, NAMEDATALEN);
    bes[nc] = *be;
    c[nc] = IdleCandidate{nc,
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
    rec.pid = be.st_procpid;
    const char *dbname = get_database_name(be.st_databaseid);
    const char *rolename = GetUserNameFromId(be.st_userid, true);
    strlcpy(rec.database, dbname ? dbname : "", NAMEDATALEN);
    strlcpy(rec.role, rolename ? rolename : "", NAMEDATALEN);
    strlcpy(rec.application, be.st_appname ? be.st_appname : "", NAMEDATALEN);
    FormatClientAddr(be.st_clientaddr, rec.client_addr, sizeof(rec.client_addr));
    strlcpy(rec.state, SessionStateName(SessionStateOf(be.st_state)), sizeof(rec.state));
    rec.source = TerminationSource::kManual;
    rec.dry_run = dry_run;
    if (!TerminateAndRecord(&rec, be.st_userid, be.st_state_start_timestamp, EntryOfPid(rec.pid)))
      continue;
    PutTerminationRow(rsinfo, rec);
  }
  pgstat_clear_backend_activity_snapshot();
  return (Datum)0;
}

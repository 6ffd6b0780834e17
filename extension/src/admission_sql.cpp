/*
 * admission_sql.cpp — the SQL functions of admission: admission overrides
 * (close_admission, open_admission, admission_overrides), budget_usage, and
 * validate_budget, the validation of warden.budgets rows. Runs in client
 * backends; ClearAdmissionOverrides also in the loader (DROP EXTENSION).
 * Overrides are transactional: the calls queue their change in backend
 * memory and a commit callback applies the queue. Locks: admission_lock
 * (exclusive to apply changes, shared to copy the rules out; never held
 * while building tuples or ereporting).
 */
#include "pg_warden/admission.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/loader.hpp"
#include "pg_warden/usage.hpp"
#include "pg_warden/validate.hpp"

namespace warden {
namespace {

/*
 * Index in rules (admission->rules or a copy of it) of the override for
 * (role, application), or -1. The caller holds the lock for the shared one.
 */
int FindOverride(const AdmissionRule *rules, const char *role, const char *application) {
  for (int r = kMaxBudgets; r < kMaxRules; r++) {
    const AdmissionRule &rule = rules[r];
    if (!rule.in_use) continue;
    if (rule.has_role != (role != nullptr) || rule.has_application != (application != nullptr))
      continue;
    if (role && strcmp(rule.role, role) != 0) continue;
    if (application && strcmp(rule.application, application) != 0) continue;
    return r;
  }
  return -1;
}

/*
 * The role and application of close_admission/open_admission (arguments 0
 * and 1): at least one given, each a name that fits, the application a
 * printable pattern. nullptr = any.
 */
void OverrideKey(FunctionCallInfo fcinfo, char *role, char *application, const char **role_out,
                 const char **application_out) {
  *role_out = TextArgument(fcinfo, 0, "role", role, NAMEDATALEN) ? role : nullptr;
  *application_out =
      TextArgument(fcinfo, 1, "application", application, NAMEDATALEN) ? application : nullptr;
  if (*role_out == nullptr && *application_out == nullptr)
    InvalidArgument("role", "must not be NULL when application is NULL", nullptr,
                    "An admission override applies to a role, an application pattern, or both.");
  CheckApplicationPattern("application", application);
}

void RequireAdmission() { RequirePreloaded(); }

void OverrideValues(const AdmissionRule &r, int64 connections, Datum *values, bool *nulls) {
  values[0] = NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(r.role)));
  nulls[0] = !r.has_role;
  values[1] = CStringGetTextDatum(r.application);
  nulls[1] = !r.has_application;
  values[2] = Int32GetDatum(r.max_connections);
  nulls[2] = false;
  values[3] = CStringGetTextDatum(r.reason);
  nulls[3] = (r.reason[0] == '\0');
  values[4] = TimestampTzGetDatum(r.since);
  nulls[4] = false;
  values[5] = TimestampTzGetDatum(r.expires);
  nulls[5] = (r.expires == 0);
  values[6] = Int32GetDatum(static_cast<int32>(connections));
  nulls[6] = false;
}

/*
 * Overrides are transactional: close_admission() and open_admission() queue
 * their change in this backend's memory, and the change is applied to shared
 * memory when the transaction commits (a ROLLBACK, or a ROLLBACK TO a
 * savepoint taken before the call, leaves nothing). The queue is bounded.
 */
struct PendingChange {
  bool close;         /* close_admission (rule is the override) or open_admission */
  AdmissionRule rule; /* for open_admission only role and application count */
  SubTransactionId subid;
};

constexpr int kMaxPendingChanges = 2 * kMaxOverrides;
PendingChange *pending = nullptr; /* TopMemoryContext */
int npending = 0;
bool callbacks_registered = false;

const char *RoleOf(const AdmissionRule &r) { return r.has_role ? r.role : nullptr; }
const char *ApplicationOf(const AdmissionRule &r) {
  return r.has_application ? r.application : nullptr;
}

/*
 * Applies one change to rules (the shared ones under the exclusive lock, or a
 * copy). *existed: an override for the key was in force. False: no free slot.
 */
bool ApplyChange(AdmissionRule *rules, const PendingChange &c, TimestampTz now, bool *existed) {
  int slot = FindOverride(rules, RoleOf(c.rule), ApplicationOf(c.rule));
  if (existed) *existed = slot >= 0 && RuleActive(rules[slot], now);
  if (!c.close) {
    if (slot >= 0) rules[slot].in_use = false;
    return true;
  }
  for (int r = kMaxBudgets; r < kMaxRules && slot < 0; r++)
    if (!RuleActive(rules[r], now)) slot = r;
  if (slot < 0) return false;
  rules[slot] = c.rule;
  return true;
}

/* A copy of the rules as they will be once the queued changes apply. */
AdmissionRule *RulesAfterPending(TimestampTz now) {
  AdmissionRule *copy = static_cast<AdmissionRule *>(palloc(sizeof(AdmissionRule) * kMaxRules));
  LWLockAcquire(admission->lock, LW_SHARED);
  memcpy(copy, admission->rules, sizeof(AdmissionRule) * kMaxRules);
  LWLockRelease(admission->lock);
  for (int i = 0; i < npending; i++) (void)ApplyChange(copy, pending[i], now, nullptr);
  return copy;
}

void LogChange(const PendingChange &c) {
  const char *role = RoleOf(c.rule), *application = ApplicationOf(c.rule);
  if (c.close)
    ereport(LOG, (errmsg("pg_warden: admission closed for role \"%s\" application \"%s\" at %d "
                         "connections (reason: %s)",
                         role ? role : "*", application ? application : "*", c.rule.max_connections,
                         c.rule.reason[0] ? c.rule.reason : "none given")));
  else
    ereport(LOG, (errmsg("pg_warden: admission reopened for role \"%s\" application \"%s\"",
                         role ? role : "*", application ? application : "*")));
}

void OnXactEvent(XactEvent event, void *) {
  if (npending == 0) return;
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("cannot PREPARE a transaction that changed admission overrides"),
                      errdetail("Admission overrides live in this server's shared memory only.")));
      break;
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT: {
      const TimestampTz now = GetCurrentTimestamp();
      bool applied[kMaxPendingChanges];
      LWLockAcquire(admission->lock, LW_EXCLUSIVE);
      for (int i = 0; i < npending; i++)
        applied[i] = ApplyChange(admission->rules, pending[i], now, nullptr);
      RecountActive();
      LWLockRelease(admission->lock);
      const int n = npending;
      npending = 0;
      /* After the lock: a LOG or WARNING here can no longer abort anything. */
      for (int i = 0; i < n; i++) {
        if (applied[i])
          LogChange(pending[i]);
        else
          ereport(WARNING,
                  (errmsg("pg_warden: admission override for role \"%s\" application \"%s\" "
                          "not applied: too many admission overrides",
                          RoleOf(pending[i].rule) ? RoleOf(pending[i].rule) : "*",
                          ApplicationOf(pending[i].rule) ? ApplicationOf(pending[i].rule) : "*")));
      }
      break;
    }
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE:
      npending = 0;
      break;
    default:
      break;
  }
}

void OnSubXactEvent(SubXactEvent event, SubTransactionId sub, SubTransactionId parent, void *) {
  if (event == SUBXACT_EVENT_ABORT_SUB) {
    int kept = 0;
    for (int i = 0; i < npending; i++)
      if (pending[i].subid != sub) pending[kept++] = pending[i];
    npending = kept;
  } else if (event == SUBXACT_EVENT_COMMIT_SUB) {
    for (int i = 0; i < npending; i++)
      if (pending[i].subid == sub) pending[i].subid = parent;
  }
}

void QueueChange(const PendingChange &c) {
  if (!callbacks_registered) {
    pending = static_cast<PendingChange *>(
        MemoryContextAlloc(TopMemoryContext, sizeof(PendingChange) * kMaxPendingChanges));
    RegisterXactCallback(OnXactEvent, nullptr);
    RegisterSubXactCallback(OnSubXactEvent, nullptr);
    callbacks_registered = true;
  }
  if (npending == kMaxPendingChanges)
    ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                    errmsg("too many admission override changes in one transaction"),
                    errdetail("At most %d close_admission()/open_admission() calls apply at one "
                              "commit.",
                              kMaxPendingChanges),
                    errhint("Commit, then continue.")));
  pending[npending] = c;
  pending[npending].subid = GetCurrentSubTransactionId();
  npending++;
}

}  // namespace

void ClearAdmissionOverrides() {
  const TimestampTz now = GetCurrentTimestamp();
  int cleared = 0;
  LWLockAcquire(admission->lock, LW_EXCLUSIVE);
  for (int r = kMaxBudgets; r < kMaxRules; r++) {
    if (RuleActive(admission->rules[r], now)) cleared++;
    admission->rules[r].in_use = false;
  }
  RecountActive();
  LWLockRelease(admission->lock);
  if (cleared > 0)
    ereport(LOG,
            (errmsg("pg_warden: %d admission override(s) lifted: the extension is gone", cleared)));
}

}  // namespace warden

using namespace warden;

/* warden.close_admission(role, application, max_connections, reason, expires) */
WARDEN_FUNCTION(close_admission) {
  RequireAdmission();
  char role_buf[NAMEDATALEN], application_buf[NAMEDATALEN], reason_buf[kMaxReason];
  const char *role, *application;
  OverrideKey(fcinfo, role_buf, application_buf, &role, &application);
  if (role != nullptr) {
    CheckRoleExists(role);
    if (superuser_arg(get_role_oid(role, false)))
      InvalidArgument("role", psprintf("\"%s\" is a superuser", role),
                      "pg_warden never refuses a superuser's login: the override would do nothing.",
                      "Superusers are kept out with ALTER ROLE ... NOLOGIN or pg_hba.conf.");
    if (IsExemptRole(role)) {
      const bool rewind = guc_exempt_rewind_roles && IsRewindRole(role);
      InvalidArgument("role",
                      rewind
                          ? psprintf("\"%s\" may run pg_rewind (warden.exempt_rewind_roles)", role)
                          : psprintf("\"%s\" is in warden.exempt_roles", role),
                      "pg_warden never refuses an exempt role's login: the override would do "
                      "nothing.",
                      rewind ? "Set warden.exempt_rewind_roles = off to cap it too."
                             : "Remove the role from warden.exempt_roles first.");
    }
  }
  if (!PG_ARGISNULL(2) && PG_GETARG_INT32(2) < 0)
    InvalidArgument("max_connections", "must not be negative");
  const char *reason =
      TextArgument(fcinfo, 3, "reason", reason_buf, sizeof(reason_buf)) ? reason_buf : nullptr;
  const TimestampTz now = GetCurrentTimestamp();
  TimestampTz expires = 0;
  if (!PG_ARGISNULL(4)) {
    Interval *iv = PG_GETARG_INTERVAL_P(4);
    expires = DatumGetTimestampTz(DirectFunctionCall2(
        timestamptz_pl_interval, TimestampTzGetDatum(now), IntervalPGetDatum(iv)));
    if (expires <= now)
      InvalidArgument("expires", "must be a positive interval", nullptr,
                      "Use NULL for an override that lasts until warden.open_admission().");
  }
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("return type must be a row type")));
  desc = BlessTupleDesc(desc);

  PendingChange change;
  memset(&change, 0, sizeof(change));
  change.close = true;
  AdmissionRule &rule = change.rule;
  rule.in_use = true;
  rule.kind = RuleKind::kOverride;
  strlcpy(rule.name, "override", NAMEDATALEN);
  CopyName(rule.role, role, &rule.has_role);
  CopyName(rule.application, application, &rule.has_application);
  if (reason) strlcpy(rule.reason, reason, kMaxReason);
  rule.since = now;
  rule.expires = expires;
  rule.reserved = 0;
  const int64 holding = SessionsMatching(rule);
  rule.max_connections = PG_ARGISNULL(2) ? static_cast<int32>(holding) : PG_GETARG_INT32(2);

  /* Refused now, not at commit, when the overrides would not fit. */
  AdmissionRule *after = RulesAfterPending(now);
  if (!ApplyChange(after, change, now, nullptr))
    ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED), errmsg("too many admission overrides"),
                    errdetail("At most %d overrides can be in force at once.", kMaxOverrides),
                    errhint("Lift one with warden.open_admission().")));
  pfree(after);
  QueueChange(change);
  Datum values[7];
  bool nulls[7];
  OverrideValues(rule, holding, values, nulls);
  return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/*
 * warden.open_admission(role, application) -> true if an override was in
 * force (counting this transaction's own changes); lifted at commit.
 */
WARDEN_FUNCTION(open_admission) {
  RequireAdmission();
  char role_buf[NAMEDATALEN], application_buf[NAMEDATALEN];
  const char *role, *application;
  OverrideKey(fcinfo, role_buf, application_buf, &role, &application);
  PendingChange change;
  memset(&change, 0, sizeof(change));
  change.close = false;
  CopyName(change.rule.role, role, &change.rule.has_role);
  CopyName(change.rule.application, application, &change.rule.has_application);
  const TimestampTz now = GetCurrentTimestamp();
  AdmissionRule *after = RulesAfterPending(now);
  bool existed = false;
  (void)ApplyChange(after, change, now, &existed);
  pfree(after);
  if (existed) QueueChange(change);
  PG_RETURN_BOOL(existed);
}

/* warden.admission_overrides(): the overrides in force on this server */
WARDEN_FUNCTION(admission_overrides) {
  RequireAdmission();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  AdmissionRule *rules =
      static_cast<AdmissionRule *>(palloc(sizeof(AdmissionRule) * kMaxOverrides));
  const TimestampTz now = GetCurrentTimestamp();
  int n = 0;
  LWLockAcquire(admission->lock, LW_SHARED);
  for (int r = kMaxBudgets; r < kMaxRules; r++)
    if (RuleActive(admission->rules[r], now)) rules[n++] = admission->rules[r];
  LWLockRelease(admission->lock);
  for (int i = 0; i < n; i++) {
    Datum values[7];
    bool nulls[7];
    OverrideValues(rules[i], SessionsMatching(rules[i]), values, nulls);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return (Datum)0;
}

/* warden.budget_usage(): every budget in force here with the connections it counts */
WARDEN_FUNCTION(budget_usage) {
  RequireAdmission();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  AdmissionRule *rules = static_cast<AdmissionRule *>(palloc(sizeof(AdmissionRule) * kMaxBudgets));
  int n = 0;
  LWLockAcquire(admission->lock, LW_SHARED);
  for (int r = 0; r < kMaxBudgets; r++)
    if (admission->rules[r].in_use) rules[n++] = admission->rules[r];
  LWLockRelease(admission->lock);
  for (int i = 0; i < n; i++) {
    const AdmissionRule &r = rules[i];
    Datum values[7];
    bool nulls[7] = {false};
    values[0] = CStringGetTextDatum(r.name);
    values[1] = Int32GetDatum(r.max_connections);
    nulls[1] = r.max_connections < 0;
    values[2] = CStringGetTextDatum(r.application);
    nulls[2] = !r.has_application;
    values[3] = CStringGetTextDatum(r.role);
    nulls[3] = !r.has_role;
    values[4] = CStringGetTextDatum(r.database);
    nulls[4] = !r.has_database;
    values[5] = Int32GetDatum(r.reserved);
    values[6] = Int32GetDatum(static_cast<int32>(SessionsMatching(r)));
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return (Datum)0;
}

/*
 * warden.validate_budget(name, max_connections, application, role, database,
 * reserved): raises on a row warden.budgets must not hold (the table's row
 * trigger calls it, so set_budget and plain INSERT/UPDATE are checked alike).
 */
WARDEN_FUNCTION(validate_budget) {
  char name[NAMEDATALEN], application[NAMEDATALEN], role[NAMEDATALEN], database[NAMEDATALEN];
  RequireArgument(fcinfo, 0, "name");
  TextArgument(fcinfo, 0, "name", name, sizeof(name));
  bool blank = true;
  for (const char *c = name; *c && blank; c++) blank = (*c == ' ');
  if (blank) InvalidArgument("name", "must not be empty");
  const bool has_max = !PG_ARGISNULL(1);
  const int32 max_connections = has_max ? PG_GETARG_INT32(1) : -1;
  if (has_max && max_connections < 0) InvalidArgument("max_connections", "must not be negative");
  const int32 reserved = NonNegativeArgument(fcinfo, 5, "reserved");
  const int usable = MaxConnections - ReservedBackends;
  if (reserved >= usable)
    InvalidArgument("reserved", "must be smaller than the server's usable connections",
                    psprintf("reserved is %d, max_connections - superuser_reserved_connections "
                             "is %d.",
                             reserved, usable));
  if (!has_max && reserved == 0)
    InvalidArgument("max_connections", "must not be NULL when reserved is 0", nullptr,
                    "A budget caps connections (max_connections), reserves them (reserved), "
                    "or both.");
  if (has_max && reserved > max_connections)
    InvalidArgument("reserved", "must not exceed max_connections");
  const bool has_application =
      TextArgument(fcinfo, 2, "application", application, sizeof(application));
  CheckApplicationPattern("application", application);
  const bool has_role = TextArgument(fcinfo, 3, "role", role, sizeof(role));
  const bool has_database = TextArgument(fcinfo, 4, "database", database, sizeof(database));
  if (!has_application && !has_role && !has_database) {
    if (has_max && max_connections == 0)
      InvalidArgument("max_connections",
                      "must not be 0 when application, role and database are NULL",
                      "Such a budget matches every login: it would refuse every non-superuser "
                      "connection to this server.",
                      "Name the application, role or database to lock out.");
    if (reserved > 0)
      InvalidArgument("reserved", "must be 0 when application, role and database are NULL",
                      "Slots reserved for every login are reserved for nobody: it would have "
                      "no effect.",
                      "Name the application, role or database the slots are kept for.");
  }
  CheckRoleExists(has_role ? role : nullptr);
  CheckDatabaseExists(has_database ? database : nullptr);
  PG_RETURN_VOID();
}

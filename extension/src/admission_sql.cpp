/*
 * admission_sql.cpp — the SQL functions of admission: admission overrides
 * (close_admission, open_admission, admission_overrides), budget_usage, and
 * validate_budget, the validation of warden.budgets rows. Runs in client
 * backends. Locks: admission_lock (exclusive to change an override, shared
 * to copy the rules out; never held while building tuples or ereporting).
 */
#include "pg_warden/admission.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/usage.hpp"
#include "pg_warden/validate.hpp"

namespace warden {
namespace {

/* Index of the override for (role, application), or -1. Caller holds the lock. */
int FindOverride(const char *role, const char *application) {
  for (int r = kMaxBudgets; r < kMaxRules; r++) {
    const AdmissionRule &rule = admission->rules[r];
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

int64 MatchingConnections(const AdmissionRule &rule) {
  const uint32 used = pg_atomic_read_u32(&usage->used);
  int64 n = 0;
  for (uint32 e = 0; e < used; e++) {
    const UsageEntry &entry = usage->entries[e];
    if (RuleMatches(rule, entry.key.database, entry.key.role, entry.key.application))
      n += pg_atomic_read_u32(const_cast<pg_atomic_uint32 *>(&entry.connections));
  }
  return n;
}

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

}  // namespace
}  // namespace warden

using namespace warden;

/* warden.close_admission(role, application, max_connections, reason, expires) */
WARDEN_FUNCTION(close_admission) {
  RequireAdmission();
  char role_buf[NAMEDATALEN], application_buf[NAMEDATALEN], reason_buf[kMaxReason];
  const char *role, *application;
  OverrideKey(fcinfo, role_buf, application_buf, &role, &application);
  if (role != nullptr && !OidIsValid(get_role_oid(role, true)))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("role \"%s\" does not exist", role)));
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

  AdmissionRule rule;
  memset(&rule, 0, sizeof(rule));
  rule.in_use = true;
  rule.kind = RuleKind::kOverride;
  strlcpy(rule.name, "override", NAMEDATALEN);
  CopyName(rule.role, role, &rule.has_role);
  CopyName(rule.application, application, &rule.has_application);
  if (reason) strlcpy(rule.reason, reason, kMaxReason);
  rule.since = now;
  rule.expires = expires;
  rule.reserved = 0;
  const int64 holding = MatchingConnections(rule);
  rule.max_connections = PG_ARGISNULL(2) ? static_cast<int32>(holding) : PG_GETARG_INT32(2);

  LWLockAcquire(admission->lock, LW_EXCLUSIVE);
  int slot = FindOverride(role, application);
  if (slot < 0) {
    for (int r = kMaxBudgets; r < kMaxRules && slot < 0; r++)
      if (!RuleActive(admission->rules[r], now)) slot = r;
  }
  if (slot >= 0) {
    admission->rules[slot] = rule;
    RecountActive();
  }
  LWLockRelease(admission->lock);
  if (slot < 0)
    ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED), errmsg("too many admission overrides"),
                    errdetail("At most %d overrides can be in force at once.", kMaxOverrides),
                    errhint("Lift one with warden.open_admission().")));
  ereport(LOG, (errmsg("pg_warden: admission closed for role \"%s\" application \"%s\" at %d "
                       "connections (reason: %s)",
                       role ? role : "*", application ? application : "*", rule.max_connections,
                       reason ? reason : "none given")));
  Datum values[7];
  bool nulls[7];
  OverrideValues(rule, holding, values, nulls);
  return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/* warden.open_admission(role, application) -> true if an override was lifted */
WARDEN_FUNCTION(open_admission) {
  RequireAdmission();
  char role_buf[NAMEDATALEN], application_buf[NAMEDATALEN];
  const char *role, *application;
  OverrideKey(fcinfo, role_buf, application_buf, &role, &application);
  LWLockAcquire(admission->lock, LW_EXCLUSIVE);
  const int slot = FindOverride(role, application);
  if (slot >= 0) {
    admission->rules[slot].in_use = false;
    RecountActive();
  }
  LWLockRelease(admission->lock);
  if (slot >= 0)
    ereport(LOG, (errmsg("pg_warden: admission reopened for role \"%s\" application \"%s\"",
                         role ? role : "*", application ? application : "*")));
  PG_RETURN_BOOL(slot >= 0);
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
    OverrideValues(rules[i], MatchingConnections(rules[i]), values, nulls);
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
    values[6] = Int32GetDatum(static_cast<int32>(MatchingConnections(r)));
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
  TextArgument(fcinfo, 2, "application", application, sizeof(application));
  CheckApplicationPattern("application", application);
  TextArgument(fcinfo, 3, "role", role, sizeof(role));
  TextArgument(fcinfo, 4, "database", database, sizeof(database));
  PG_RETURN_VOID();
}

/*
 * admission.cpp — budgets and admission overrides enforced at login.
 *
 * A login's key is matched against every rule (LIKE on application_name,
 * equality on role and database); each usage entry caches the bit mask of
 * the rules it matches, recomputed when the rules change (generation). At
 * login, under admission_lock (exclusive), the connections of the entries
 * matching each of the login's rules are summed, the decision is made and
 * the connection is counted in before the lock is released: no
 * check-then-act race. The FATAL is raised after the lock is released.
 */
#include "pg_warden/cron.hpp"

#include "pg_warden/admission.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/policies.hpp"
#include "pg_warden/tracking.hpp"

namespace warden {
namespace {

enum class RuleKind : uint8 { kBudget = 0, kOverride = 1 };

struct AdmissionRule {
  bool in_use;
  RuleKind kind;
  bool has_application, has_role, has_database;
  char name[NAMEDATALEN];
  char application[NAMEDATALEN];
  char role[NAMEDATALEN];
  char database[NAMEDATALEN];
  int32 max_connections; /* -1: no limit */
  int32 reserved;
  char reason[kMaxReason];
  TimestampTz since;
  TimestampTz expires; /* 0: never */
};

struct EntryMask {
  uint32 generation;
  uint64 bits[kMaskWords];
};

struct AdmissionShared {
  LWLock *lock;
  uint32 generation; /* bumped whenever rules change */
  int32 active_rules;
  bool budgets_loaded;
  AdmissionRule rules[kMaxRules]; /* budgets first, then overrides */
};

AdmissionShared *admission = nullptr;
EntryMask *masks = nullptr; /* one per usage entry */

bool RuleActive(const AdmissionRule &r, TimestampTz now) {
  return r.in_use && (r.expires == 0 || r.expires > now);
}

bool RuleMatches(const AdmissionRule &r, const char *database, const char *role,
                 const char *application) {
  if (r.has_database && strcmp(r.database, database) != 0) return false;
  if (r.has_role && strcmp(r.role, role) != 0) return false;
  if (r.has_application && !LikeMatch(application, r.application)) return false;
  return true;
}

void ComputeMask(uint64 *bits, const char *database, const char *role, const char *application) {
  for (int w = 0; w < kMaskWords; w++) bits[w] = 0;
  for (int r = 0; r < kMaxRules; r++) {
    const AdmissionRule &rule = admission->rules[r];
    if (rule.in_use && RuleMatches(rule, database, role, application))
      bits[r / 64] |= UINT64CONST(1) << (r % 64);
  }
}

/* Caller holds admission->lock exclusively. */
void RefreshMasks(uint32 used) {
  for (uint32 e = 0; e < used; e++) {
    EntryMask &m = masks[e];
    if (m.generation == admission->generation) continue;
    const UsageKey &k = tracking->entries[e].key;
    ComputeMask(m.bits, k.database, k.role, k.application);
    m.generation = admission->generation;
  }
}

void RecountActive() {
  int32 n = 0;
  for (int r = 0; r < kMaxRules; r++)
    if (admission->rules[r].in_use) n++;
  admission->active_rules = n;
  admission->generation++;
}

bool IsSuperuserName(const char *role) {
  HeapTuple tuple = SearchSysCache1(AUTHNAME, CStringGetDatum(role));
  if (!HeapTupleIsValid(tuple)) return false;
  const bool super = reinterpret_cast<Form_pg_authid>(GETSTRUCT(tuple))->rolsuper;
  ReleaseSysCache(tuple);
  return super;
}

/* What a refusal says; filled under the lock, raised after it. */
struct Refusal {
  bool refused;
  bool reserved;
  AdmissionRule rule;
  int32 in_use;
  int32 free_slots;
  int32 reserved_slots;
};

const char *Subject(const AdmissionRule &r, const char **what) {
  if (r.has_application || (!r.has_role && !r.has_database)) {
    *what = "application";
    return nullptr;
  }
  if (r.has_role) {
    *what = "role";
    return r.role;
  }
  *what = "database";
  return r.database;
}

[[noreturn]] void Refuse(const Refusal &f, const char *database, const char *role,
                         const char *application) {
  if (f.reserved) {
    ereport(
        FATAL,
        (errcode(ERRCODE_TOO_MANY_CONNECTIONS),
         errmsg("too many connections for application \"%s\"", application),
         errdetail("The remaining %d connection slots are reserved by pg_warden budgets that do "
                   "not match this login (%d slots reserved, e.g. by budget \"%s\").",
                   f.free_slots, f.reserved_slots, f.rule.name),
         errhint("Close idle connections, or change the reserved slots with "
                 "warden.set_budget().")));
  }
  const char *what = nullptr;
  const char *subject = Subject(f.rule, &what);
  if (subject == nullptr) subject = application;
  if (f.rule.kind == RuleKind::kOverride) {
    ereport(FATAL,
            (errcode(ERRCODE_TOO_MANY_CONNECTIONS),
             errmsg("too many connections for %s \"%s\"", what, subject),
             errdetail("pg_warden admission override for role \"%s\", application \"%s\" allows "
                       "%d connections, %d are in use (reason: %s).",
                       f.rule.has_role ? f.rule.role : "*",
                       f.rule.has_application ? f.rule.application : "*", f.rule.max_connections,
                       f.in_use, f.rule.reason[0] ? f.rule.reason : "none given"),
             errhint("The override is lifted with warden.open_admission()%s.",
                     f.rule.expires ? " or when it expires" : "")));
  }
  ereport(FATAL, (errcode(ERRCODE_TOO_MANY_CONNECTIONS),
                  errmsg("too many connections for %s \"%s\"", what, subject),
                  errdetail("pg_warden budget \"%s\" allows %d connections, %d are in use.",
                            f.rule.name, f.rule.max_connections, f.in_use),
                  errhint("Close idle connections or lower the pool size of this %s, or raise the "
                          "budget with warden.set_budget().",
                          what)));
  pg_unreachable();
}

/* Caller holds the lock exclusively. Decides for a login whose key mask is login_bits. */
void Decide(uint32 used, const uint64 *login_bits, TimestampTz now, Refusal *out) {
  int64 counts[kMaxRules];
  int64 total = 0;
  for (int r = 0; r < kMaxRules; r++) counts[r] = 0;
  for (uint32 e = 0; e < used; e++) {
    const int64 c = pg_atomic_read_u32(&tracking->entries[e].connections);
    if (c == 0) continue;
    total += c;
    for (int w = 0; w < kMaskWords; w++) {
      uint64 bits = masks[e].bits[w] & login_bits[w];
      while (bits) {
        const int b = pg_rightmost_one_pos64(bits);
        counts[w * 64 + b] += c;
        bits &= bits - 1;
      }
    }
  }
  int32 reserved_others = 0;
  int first_reserving = -1;
  for (int r = 0; r < kMaxRules; r++) {
    const AdmissionRule &rule = admission->rules[r];
    if (!RuleActive(rule, now)) continue;
    const bool matches = (login_bits[r / 64] >> (r % 64)) & 1;
    if (matches) {
      if (rule.max_connections >= 0 && counts[r] >= rule.max_connections && !out->refused) {
        out->refused = true;
        out->rule = rule;
        out->in_use = static_cast<int32>(counts[r]);
      }
    } else if (rule.reserved > 0) {
      reserved_others += rule.reserved;
      if (first_reserving < 0) first_reserving = r;
    }
  }
  if (!out->refused && reserved_others > 0) {
    const int64 free_slots = (MaxConnections - ReservedBackends) - total;
    if (free_slots <= reserved_others) {
      out->refused = true;
      out->reserved = true;
      out->rule = admission->rules[first_reserving];
      out->free_slots = static_cast<int32>(Max(free_slots, 0));
      out->reserved_slots = reserved_others;
    }
  }
}

void CopyName(char *dst, const char *src, bool *has) {
  *has = (src != nullptr);
  memset(dst, 0, NAMEDATALEN);
  if (src) strlcpy(dst, src, NAMEDATALEN);
}

}  // namespace

Size AdmissionShmemSize() {
  return add_size(MAXALIGN(sizeof(AdmissionShared)),
                  mul_size(UsageCapacity() + 1, sizeof(EntryMask)));
}

void AdmissionShmemInit() {
  bool found = false;
  admission = static_cast<AdmissionShared *>(
      ShmemInitStruct("pg_warden admission", AdmissionShmemSize(), &found));
  masks = reinterpret_cast<EntryMask *>(reinterpret_cast<char *>(admission) +
                                        MAXALIGN(sizeof(AdmissionShared)));
  if (found) return;
  memset(admission, 0, AdmissionShmemSize());
  admission->lock = &GetNamedLWLockTranche("pg_warden")[kAdmissionLock].lock;
  admission->generation = 1;
}

void AdmitLogin(const char *database, const char *role, const char *application) {
  if (!CanCountThisBackend()) return;
  const int32 e = LoginEntry(database, role, application);
  if (admission == nullptr) {
    CountIn(e);
    return;
  }
  Refusal refusal;
  memset(&refusal, 0, sizeof(refusal));
  uint64 login_bits[kMaskWords];
  const TimestampTz now = GetCurrentTimestamp();

  LWLockAcquire(admission->lock, LW_EXCLUSIVE);
  if (admission->active_rules > 0) {
    const uint32 used = pg_atomic_read_u32(&tracking->used);
    RefreshMasks(used);
    ComputeMask(login_bits, database, role, application);
    Decide(used, login_bits, now, &refusal);
  }
  bool exempt = false;
  if (refusal.refused) {
    /* The catalog lookup only when a refusal is at stake. */
    exempt = IsExemptRole(role) || IsSuperuserName(role);
  }
  const bool refuse = refusal.refused && !exempt && guc_enforce;
  if (!refuse) CountIn(e);
  LWLockRelease(admission->lock);

  if (!refusal.refused) return;
  if (exempt) return;
  pg_atomic_fetch_add_u64(&tracking->entries[e].refused, 1);
  if (!guc_enforce) {
    ereport(LOG, (errmsg("pg_warden: would refuse login of role \"%s\" application \"%s\" "
                         "(%s \"%s\"), warden.enforce is off",
                         role, application,
                         refusal.reserved                           ? "reserved slots of budget"
                         : refusal.rule.kind == RuleKind::kOverride ? "override"
                                                                    : "budget",
                         refusal.rule.name)));
    return;
  }
  Refuse(refusal, database, role, application);
}

void LoadBudgets() {
  /* Read the table first (may ereport), then swap under the lock. */
  int ret = SPI_execute(
      "SELECT name, max_connections, application, role, database, reserved "
      "FROM warden.budgets ORDER BY name",
      true, 0);
  if (ret != SPI_OK_SELECT) elog(ERROR, "pg_warden: reading warden.budgets failed: %d", ret);
  const uint64 n = SPI_processed;
  if (n > static_cast<uint64>(kMaxBudgets))
    ereport(WARNING, (errmsg("pg_warden: only the first %d of %llu budgets are enforced",
                             kMaxBudgets, static_cast<unsigned long long>(n))));
  AdmissionRule *loaded =
      static_cast<AdmissionRule *>(palloc0(sizeof(AdmissionRule) * kMaxBudgets));
  for (uint64 i = 0; i < n && i < static_cast<uint64>(kMaxBudgets); i++) {
    HeapTuple tup = SPI_tuptable->vals[i];
    TupleDesc desc = SPI_tuptable->tupdesc;
    AdmissionRule &r = loaded[i];
    bool isnull = false;
    r.in_use = true;
    r.kind = RuleKind::kBudget;
    strlcpy(r.name, SPI_getvalue(tup, desc, 1), NAMEDATALEN);
    Datum d = SPI_getbinval(tup, desc, 2, &isnull);
    r.max_connections = isnull ? -1 : DatumGetInt32(d);
    CopyName(r.application, SPI_getvalue(tup, desc, 3), &r.has_application);
    CopyName(r.role, SPI_getvalue(tup, desc, 4), &r.has_role);
    CopyName(r.database, SPI_getvalue(tup, desc, 5), &r.has_database);
    d = SPI_getbinval(tup, desc, 6, &isnull);
    r.reserved = isnull ? 0 : DatumGetInt32(d);
  }
  LWLockAcquire(admission->lock, LW_EXCLUSIVE);
  memcpy(admission->rules, loaded, sizeof(AdmissionRule) * kMaxBudgets);
  admission->budgets_loaded = true;
  RecountActive();
  LWLockRelease(admission->lock);
  pfree(loaded);
}

void ClearBudgets() {
  LWLockAcquire(admission->lock, LW_EXCLUSIVE);
  for (int r = 0; r < kMaxBudgets; r++) admission->rules[r].in_use = false;
  admission->budgets_loaded = false;
  RecountActive();
  LWLockRelease(admission->lock);
}

}  // namespace warden

using namespace warden;

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

char *OptionalText(FunctionCallInfo fcinfo, int arg) {
  return PG_ARGISNULL(arg) ? nullptr : text_to_cstring(PG_GETARG_TEXT_PP(arg));
}

void CheckName(const char *value, const char *argument) {
  if (value != nullptr && strlen(value) >= NAMEDATALEN)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s is too long", argument),
                    errdetail("At most %d bytes are allowed.", NAMEDATALEN - 1)));
}

void RequireAdmission() { RequireTracking(); }

int64 MatchingConnections(const AdmissionRule &rule) {
  const uint32 used = pg_atomic_read_u32(&tracking->used);
  int64 n = 0;
  for (uint32 e = 0; e < used; e++) {
    const UsageEntry &entry = tracking->entries[e];
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

/* warden.close_admission(role, application, max_connections, reason, expires) */
WARDEN_FUNCTION(close_admission) {
  RequireAdmission();
  char *role = OptionalText(fcinfo, 0);
  char *application = OptionalText(fcinfo, 1);
  char *reason = OptionalText(fcinfo, 3);
  if (role == nullptr && application == nullptr)
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("role or application must be given"),
             errhint("An admission override applies to a role, an application pattern, or both.")));
  CheckName(role, "role");
  CheckName(application, "application");
  if (application != nullptr && !ApplicationPatternIsAscii(application))
    ereport(
        ERROR,
        (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("application must be printable ASCII"),
         errdetail("PostgreSQL replaces any other character of application_name with '?'.")));
  if (role != nullptr && !OidIsValid(get_role_oid(role, true)))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("role \"%s\" does not exist", role)));
  if (!PG_ARGISNULL(2) && PG_GETARG_INT32(2) < 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("max_connections must not be negative")));
  if (reason != nullptr && strlen(reason) >= kMaxReason)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("reason is too long"),
                    errdetail("At most %d bytes are allowed.", kMaxReason - 1)));
  const TimestampTz now = GetCurrentTimestamp();
  TimestampTz expires = 0;
  if (!PG_ARGISNULL(4)) {
    Interval *iv = PG_GETARG_INTERVAL_P(4);
    expires = DatumGetTimestampTz(DirectFunctionCall2(
        timestamptz_pl_interval, TimestampTzGetDatum(now), IntervalPGetDatum(iv)));
    if (expires <= now)
      ereport(
          ERROR,
          (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("expires must be a positive interval"),
           errhint("Use NULL for an override that lasts until warden.open_admission().")));
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
  char *role = OptionalText(fcinfo, 0);
  char *application = OptionalText(fcinfo, 1);
  if (role == nullptr && application == nullptr)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("role or application must be given")));
  CheckName(role, "role");
  CheckName(application, "application");
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

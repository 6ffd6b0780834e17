/*
 * admission.cpp — budgets and admission overrides enforced at login (the
 * login path, in the backend being authenticated), and loading
 * warden.budgets into shared memory (the loader). The SQL functions are in
 * admission_sql.cpp.
 *
 * A login's key is matched against every rule (LIKE on application_name,
 * equality on role and database); each usage entry caches the bit mask of
 * the rules it matches, recomputed when the rules change (generation). At
 * login, under admission_lock (exclusive), the connections of the entries
 * matching each of the login's rules are summed, the decision is made and
 * the connection is counted in before the lock is released: no
 * check-then-act race. The FATAL is raised after the lock is released.
 * Locks: admission_lock (see admission.hpp); keys_lock through LoginEntry;
 * a catalog lookup (pg_authid) only when a refusal is at stake.
 */
#include "pg_warden/match.hpp"

#include "pg_warden/admission.hpp"

#include "pg_warden/guc.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

struct EntryMask {
  uint32 generation;
  uint64 bits[kMaskWords];
};

EntryMask *masks = nullptr; /* one per usage entry */

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
    const UsageKey &k = usage->entries[e].key;
    ComputeMask(m.bits, k.database, k.role, k.application);
    m.generation = admission->generation;
  }
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
    const int64 c = pg_atomic_read_u32(&usage->entries[e].connections);
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

}  // namespace

AdmissionShared *admission = nullptr;

bool RuleActive(const AdmissionRule &r, TimestampTz now) {
  return r.in_use && (r.expires == 0 || r.expires > now);
}

bool RuleMatches(const AdmissionRule &r, const char *database, const char *role,
                 const char *application) {
  const KeyFilter filter{r.has_database ? r.database : nullptr, r.has_role ? r.role : nullptr,
                         r.has_application ? r.application : nullptr};
  return KeyMatches(filter, database, role, application);
}

void RecountActive() {
  int32 n = 0;
  for (int r = 0; r < kMaxRules; r++)
    if (admission->rules[r].in_use) n++;
  admission->active_rules = n;
  admission->generation++;
}

void CopyName(char *dst, const char *src, bool *has) {
  *has = (src != nullptr);
  memset(dst, 0, NAMEDATALEN);
  if (src) strlcpy(dst, src, NAMEDATALEN);
}

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
    const uint32 used = pg_atomic_read_u32(&usage->used);
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
  pg_atomic_fetch_add_u64(&usage->entries[e].refused, 1);
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

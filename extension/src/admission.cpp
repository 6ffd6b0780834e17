/*
 * admission.cpp — budgets and admission overrides enforced at login (the
 * login path, in the backend being authenticated), and loading
 * warden.budgets into shared memory (the loader). The SQL functions are in
 * admission_sql.cpp.
 *
 * A login's real key (printable) is matched against every rule (LIKE on
 * application_name, equality on role and database) once; under
 * admission_lock (shared) it is counted in each matching rule's atomic
 * counter and then checked, and taken back if refused. The mask stays in
 * the backend's slot and is given back at exit. The FATAL is raised after
 * the lock is released; the superuser lookup (pg_authid), only when a
 * refusal is at stake, too. Cost: O(rules), independent of the number of
 * keys. Locks: admission_lock (see admission.hpp), a slot's spinlock;
 * keys_lock only to count a refusal in its usage row.
 */
#include "pg_warden/match.hpp"

#include "pg_warden/admission.hpp"

#include "pg_warden/guc.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

static_assert(kMaskWords <= kRuleMaskWords, "BackendSlot.rules is too small for kMaxRules");

/* Caller holds admission->lock (either mode). The in-use rules a key matches. */
void ComputeMask(uint64 *bits, const UsageKey &key) {
  for (int w = 0; w < kRuleMaskWords; w++) bits[w] = 0;
  for (int r = 0; r < kMaxRules; r++) {
    const AdmissionRule &rule = admission->rules[r];
    if (rule.in_use && RuleMatches(rule, key.database, key.role, key.application))
      bits[r / 64] |= UINT64CONST(1) << (r % 64);
  }
}

/* Adds delta to the counter of every rule in bits and to the total. */
void AddCounts(const uint64 *bits, int32 delta) {
  for (int w = 0; w < kMaskWords; w++) {
    uint64 b = bits[w];
    while (b) {
      const int r = w * 64 + pg_rightmost_one_pos64(b);
      pg_atomic_fetch_add_u32(&admission->connections[r], delta);
      b &= b - 1;
    }
  }
  pg_atomic_fetch_add_u32(&admission->sessions, delta);
}

/*
 * Exit path (before_shmem_exit): gives back what the slot holds in the rule
 * counters. Under admission_lock shared, so a rebuild never sees it half done.
 */
void ReleaseAdmission(BackendSlot *slot) {
  if (admission == nullptr) return;
  LWLockAcquire(admission->lock, LW_SHARED);
  SpinLockAcquire(&slot->mutex);
  if (slot->admitted) {
    slot->admitted = false;
    AddCounts(slot->rules, -1);
  }
  SpinLockRelease(&slot->mutex);
  LWLockRelease(admission->lock);
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

/* What a rule limits, for messages: application, role or database (and which). */
const char *Subject(const AdmissionRule &r, const char *application, const char **what) {
  if (r.has_application || (!r.has_role && !r.has_database)) {
    *what = "application";
    return application;
  }
  if (r.has_role) {
    *what = "role";
    return r.role;
  }
  *what = "database";
  return r.database;
}

[[noreturn]] void Refuse(const Refusal &f, const char *application) {
  if (f.reserved) {
    ereport(FATAL,
            (errcode(ERRCODE_TOO_MANY_CONNECTIONS),
             errmsg("too many connections: the remaining connection slots are reserved "
                    "connection slots of pg_warden budgets"),
             errdetail("%d connection slots are free and %d are reserved, still unused, by "
                       "budgets that do not match this login (e.g. budget \"%s\", reserved %d).",
                       f.free_slots, f.reserved_slots, f.rule.name, f.rule.reserved),
             errhint("Close idle connections, or change the reserved slots with "
                     "warden.set_budget().")));
  }
  const char *what = nullptr;
  const char *subject = Subject(f.rule, application, &what);
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

/*
 * Caller holds admission->lock shared. Counts the login in every rule it
 * matches and in the total first, then checks; on refusal it takes all of
 * it back. Two logins racing at a limit may both see the other's count and
 * both be refused, never both admitted: a race can only refuse.
 */
bool TryAdmit(const uint64 *bits, TimestampTz now, bool check, Refusal *out) {
  const int64 total = pg_atomic_add_fetch_u32(&admission->sessions, 1);
  bool refused = false;
  for (int w = 0; w < kMaskWords; w++) {
    uint64 b = bits[w];
    while (b) {
      const int r = w * 64 + pg_rightmost_one_pos64(b);
      const int64 after = pg_atomic_add_fetch_u32(&admission->connections[r], 1);
      const AdmissionRule &rule = admission->rules[r];
      if (check && !refused && rule.max_connections >= 0 && after > rule.max_connections &&
          RuleActive(rule, now)) {
        refused = true;
        out->rule = rule;
        out->in_use = static_cast<int32>(after - 1);
      }
      b &= b - 1;
    }
  }
  if (check && !refused) {
    /* Reserved slots: for each reserving rule the login does not match, what
     * its own sessions have not used yet. */
    int64 unused_reserved = 0;
    int first = -1;
    for (int r = 0; r < kMaxRules; r++) {
      const AdmissionRule &rule = admission->rules[r];
      if (rule.reserved <= 0 || ((bits[r / 64] >> (r % 64)) & 1) || !RuleActive(rule, now))
        continue;
      const int64 left =
          rule.reserved - static_cast<int64>(pg_atomic_read_u32(&admission->connections[r]));
      if (left <= 0) continue;
      unused_reserved += left;
      if (first < 0) first = r;
    }
    if (unused_reserved > 0) {
      const int64 free_slots = (MaxConnections - ReservedBackends) - (total - 1);
      if (free_slots <= unused_reserved) {
        refused = true;
        out->reserved = true;
        out->rule = admission->rules[first];
        out->free_slots = static_cast<int32>(Max(free_slots, 0));
        out->reserved_slots = static_cast<int32>(unused_reserved);
      }
    }
  }
  if (refused) {
    out->refused = true;
    /* take back the counts (AddCounts also takes back the total) */
    AddCounts(bits, -1);
  }
  return !refused;
}

/* Counts this backend in its rules (check = false: whatever the limits). */
bool AdmitSlot(const UsageKey &key, TimestampTz now, bool check, Refusal *out) {
  BackendSlot *slot = MySlot();
  uint64 bits[kRuleMaskWords];
  LWLockAcquire(admission->lock, LW_SHARED);
  ComputeMask(bits, key);
  const bool admitted = TryAdmit(bits, now, check, out);
  if (admitted) {
    SpinLockAcquire(&slot->mutex);
    memcpy(slot->rules, bits, sizeof(bits));
    slot->admitted = true;
    SpinLockRelease(&slot->mutex);
  }
  LWLockRelease(admission->lock);
  return admitted;
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
  /*
   * Rebuild the rule counters from the slots (exclusive lock: no login or
   * exit is counting meanwhile): max_connections slots, not keys.
   */
  for (int r = 0; r < kMaxRules; r++) pg_atomic_write_u32(&admission->connections[r], 0);
  pg_atomic_write_u32(&admission->sessions, 0);
  for (int32 i = 0; i < usage->max_backends; i++) {
    BackendSlot *slot = &usage->slots[i];
    /* the key is copied under the slot's spinlock and matched outside it: the
       match walks every rule; admitted cannot change meanwhile (see above) */
    UsageKey key;
    SpinLockAcquire(&slot->mutex);
    const bool admitted = slot->admitted;
    if (admitted) key = slot->key;
    SpinLockRelease(&slot->mutex);
    if (!admitted) continue;
    uint64 mask[kRuleMaskWords];
    ComputeMask(mask, key);
    SpinLockAcquire(&slot->mutex);
    memcpy(slot->rules, mask, sizeof(mask));
    SpinLockRelease(&slot->mutex);
    AddCounts(mask, 1);
  }
}

int64 SessionsMatching(const AdmissionRule &rule) {
  int64 n = 0;
  for (int32 i = 0; i < usage->max_backends; i++) {
    BackendSlot *slot = &usage->slots[i];
    UsageKey key;
    SpinLockAcquire(&slot->mutex);
    const bool admitted = slot->admitted;
    if (admitted) key = slot->key;
    SpinLockRelease(&slot->mutex);
    if (admitted && RuleMatches(rule, key.database, key.role, key.application)) n++;
  }
  return n;
}

int32 RuleConnections(int r) {
  return static_cast<int32>(pg_atomic_read_u32(&admission->connections[r]));
}

void CopyName(char *dst, const char *src, bool *has) {
  *has = (src != nullptr);
  /* compared with keys as they are stored: printable */
  MakePrintable(dst, src);
}

Size AdmissionShmemSize() { return MAXALIGN(sizeof(AdmissionShared)); }

void AdmissionShmemInit() {
  bool found = false;
  admission = static_cast<AdmissionShared *>(
      ShmemInitStruct("pg_warden admission", AdmissionShmemSize(), &found));
  if (found) return;
  memset(admission, 0, AdmissionShmemSize());
  admission->lock = &GetNamedLWLockTranche("pg_warden")[kAdmissionLock].lock;
  admission->generation = 1;
  for (int r = 0; r < kMaxRules; r++) pg_atomic_init_u32(&admission->connections[r], 0);
  pg_atomic_init_u32(&admission->sessions, 0);
}

void AdmitLogin(const char *database, const char *role, const char *application) {
  if (!CanCountThisBackend()) return;
  BackendSlot *slot = MySlot();
  UsageKey key;
  MakeKey(&key, database, role, application);
  SpinLockAcquire(&slot->mutex);
  slot->key = key;
  slot->pid = MyProcPid;
  slot->entry = -1;
  slot->admitted = false;
  SpinLockRelease(&slot->mutex);
  RegisterLoginCallbacks(ReleaseAdmission);
  if (admission == nullptr) return;

  Refusal refusal;
  memset(&refusal, 0, sizeof(refusal));
  const TimestampTz now = GetCurrentTimestamp();
  if (AdmitSlot(key, now, true, &refusal)) return;

  /* A refusal is at stake: the catalog lookup, with no pg_warden lock held. */
  if (IsExemptRole(key.role) || IsSuperuserName(role)) {
    AdmitSlot(key, now, false, &refusal);
    return;
  }
  CountRefused(key);
  if (!guc_enforce) {
    AdmitSlot(key, now, false, &refusal);
    const AdmissionRule &r = refusal.rule;
    if (refusal.reserved)
      ereport(LOG, (errmsg("pg_warden: would refuse login of role \"%s\" application \"%s\" "
                           "(reserved connection slots: %d free, %d reserved by budgets that do "
                           "not match it, e.g. \"%s\"), warden.enforce is off",
                           key.role, key.application, refusal.free_slots, refusal.reserved_slots,
                           r.name)));
    else if (r.kind == RuleKind::kOverride)
      ereport(LOG, (errmsg("pg_warden: would refuse login of role \"%s\" application \"%s\" "
                           "(admission override for role \"%s\", application \"%s\", max %d, "
                           "reason: %s), warden.enforce is off",
                           key.role, key.application, r.has_role ? r.role : "*",
                           r.has_application ? r.application : "*", r.max_connections,
                           r.reason[0] ? r.reason : "none given")));
    else
      ereport(LOG, (errmsg("pg_warden: would refuse login of role \"%s\" application \"%s\" "
                           "(budget \"%s\", max %d), warden.enforce is off",
                           key.role, key.application, r.name, r.max_connections)));
    return;
  }
  Refuse(refusal, key.application);
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

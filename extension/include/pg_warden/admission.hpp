/*
 * admission.hpp — refusing logins over budget, at login, from shared memory.
 *
 * Rules come from two places and live in one fixed table in shared memory:
 *   - budgets: copies of warden.budgets rows, loaded by LoadBudgets() (the
 *     loader runs it in warden.database, on a primary and a standby alike);
 *   - admission overrides: set with warden.close_admission() on this server
 *     only, never stored in a table, gone at restart.
 *
 * Counting is per backend slot, never per usage row: each admitted backend's
 * slot (usage.hpp) holds its real key and the mask of the rules it matched,
 * and each rule has one atomic counter of the slots that hold it. A login
 * counts itself in first (increment-then-check) and takes it all back when
 * refused, so N simultaneous logins against a budget of K admit exactly K
 * whatever the number of keys; a race at the limit can only refuse.
 *
 * Locking: admission_lock (LWLock): shared at login (rules read, counters
 * moved with atomics) and at exit; exclusive to change rules, which
 * rebuilds the counters from the slots (MaxBackends, not keys). No catalog
 * access under it: the superuser lookup of a refused login runs after it
 * is released.
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

constexpr int kMaxBudgets = 128;
constexpr int kMaxOverrides = 64;
constexpr int kMaxRules = kMaxBudgets + kMaxOverrides;
constexpr int kMaskWords = (kMaxRules + 63) / 64;
constexpr int kMaxReason = 256;

Size AdmissionShmemSize();
void AdmissionShmemInit();

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

/* The rules' table in shared memory. */
struct AdmissionShared {
  LWLock *lock;
  uint32 generation; /* bumped whenever rules change */
  int32 active_rules;
  bool budgets_loaded;
  AdmissionRule rules[kMaxRules];          /* budgets first, then overrides */
  pg_atomic_uint32 connections[kMaxRules]; /* admitted slots matching each rule */
  pg_atomic_uint32 sessions;               /* admitted slots in all */
};

extern AdmissionShared *admission;

bool RuleActive(const AdmissionRule &r, TimestampTz now);
bool RuleMatches(const AdmissionRule &r, const char *database, const char *role,
                 const char *application);
/* After a change of rules (caller holds admission_lock exclusively): recounts. */
void RecountActive();
/* Sessions that rule r (index in rules[]) holds now, from its counter. */
int32 RuleConnections(int r);
/*
 * Sessions whose real key (at login) matches rule, walking the backend
 * slots (MaxBackends): exact whether their usage rows are folded or not.
 */
int64 SessionsMatching(const AdmissionRule &rule);
/* Copies an optional name (nullptr = any) into a rule's field. */
void CopyName(char *dst, const char *src, bool *has);

/* Login path: admit (count in) or refuse with FATAL. PostgreSQL regime. */
void AdmitLogin(const char *database, const char *role, const char *application);

/* Copies warden.budgets into shared memory (SPI connected, in a transaction). */
void LoadBudgets();
/* The table or the extension is absent: no budgets. */
void ClearBudgets();
/* The extension is gone (the loader): lifts every admission override. */
void ClearAdmissionOverrides();

}  // namespace warden

/*
 * admission.hpp — refusing logins over budget, at login, from shared memory.
 *
 * Rules come from two places and live in one fixed table in shared memory:
 *   - budgets: copies of warden.budgets rows, loaded by LoadBudgets() (the
 *     loader runs it in warden.database, on a primary and a standby alike);
 *   - admission overrides: set with warden.close_admission() on this server
 *     only, never stored in a table, gone at restart.
 *
 * Locking: admission_lock (LWLock), exclusive around the whole
 * check-then-count of a login, so N simultaneous logins against a budget of
 * K admit exactly K; exclusive to change rules. Shared to read them.
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
  AdmissionRule rules[kMaxRules]; /* budgets first, then overrides */
};

extern AdmissionShared *admission;

bool RuleActive(const AdmissionRule &r, TimestampTz now);
bool RuleMatches(const AdmissionRule &r, const char *database, const char *role,
                 const char *application);
/* After a change of rules (caller holds admission_lock exclusively). */
void RecountActive();
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

// What one poll of one server returns: value types, discarded after the poll
// (nothing per backend is kept between polls).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace wardend {

// A client backend that is idle in some way (active ones are only counted).
struct Backend {
  int pid = 0;
  std::string role;
  std::string database;
  std::string application_name;
  std::string state;  // "idle", "idle in transaction", "idle in transaction (aborted)"
  double state_seconds = 0;
  std::string backend_start;  // timestamptz as text: identifies the session with pid
  // timestamptz as text: when its state was read (the worker's sample, or the
  // poll); a session whose state changed after it is spared at termination.
  std::string sampled_at;
};

struct AppUsage {
  std::string database;
  std::string role;
  std::string application_name;
  int connections = 0;
  int active = 0;
  int idle = 0;
  int idle_in_transaction = 0;
  double longest_idle_seconds = 0;  // state "idle" only
  // "idle in transaction" (aborted or not): the one that holds locks and snapshots.
  double longest_idle_in_transaction_seconds = 0;
};

// warden.app_usage's counters of one key (rows whose counters are all 0 are not read).
struct AppCounters {
  std::string database;
  std::string role;
  std::string application_name;
  double refused = 0;     // logins refused by a budget
  double terminated = 0;  // sessions pg_warden terminated
};

// A budget of warden.budget_usage: its scope (a NULL pattern is "") and use.
struct BudgetUse {
  std::string name;
  std::string application;
  std::string role;
  std::string database;
  int max_connections = 0;
  int connections = 0;
};

struct RoleCount {
  int connections = 0;
  int active = 0;
  int idle = 0;
  int idle_in_transaction = 0;
};

struct Snapshot {
  int connections = 0;
  int max_connections = 0;
  int reserved = 0;
  double usage_percent = 0;  // of max_connections - reserved, as warden.server_usage
  bool in_recovery = false;
  std::optional<double> replay_lag_seconds;
  int own_pid = 0;  // wardend's own backend: never acted on
  // The extension's settings on that server (absent in degraded mode).
  std::optional<double> degraded_percent, unhealthy_percent;
  bool enforce_off = false;  // warden.enforce = off there: wardend's actions are dry runs too
  std::vector<std::string> exempt_roles;  // warden.exempt_roles: never acted on
  std::vector<Backend> backends;          // idle backends only
  std::vector<AppUsage> apps;             // connections > 0 only
  std::vector<AppCounters> counters;      // with the extension only
  std::vector<BudgetUse> budgets;         // with the extension only

  std::map<std::string, RoleCount> Roles() const;
  int Active() const;
  int Idle() const;
  int IdleInTransaction() const;
  double LongestIdleSeconds() const;
  double LongestIdleInTransactionSeconds() const;
};

}  // namespace wardend

// The daemon's live status: what the HTTP endpoints, the shared-memory
// segment and the log report. Filled by each server's poll thread under
// StatusBoard's mutex; read as copies.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "wardend/snapshot.hpp"

namespace wardend {

struct AlertState {
  std::string severity;  // "warning" | "critical"
  std::string message;
  double since = 0;  // unix time
};

struct PoolStat {  // one pgbouncer pool (SHOW POOLS)
  std::string database, user;
  int cl_active = 0, cl_waiting = 0, sv_active = 0, sv_idle = 0, sv_used = 0;
  double maxwait_seconds = 0;
};

struct BouncerDbStat {  // one pgbouncer database (SHOW STATS)
  std::string database;
  double xact_count = 0, query_count = 0, wait_seconds = 0;
};

struct BouncerClients {  // client connections per (database, user, application) (SHOW CLIENTS)
  std::string database, user, application_name;
  int clients = 0;
};

// One read of a server's PgBouncer admin console.
struct BouncerReport {
  bool ok = false;
  std::string error;  // DSN passwords masked
  std::vector<PoolStat> pools;
  std::vector<BouncerDbStat> stats;
  std::vector<BouncerClients> clients;
};

struct ServerStatus {
  std::string name;
  bool connected = false;
  bool polled = false;  // at least one successful poll since start
  bool last_poll_ok = false;
  std::string mode;       // "extension" | "degraded" | "" before the first connection
  std::string admission;  // "override" | "alter_role"
  std::string error;      // last connection/poll error (DSN passwords masked)
  double last_ok_unix = 0;
  double poll_seconds = 0;
  int connections = 0, max_connections = 0, reserved = 0;
  double usage_percent = 0;
  std::optional<double> degraded_percent, unhealthy_percent;  // the server's warden.* settings
  bool in_recovery = false;
  bool enforce_off = false;  // warden.enforce = off there: wardend's actions are dry runs
  std::optional<double> replay_lag_seconds;
  int active = 0, idle = 0, idle_in_transaction = 0;
  double longest_idle_seconds = 0;
  double longest_idle_in_transaction_seconds = 0;
  std::vector<AppUsage> apps;                     // bounded (metrics_max_applications)
  std::vector<AppCounters> counters;              // not folded: counters must not move between keys
  std::vector<BudgetUse> budgets;                 // the extension's budgets on this server
  std::map<std::string, RoleCount> roles;         // bounded likewise
  std::map<std::string, int> admission_closed;    // role -> limit in force
  std::vector<std::string> paused_pools;          // pgbouncer pools wardend paused (pause_pool)
  std::vector<double> emergency_active;           // at_percent of each active step
  std::map<std::string, uint64_t> actions_total;  // kind -> count
  std::map<std::string, AlertState> alerts;       // key -> state
  std::string journal_error;  // the state file could not be written: changes withheld
  std::vector<std::string> config_problems;  // e.g. a [[role]] naming no role here
  bool pgbouncer_configured = false, pgbouncer_ok = false;
  std::string pgbouncer_error;
  std::vector<PoolStat> pools;
  std::vector<BouncerDbStat> bouncer_stats;
  std::vector<BouncerClients> bouncer_clients;
  // A [[cluster]]'s member: Patroni's view of it (GET /cluster).
  std::string cluster;               // "" for a [[server]]
  std::string patroni_role;          // "leader", "replica", "standby_leader", ...
  std::string patroni_state;         // "running", "stopped", ...
  std::optional<int64_t> lag_bytes;  // behind the leader; none on the leader or when unknown
};

struct RecentAction {
  double at = 0;
  std::string server;
  std::string text;
};

struct DaemonStatus {
  int pid = 0;
  double started = 0;
  bool dry_run = false;
  std::vector<ServerStatus> servers;
  std::deque<RecentAction> recent;  // newest last, bounded
};

}  // namespace wardend

// wardend's configuration (TOML), as documented in docs/daemon.md: the typed
// model, and the parser that names file, line and key for every bad value.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "wardend/duration.hpp"

namespace wardend {

enum class Priority { kLow, kNormal, kCritical };
enum class LogFormat { kPlain, kJson };
// kPausePool: PAUSE of one pgbouncer database (pool) on every server's
// pgbouncer_dsn admin console, RESUME on the way down (docs/pgbouncer.md).
enum class EmergencyAction { kTerminateIdle, kCloseAdmission, kPausePool };
// Where a [[role]] limit counts connections: each server alone, or summed
// over the members of every [[cluster]] (docs/fleet.md).
enum class RoleScope { kServer, kCluster };

const char* ToString(Priority p);
const char* ToString(EmergencyAction a);
const char* ToString(RoleScope s);

struct DaemonConfig {
  Millis interval{1000};
  std::string state_file = "/var/lib/pg_warden/wardend.state";
  std::string http = "127.0.0.1:9479";  // empty: no HTTP server
  std::string http_token;               // from http_token or http_token_file; empty: none
  bool dry_run = false;
  LogFormat log_format = LogFormat::kPlain;
  std::string log_level = "info";
  Millis cooldown{60'000};        // a role back under its limit this long: admission reopened
  double hysteresis_percent = 5;  // an emergency step is undone below at_percent - this
  double degraded_percent = 80;   // health thresholds, as warden.degraded_percent
  double unhealthy_percent = 90;  // ... and warden.unhealthy_percent
  bool thresholds_set = false;    // set in the file: else each server's warden.* settings apply
  Millis reconnect_min{200};      // backoff after a failed connection attempt
  Millis reconnect_max{30'000};
  Millis connect_timeout{5000};
  Millis statement_timeout{5000};
  int metrics_max_applications = 200;  // per server; the rest fold into application "<other>"
  Millis probe_interval{60'000};       // capabilities are detected again this often
  Millis min_idle_age{30'000};         // max_idle spares sessions idle for less (per role too)
};

struct ServerConfig {
  std::string name;
  std::string dsn;
  std::string pgbouncer_dsn;  // optional
  // A member of a [[cluster]] (filled by the daemon from Patroni, never by the
  // file): its cluster and member names, and whether this wardend acts on it
  // for server-scoped steps (the cluster's `member`, or every member).
  std::string cluster, member;
  bool acts_local = true;
};

// One [[cluster]]: a Patroni-managed cluster whose members come from
// Patroni's REST API (docs/fleet.md). Each member becomes a server named
// "<name>/<member>" whose DSN is `dsn` plus the member's host and port.
struct ClusterConfig {
  std::string name;
  std::vector<std::string> patroni;  // REST API base URLs of any members
  std::string dsn;                   // without host and port
  std::string member;                // non-empty: watch and act on this member only
};

// One [[role]] table: wardend's per-role limits (soft: above them wardend
// acts, along the ladder in docs/daemon.md). Not the extension's budgets,
// which are hard login caps.
struct RoleLimitConfig {
  std::string role;  // the key `name`
  RoleScope scope = RoleScope::kServer;
  std::optional<int> max_connections;
  std::optional<int> max_idle;
  std::optional<Millis> idle_in_transaction_timeout;
  Priority priority = Priority::kNormal;
  std::optional<Millis> cooldown;  // overrides [daemon] cooldown

  std::optional<Millis> min_idle_age;  // overrides [daemon] min_idle_age
};

struct EmergencyConfig {
  double at_percent = 0;
  EmergencyAction action = EmergencyAction::kTerminateIdle;
  Millis older_than{30 * 60'000};                            // terminate_idle
  std::vector<Priority> skip_priority{Priority::kCritical};  // terminate_idle
  std::vector<Priority> priorities{Priority::kLow};          // close_admission: whose roles

  int keep_min = 0;  // terminate_idle: per (database, role, application), kept idle sessions
  std::string pool;  // pause_pool: the pgbouncer database to PAUSE
};

struct Config {
  std::string path;
  DaemonConfig daemon;
  std::vector<ServerConfig> servers;
  std::vector<ClusterConfig> clusters;
  std::vector<RoleLimitConfig> role_limits;
  std::vector<EmergencyConfig> emergencies;
  // Accepted but deprecated constructs ("FILE:LINE: ..."), for the caller to
  // log once (the parser itself does no I/O).
  std::vector<std::string> warnings;

  const RoleLimitConfig* RoleLimitFor(const std::string& role) const;
  Priority PriorityOf(const std::string& role) const;  // normal without a [[role]]
};

// Every configuration problem: what() is "FILE:LINE: key 'K': message".
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, std::string key, const std::string& message);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& key() const { return key_; }

 private:
  std::string file_;
  int line_;
  std::string key_;
};

// Parses TOML text; `path` is used in messages and to resolve http_token_file.
Config ParseConfig(const std::string& text, const std::string& path);
// Reads and parses a file; a missing/unreadable file is a ConfigError too.
Config LoadConfig(const std::string& path);

// "host=... password=secret" -> "host=... password=********" (also in URIs).
std::string MaskDsn(const std::string& dsn);

}  // namespace wardend

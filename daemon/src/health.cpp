// Health, readiness, alerts and metrics documents (see health.hpp). Pure: no locks.
#include "wardend/health.hpp"

#include <fmt/format.h>

#include <cmath>

namespace wardend {

namespace {

int Rank(const std::string& s) { return s == "Unhealthy" ? 2 : s == "Degraded" ? 1 : 0; }

std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

}  // namespace

std::pair<double, double> Thresholds(const DaemonConfig& d, const ServerStatus& s) {
  if (d.thresholds_set) return {d.degraded_percent, d.unhealthy_percent};
  return {s.degraded_percent.value_or(d.degraded_percent),
          s.unhealthy_percent.value_or(d.unhealthy_percent)};
}

std::string ServerHealth(const DaemonConfig& d, const ServerStatus& s) {
  if (!s.last_poll_ok) return "Unhealthy";
  // A change withheld because it could not be journaled: wardend cannot do its job.
  if (!s.journal_error.empty()) return "Unhealthy";
  auto [degraded, unhealthy] = Thresholds(d, s);
  if (s.usage_percent >= unhealthy) return "Unhealthy";
  if (s.usage_percent >= degraded) return "Degraded";
  if (s.mode == "degraded") return "Degraded";
  for (const auto& p : s.pools)
    if (p.cl_waiting > 0) return "Degraded";
  if (s.pgbouncer_configured && !s.pgbouncer_ok) return "Degraded";
  return "Healthy";
}

nlohmann::json HealthJson(const DaemonConfig& d, const DaemonStatus& st, int* http_status) {
  nlohmann::json checks = nlohmann::json::array();
  std::string overall = "Healthy";
  for (const auto& s : st.servers) {
    std::string status = ServerHealth(d, s);
    if (Rank(status) > Rank(overall)) overall = status;
    std::string desc;
    if (!s.last_poll_ok)
      desc =
          fmt::format("{}: unreachable: {}", s.name, s.error.empty() ? "not polled yet" : s.error);
    else
      desc = fmt::format("{}: {}/{} connections in use", s.name, s.connections, s.max_connections);
    if (s.last_poll_ok && s.mode == "degraded")
      desc += " (degraded mode: pg_warden extension absent)";
    if (!s.journal_error.empty())
      desc += "; state file unwritable, changes withheld: " + s.journal_error;
    for (const auto& p : s.config_problems) desc += "; configuration: " + p;
    nlohmann::json data = {
        {"connections", s.connections},
        {"max_connections", s.max_connections},
        {"reserved", s.reserved},
        {"usage_percent", std::round(s.usage_percent * 100) / 100},
        {"active", s.active},
        {"idle", s.idle},
        {"idle_in_transaction", s.idle_in_transaction},
        {"longest_idle_seconds", std::round(s.longest_idle_seconds * 1000) / 1000},
        {"role", !s.polled       ? "unknown"
                 : s.in_recovery ? "standby"
                                 : "primary"},
        {"mode", s.mode.empty() ? "unknown" : s.mode},
        {"reachable", s.last_poll_ok},
        {"last_poll", s.last_ok_unix},
    };
    if (s.in_recovery)
      data["replay_lag_seconds"] =
          s.replay_lag_seconds ? nlohmann::json(*s.replay_lag_seconds) : nlohmann::json(nullptr);
    if (!s.admission_closed.empty()) data["admission_closed"] = s.admission_closed;
    if (!s.config_problems.empty()) data["config_problems"] = s.config_problems;
    if (s.pgbouncer_configured) {
      int waiting = 0;
      double maxwait = 0;
      for (const auto& p : s.pools) {
        waiting += p.cl_waiting;
        maxwait = std::max(maxwait, p.maxwait_seconds);
      }
      data["pgbouncer"] = {{"reachable", s.pgbouncer_ok},
                           {"client_waiting", waiting},
                           {"max_wait_seconds", maxwait}};
    }
    checks.push_back({{"name", s.name}, {"status", status}, {"description", desc}, {"data", data}});
  }
  if (http_status) *http_status = overall == "Unhealthy" ? 503 : 200;
  return {{"status", overall}, {"checks", checks}};
}

nlohmann::json ReadyJson(const DaemonStatus& st, int* http_status) {
  bool ready = true;
  nlohmann::json servers = nlohmann::json::object();
  for (const auto& s : st.servers) {
    servers[s.name] = s.last_poll_ok;
    ready = ready && s.last_poll_ok;
  }
  if (http_status) *http_status = ready ? 200 : 503;
  return {{"ready", ready}, {"servers", servers}};
}

std::map<std::string, AlertState> CurrentAlerts(const Config& cfg, const ServerStatus& s) {
  std::map<std::string, AlertState> out;
  if (!s.last_poll_ok) {
    out["server_unreachable"] = {"critical", fmt::format("{} is unreachable: {}", s.name, s.error),
                                 0};
    return out;
  }
  auto [degraded, unhealthy] = Thresholds(cfg.daemon, s);
  if (s.usage_percent >= unhealthy)
    out["usage_unhealthy"] = {
        "critical", fmt::format("{}: usage {:.1f}% >= {}%", s.name, s.usage_percent, unhealthy), 0};
  else if (s.usage_percent >= degraded)
    out["usage_degraded"] = {
        "warning", fmt::format("{}: usage {:.1f}% >= {}%", s.name, s.usage_percent, degraded), 0};
  for (const auto& b : cfg.role_limits) {
    auto it = s.roles.find(b.role);
    if (b.max_connections && it != s.roles.end() && it->second.connections > *b.max_connections)
      out["role_over_limit:" + b.role] = {
          "warning",
          fmt::format("{}: role {} holds {} connections, max_connections {}", s.name, b.role,
                      it->second.connections, *b.max_connections),
          0};
  }
  for (const auto& [role, limit] : s.admission_closed)
    out["admission_closed:" + role] = {
        "warning", fmt::format("{}: admission of role {} closed at {}", s.name, role, limit), 0};
  for (double at : s.emergency_active)
    out[fmt::format("emergency:{}", at)] = {
        "critical", fmt::format("{}: emergency step at {}% in force", s.name, at), 0};
  if (!s.journal_error.empty())
    out["state_file_unwritable"] = {
        "critical", fmt::format("{}: changes withheld: {}", s.name, s.journal_error), 0};
  if (s.mode == "degraded")
    out["degraded_mode"] = {
        "warning", fmt::format("{}: pg_warden extension absent (degraded mode)", s.name), 0};
  for (const auto& p : s.pools)
    if (p.cl_waiting > 0)
      out["pgbouncer_waiting:" + p.database + "/" + p.user] = {
          "warning",
          fmt::format("{}: pgbouncer pool {}/{} has {} waiting clients", s.name, p.database, p.user,
                      p.cl_waiting),
          0};
  return out;
}

nlohmann::json AlertsJson(const DaemonStatus& st) {
  nlohmann::json alerts = nlohmann::json::array();
  for (const auto& s : st.servers)
    for (const auto& [key, a] : s.alerts) {
      auto colon = key.find(':');
      alerts.push_back({{"name", key.substr(0, colon)},
                        {"key", key},
                        {"server", s.name},
                        {"severity", a.severity},
                        {"message", a.message},
                        {"since", a.since}});
    }
  return {{"alerts", alerts}};
}

std::string EscapeLabel(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string MetricsText(const Config& cfg, const DaemonStatus& st) {
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  auto sample = [&](const char* name, const std::string& labels, double v) {
    out += fmt::format("{}{{{}}} {}\n", name, labels, Num(v));
  };
  auto L = [](const std::string& server) {
    return fmt::format("server=\"{}\"", EscapeLabel(server));
  };

  family("pg_warden_up", "gauge", "1 if the last poll of the server succeeded.");
  for (const auto& s : st.servers) sample("pg_warden_up", L(s.name), s.last_poll_ok ? 1 : 0);
  family("pg_warden_extension", "gauge",
         "1 if the server has the pg_warden extension, 0 in degraded mode.");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_extension", L(s.name), s.mode == "extension" ? 1 : 0);
  family("pg_warden_server_connections", "gauge", "Client connections on the server.");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_server_connections", L(s.name), s.connections);
  family("pg_warden_server_max_connections", "gauge", "max_connections of the server.");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_server_max_connections", L(s.name), s.max_connections);
  family("pg_warden_server_usage_ratio", "gauge",
         "Client connections / (max_connections - superuser_reserved_connections).");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_server_usage_ratio", L(s.name), s.usage_percent / 100.0);
  family("pg_warden_server_in_recovery", "gauge", "1 for a standby.");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_server_in_recovery", L(s.name), s.in_recovery ? 1 : 0);
  family("pg_warden_replay_lag_seconds", "gauge",
         "Seconds since the last replayed transaction (standby).");
  for (const auto& s : st.servers)
    if (s.polled && s.in_recovery && s.replay_lag_seconds)
      sample("pg_warden_replay_lag_seconds", L(s.name), *s.replay_lag_seconds);
  family("pg_warden_connections", "gauge",
         "Client connections per database, role, application and state (applications past "
         "metrics_max_applications per server fold into \"<other>\").");
  for (const auto& s : st.servers)
    for (const auto& a : s.apps) {
      std::string base = fmt::format("{},database=\"{}\",role=\"{}\",application=\"{}\"", L(s.name),
                                     EscapeLabel(a.database), EscapeLabel(a.role),
                                     EscapeLabel(a.application_name));
      int other = a.connections - a.active - a.idle - a.idle_in_transaction;
      sample("pg_warden_connections", base + ",state=\"active\"", a.active);
      sample("pg_warden_connections", base + ",state=\"idle\"", a.idle);
      sample("pg_warden_connections", base + ",state=\"idle_in_transaction\"",
             a.idle_in_transaction);
      sample("pg_warden_connections", base + ",state=\"other\"", other > 0 ? other : 0);
    }
  family("pg_warden_role_connections", "gauge", "Client connections per role.");
  for (const auto& s : st.servers)
    for (const auto& [role, rc] : s.roles)
      sample("pg_warden_role_connections",
             fmt::format("{},role=\"{}\"", L(s.name), EscapeLabel(role)), rc.connections);
  family("pg_warden_role_max_connections", "gauge",
         "max_connections of the role's [[role]] limit.");
  for (const auto& s : st.servers)
    for (const auto& b : cfg.role_limits)
      if (b.max_connections)
        sample("pg_warden_role_max_connections",
               fmt::format("{},role=\"{}\"", L(s.name), EscapeLabel(b.role)), *b.max_connections);
  family("pg_warden_admission_closed", "gauge",
         "Connection cap wardend has put on a role (present while closed).");
  for (const auto& s : st.servers)
    for (const auto& [role, limit] : s.admission_closed)
      sample("pg_warden_admission_closed",
             fmt::format("{},role=\"{}\"", L(s.name), EscapeLabel(role)), limit);
  family("pg_warden_emergency_active", "gauge", "1 for each [[emergency]] step in force.");
  for (const auto& s : st.servers)
    for (const auto& e : cfg.emergencies) {
      bool on = false;
      for (double at : s.emergency_active) on = on || at == e.at_percent;
      sample("pg_warden_emergency_active",
             fmt::format("{},at_percent=\"{}\",action=\"{}\"", L(s.name), Num(e.at_percent),
                         ToString(e.action)),
             on ? 1 : 0);
    }
  family("pg_warden_actions_total", "counter", "Actions taken by wardend, by kind.");
  for (const auto& s : st.servers)
    for (const char* kind : {"terminate", "close_admission", "open_admission"}) {
      auto it = s.actions_total.find(kind);
      sample("pg_warden_actions_total", fmt::format("{},kind=\"{}\"", L(s.name), kind),
             it == s.actions_total.end() ? 0 : static_cast<double>(it->second));
    }
  family("pg_warden_poll_duration_seconds", "gauge", "Duration of the last poll (one round trip).");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_poll_duration_seconds", L(s.name), s.poll_seconds);
  family("pg_warden_last_successful_poll_timestamp_seconds", "gauge",
         "Unix time of the last successful poll.");
  for (const auto& s : st.servers)
    if (s.polled)
      sample("pg_warden_last_successful_poll_timestamp_seconds", L(s.name), s.last_ok_unix);
  family("pg_warden_alerts", "gauge", "Active alerts by name.");
  for (const auto& s : st.servers) {
    std::map<std::string, int> n;
    for (const auto& [key, a] : s.alerts) n[key.substr(0, key.find(':'))]++;
    for (const auto& [name, count] : n)
      sample("pg_warden_alerts", fmt::format("{},alert=\"{}\"", L(s.name), EscapeLabel(name)),
             count);
  }
  bool any_bouncer = false;
  for (const auto& s : st.servers) any_bouncer = any_bouncer || s.pgbouncer_configured;
  if (any_bouncer) {
    family("pg_warden_pgbouncer_up", "gauge", "1 if pgbouncer's admin console answered.");
    for (const auto& s : st.servers)
      if (s.pgbouncer_configured)
        sample("pg_warden_pgbouncer_up", L(s.name), s.pgbouncer_ok ? 1 : 0);
    struct Col {
      const char* name;
      const char* help;
      int PoolStat::*field;
    };
    const Col cols[] = {
        {"pg_warden_pgbouncer_clients_active",
         "Client connections linked to a server connection (SHOW POOLS cl_active).",
         &PoolStat::cl_active},
        {"pg_warden_pgbouncer_clients_waiting",
         "Client connections waiting for a server connection (SHOW POOLS cl_waiting).",
         &PoolStat::cl_waiting},
        {"pg_warden_pgbouncer_servers_active",
         "Server connections linked to a client (SHOW POOLS sv_active).", &PoolStat::sv_active},
        {"pg_warden_pgbouncer_servers_idle", "Idle server connections (SHOW POOLS sv_idle).",
         &PoolStat::sv_idle},
        {"pg_warden_pgbouncer_servers_used",
         "Server connections idle long enough to need a check (SHOW POOLS sv_used).",
         &PoolStat::sv_used},
    };
    for (const auto& c : cols) {
      family(c.name, "gauge", c.help);
      for (const auto& s : st.servers)
        for (const auto& p : s.pools)
          sample(c.name,
                 fmt::format("{},database=\"{}\",user=\"{}\"", L(s.name), EscapeLabel(p.database),
                             EscapeLabel(p.user)),
                 p.*(c.field));
    }
    family("pg_warden_pgbouncer_max_wait_seconds", "gauge",
           "Longest client wait in the pool (SHOW POOLS maxwait).");
    for (const auto& s : st.servers)
      for (const auto& p : s.pools)
        sample("pg_warden_pgbouncer_max_wait_seconds",
               fmt::format("{},database=\"{}\",user=\"{}\"", L(s.name), EscapeLabel(p.database),
                           EscapeLabel(p.user)),
               p.maxwait_seconds);
    struct StatCol {
      const char* name;
      const char* help;
      double BouncerDbStat::*field;
    };
    const StatCol stat_cols[] = {
        {"pg_warden_pgbouncer_transactions_total",
         "Transactions pooled by pgbouncer (SHOW STATS total_xact_count).",
         &BouncerDbStat::xact_count},
        {"pg_warden_pgbouncer_queries_total",
         "Queries pooled by pgbouncer (SHOW STATS total_query_count).",
         &BouncerDbStat::query_count},
        {"pg_warden_pgbouncer_client_wait_seconds_total",
         "Time clients spent waiting for a server (SHOW STATS total_wait_time).",
         &BouncerDbStat::wait_seconds},
    };
    for (const auto& c : stat_cols) {
      family(c.name, "counter", c.help);
      for (const auto& s : st.servers)
        for (const auto& b : s.bouncer_stats)
          sample(c.name, fmt::format("{},database=\"{}\"", L(s.name), EscapeLabel(b.database)),
                 b.*(c.field));
    }
  }
  return out;
}

}  // namespace wardend

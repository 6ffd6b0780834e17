// The /metrics text: Prometheus exposition of wardend's status (see
// health.hpp, docs/monitoring.md: names, labels as postgres_exporter's
// datname/usename/application_name plus server, counters ending in _total).
// Pure: no locks.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "wardend/health.hpp"

namespace wardend {

namespace {

std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

std::string AppLabels(const std::string& server, const std::string& database,
                      const std::string& role, const std::string& application) {
  return fmt::format("server=\"{}\",datname=\"{}\",usename=\"{}\",application_name=\"{}\"",
                     EscapeLabel(server), EscapeLabel(database), EscapeLabel(role),
                     EscapeLabel(application));
}

}  // namespace

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

  family("pg_warden_build_info", "gauge", "Always 1: wardend's version and source commit.");
  out += fmt::format("pg_warden_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
                     EscapeLabel(BuildVersion()), EscapeLabel(BuildCommit()));
  family("pg_warden_up", "gauge", "1 if the last poll of the server succeeded.");
  for (const auto& s : st.servers) sample("pg_warden_up", L(s.name), s.last_poll_ok ? 1 : 0);
  bool any_member = false;
  for (const auto& s : st.servers) any_member = any_member || !s.cluster.empty();
  if (any_member) {
    family("pg_warden_patroni_member_info", "gauge",
           "A Patroni cluster's member as GET /cluster lists it (value 1; role and state in "
           "labels).");
    for (const auto& s : st.servers)
      if (!s.cluster.empty())
        sample("pg_warden_patroni_member_info",
               fmt::format("{},cluster=\"{}\",role=\"{}\",state=\"{}\"", L(s.name),
                           EscapeLabel(s.cluster), EscapeLabel(s.patroni_role),
                           EscapeLabel(s.patroni_state)),
               1);
    family("pg_warden_patroni_lag_bytes", "gauge",
           "Bytes a replica is behind its leader, as Patroni reports it (absent when unknown).");
    for (const auto& s : st.servers)
      if (!s.cluster.empty() && s.lag_bytes)
        sample("pg_warden_patroni_lag_bytes",
               fmt::format("{},cluster=\"{}\"", L(s.name), EscapeLabel(s.cluster)),
               static_cast<double>(*s.lag_bytes));
  }
  family("pg_warden_extension_installed", "gauge",
         "1 if the server has the pg_warden extension, 0 in degraded mode.");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_extension_installed", L(s.name), s.mode == "extension" ? 1 : 0);
  family("pg_warden_server_connections", "gauge", "Client connections on the server.");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_server_connections", L(s.name), s.connections);
  family("pg_warden_server_max_connections", "gauge", "max_connections of the server.");
  for (const auto& s : st.servers)
    if (s.polled) sample("pg_warden_server_max_connections", L(s.name), s.max_connections);
  family("pg_warden_server_connection_usage_ratio", "gauge",
         "Client connections / (max_connections - superuser_reserved_connections).");
  for (const auto& s : st.servers)
    if (s.polled)
      sample("pg_warden_server_connection_usage_ratio", L(s.name), s.usage_percent / 100.0);
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
      std::string base = AppLabels(s.name, a.database, a.role, a.application_name);
      int other = a.connections - a.active - a.idle - a.idle_in_transaction;
      sample("pg_warden_connections", base + ",state=\"active\"", a.active);
      sample("pg_warden_connections", base + ",state=\"idle\"", a.idle);
      sample("pg_warden_connections", base + ",state=\"idle_in_transaction\"",
             a.idle_in_transaction);
      sample("pg_warden_connections", base + ",state=\"other\"", other > 0 ? other : 0);
    }
  family("pg_warden_server_longest_idle_in_transaction_seconds", "gauge",
         "Longest time one client session of the server has been idle in a transaction (aborted "
         "or not; 0 when none is). It holds its locks and its snapshot all that time.");
  for (const auto& s : st.servers)
    if (s.polled)
      sample("pg_warden_server_longest_idle_in_transaction_seconds", L(s.name),
             s.longest_idle_in_transaction_seconds);
  family("pg_warden_longest_idle_in_transaction_seconds", "gauge",
         "Longest time one session of the database, role and application has been idle in a "
         "transaction (0 when none is).");
  for (const auto& s : st.servers)
    for (const auto& a : s.apps)
      sample("pg_warden_longest_idle_in_transaction_seconds",
             AppLabels(s.name, a.database, a.role, a.application_name),
             a.longest_idle_in_transaction_seconds);
  family("pg_warden_refused_logins_total", "counter",
         "Logins refused by a pg_warden budget (warden.app_usage.refused).");
  for (const auto& s : st.servers)
    for (const auto& c : s.counters)
      sample("pg_warden_refused_logins_total",
             AppLabels(s.name, c.database, c.role, c.application_name), c.refused);
  family("pg_warden_terminated_sessions_total", "counter",
         "Sessions pg_warden terminated (warden.app_usage.terminated).");
  for (const auto& s : st.servers)
    for (const auto& c : s.counters)
      sample("pg_warden_terminated_sessions_total",
             AppLabels(s.name, c.database, c.role, c.application_name), c.terminated);
  auto B = [&](const std::string& server, const BudgetUse& b) {
    return fmt::format("{},budget=\"{}\"", L(server), EscapeLabel(b.name));
  };
  family("pg_warden_budget_connections", "gauge",
         "Connections a budget of the extension counts now (warden.budget_usage).");
  for (const auto& s : st.servers)
    for (const auto& b : s.budgets)
      sample("pg_warden_budget_connections", B(s.name, b), b.connections);
  family("pg_warden_budget_max_connections", "gauge",
         "max_connections of a budget of the extension (warden.budget_usage).");
  for (const auto& s : st.servers)
    for (const auto& b : s.budgets)
      sample("pg_warden_budget_max_connections", B(s.name, b), b.max_connections);
  auto R = [&](const std::string& server, const std::string& role) {
    return fmt::format("{},usename=\"{}\"", L(server), EscapeLabel(role));
  };
  family("pg_warden_role_connections", "gauge", "Client connections per role.");
  for (const auto& s : st.servers)
    for (const auto& [role, rc] : s.roles)
      sample("pg_warden_role_connections", R(s.name, role), rc.connections);
  family("pg_warden_role_max_connections", "gauge",
         "max_connections of the role's [[role]] limit.");
  for (const auto& s : st.servers)
    for (const auto& b : cfg.role_limits)
      if (b.max_connections)
        sample("pg_warden_role_max_connections", R(s.name, b.role), *b.max_connections);
  family("pg_warden_role_admission_cap_connections", "gauge",
         "Connections a role may hold while wardend keeps its admission closed (present while "
         "closed).");
  for (const auto& s : st.servers)
    for (const auto& [role, limit] : s.admission_closed)
      sample("pg_warden_role_admission_cap_connections", R(s.name, role), limit);
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
    for (const char* kind :
         {"terminate", "close_admission", "open_admission", "pause_pool", "resume_pool"}) {
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
  family("pg_warden_active_alerts", "gauge", "Active alerts by name (a count).");
  for (const auto& s : st.servers) {
    std::map<std::string, int> n;
    for (const auto& [key, a] : s.alerts) n[key.substr(0, key.find(':'))]++;
    for (const auto& [name, count] : n)
      sample("pg_warden_active_alerts",
             fmt::format("{},alert=\"{}\"", L(s.name), EscapeLabel(name)), count);
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
                 fmt::format("{},datname=\"{}\",usename=\"{}\"", L(s.name), EscapeLabel(p.database),
                             EscapeLabel(p.user)),
                 p.*(c.field));
    }
    family("pg_warden_pgbouncer_clients", "gauge",
           "Client connections per database, user and application_name (SHOW CLIENTS).");
    for (const auto& s : st.servers)
      for (const auto& c : s.bouncer_clients)
        sample("pg_warden_pgbouncer_clients",
               fmt::format("{},datname=\"{}\",usename=\"{}\",application_name=\"{}\"", L(s.name),
                           EscapeLabel(c.database), EscapeLabel(c.user),
                           EscapeLabel(c.application_name)),
               c.clients);
    family("pg_warden_pgbouncer_max_wait_seconds", "gauge",
           "Longest client wait in the pool (SHOW POOLS maxwait).");
    for (const auto& s : st.servers)
      for (const auto& p : s.pools)
        sample("pg_warden_pgbouncer_max_wait_seconds",
               fmt::format("{},datname=\"{}\",usename=\"{}\"", L(s.name), EscapeLabel(p.database),
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
          sample(c.name, fmt::format("{},datname=\"{}\"", L(s.name), EscapeLabel(b.database)),
                 b.*(c.field));
    }
  }
  return out;
}

}  // namespace wardend

// Health, readiness, alerts and status documents (see health.hpp; /metrics is
// in metrics.cpp). Pure: no locks.
#include "wardend/health.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace wardend {

namespace {

int Rank(const std::string& s) { return s == "Unhealthy" ? 2 : s == "Degraded" ? 1 : 0; }

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
    if (s.last_poll_ok && s.enforce_off)
      desc += " (warden.enforce = off: wardend's actions are dry runs)";
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
        {"longest_idle_in_transaction_seconds",
         std::round(s.longest_idle_in_transaction_seconds * 1000) / 1000},
        {"role", !s.polled       ? "unknown"
                 : s.in_recovery ? "standby"
                                 : "primary"},
        {"mode", s.mode.empty() ? "unknown" : s.mode},
        {"reachable", s.last_poll_ok},
        {"enforce", !s.enforce_off},
        {"last_poll", s.last_ok_unix},
    };
    if (s.in_recovery)
      data["replay_lag_seconds"] =
          s.replay_lag_seconds ? nlohmann::json(*s.replay_lag_seconds) : nlohmann::json(nullptr);
    if (!s.admission_closed.empty()) data["admission_closed"] = s.admission_closed;
    if (!s.paused_pools.empty()) data["pgbouncer_paused"] = s.paused_pools;
    if (!s.cluster.empty()) {
      data["cluster"] = s.cluster;
      data["patroni_role"] = s.patroni_role;
      data["patroni_state"] = s.patroni_state;
      data["lag_bytes"] = s.lag_bytes ? nlohmann::json(*s.lag_bytes) : nlohmann::json(nullptr);
    }
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
    if (b.max_connections && b.scope == RoleScope::kServer && it != s.roles.end() &&
        it->second.connections > *b.max_connections)
      out["role_over_limit:" + b.role] = {
          "warning",
          fmt::format("{}: role {} holds {} connections, max_connections {}", s.name, b.role,
                      it->second.connections, *b.max_connections),
          0};
  }
  for (const auto& [role, limit] : s.admission_closed)
    out["admission_closed:" + role] = {
        "warning", fmt::format("{}: admission of role {} closed at {}", s.name, role, limit), 0};
  for (const auto& pool : s.paused_pools)
    out["pgbouncer_paused:" + pool] = {
        "critical", fmt::format("{}: pgbouncer pool {} paused (emergency step)", s.name, pool), 0};
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

nlohmann::json StatusJson(const Config& cfg, const DaemonStatus& st, double now_unix) {
  constexpr size_t kTop = 10;      // roles and applications per server
  constexpr size_t kActions = 20;  // newest actions
  nlohmann::json roles = nlohmann::json::array();
  nlohmann::json apps = nlohmann::json::array();
  for (const auto& s : st.servers) {
    std::vector<std::pair<std::string, int>> by_role;
    for (const auto& [role, rc] : s.roles) by_role.emplace_back(role, rc.connections);
    // Roles with a [[role]] limit are listed even when they hold nothing.
    for (const auto& b : cfg.role_limits)
      if (s.polled && !s.roles.count(b.role)) by_role.emplace_back(b.role, 0);
    auto fill = [&](const std::string& role) -> double {
      const RoleLimitConfig* b = cfg.RoleLimitFor(role);
      auto it = s.roles.find(role);
      int held = it == s.roles.end() ? 0 : it->second.connections;
      return b && b->max_connections && *b->max_connections > 0
                 ? static_cast<double>(held) / *b->max_connections
                 : -1.0;
    };
    std::stable_sort(by_role.begin(), by_role.end(), [&](const auto& x, const auto& y) {
      double fx = fill(x.first), fy = fill(y.first);
      if (fx != fy) return fx > fy;  // nearest its limit first, then the largest
      return x.second > y.second;
    });
    for (size_t i = 0; i < by_role.size() && i < kTop; ++i) {
      const auto& [role, held] = by_role[i];
      const RoleLimitConfig* b = cfg.RoleLimitFor(role);
      nlohmann::json r = {{"server", s.name}, {"usename", role}, {"connections", held}};
      r["max_connections"] =
          b && b->max_connections ? nlohmann::json(*b->max_connections) : nlohmann::json(nullptr);
      auto closed = s.admission_closed.find(role);
      r["admission_cap"] = closed == s.admission_closed.end() ? nlohmann::json(nullptr)
                                                              : nlohmann::json(closed->second);
      r["at_limit"] = b && b->max_connections && held >= *b->max_connections;
      roles.push_back(r);
    }
    std::vector<const AppUsage*> by_app;
    for (const auto& a : s.apps) by_app.push_back(&a);
    std::stable_sort(by_app.begin(), by_app.end(), [](const AppUsage* x, const AppUsage* y) {
      return x->connections > y->connections;
    });
    for (size_t i = 0; i < by_app.size() && i < kTop; ++i) {
      const AppUsage& a = *by_app[i];
      double refused = 0, terminated = 0;
      for (const auto& c : s.counters)
        if (c.database == a.database && c.role == a.role &&
            c.application_name == a.application_name) {
          refused = c.refused;
          terminated = c.terminated;
        }
      apps.push_back({{"server", s.name},
                      {"datname", a.database},
                      {"usename", a.role},
                      {"application_name", a.application_name},
                      {"connections", a.connections},
                      {"active", a.active},
                      {"idle", a.idle},
                      {"idle_in_transaction", a.idle_in_transaction},
                      {"longest_idle_in_transaction_seconds",
                       std::round(a.longest_idle_in_transaction_seconds * 1000) / 1000},
                      {"refused", refused},
                      {"terminated", terminated}});
    }
  }
  nlohmann::json budgets = nlohmann::json::array();
  for (const auto& s : st.servers) {
    std::vector<const BudgetUse*> by_fill;
    for (const auto& b : s.budgets) by_fill.push_back(&b);
    std::stable_sort(by_fill.begin(), by_fill.end(), [](const BudgetUse* x, const BudgetUse* y) {
      return static_cast<double>(x->connections) * std::max(1, y->max_connections) >
             static_cast<double>(y->connections) * std::max(1, x->max_connections);
    });
    for (size_t i = 0; i < by_fill.size() && i < kTop; ++i) {
      const BudgetUse& b = *by_fill[i];
      budgets.push_back({{"server", s.name},
                         {"name", b.name},
                         {"application", b.application},
                         {"role", b.role},
                         {"database", b.database},
                         {"connections", b.connections},
                         {"max_connections", b.max_connections},
                         {"at_limit", b.connections >= b.max_connections}});
    }
  }
  nlohmann::json actions = nlohmann::json::array();
  for (auto it = st.recent.rbegin(); it != st.recent.rend() && actions.size() < kActions; ++it)
    actions.push_back({{"at", it->at}, {"server", it->server}, {"text", it->text}});
  return {{"version", BuildVersion()},
          {"commit", BuildCommit()},
          {"now", now_unix},
          {"started", st.started},
          {"dry_run", st.dry_run},
          {"health", HealthJson(cfg.daemon, st, nullptr)},
          {"alerts", AlertsJson(st).at("alerts")},
          {"roles", roles},
          {"applications", apps},
          {"budgets", budgets},
          {"actions", actions}};
}

}  // namespace wardend

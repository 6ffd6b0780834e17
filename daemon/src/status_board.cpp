// The status board (see status_board.hpp). Lock: StatusBoard::mu_, taken by
// every public method; nothing below it takes another lock.
#include "wardend/status_board.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#include "wardend/clock.hpp"
#include "wardend/fold.hpp"
#include "wardend/health.hpp"
#include "wardend/status_shm.hpp"

namespace wardend {

namespace {

constexpr size_t kRecentActions = 64;

}  // namespace

StatusBoard::StatusBoard() = default;
StatusBoard::~StatusBoard() = default;

void StatusBoard::Start(const Config& cfg, int pid, double started_unix, bool dry_run) {
  std::lock_guard<std::mutex> g(mu_);
  status_.pid = pid;
  status_.started = started_unix;
  status_.dry_run = dry_run;
  status_.servers.clear();
  for (const auto& sc : cfg.servers) {
    ServerStatus st;
    st.name = sc.name;
    st.pgbouncer_configured = !sc.pgbouncer_dsn.empty();
    status_.servers.push_back(st);
  }
}

void StatusBoard::Reconfigure(const Config& cfg, bool dry_run) {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<ServerStatus> servers;
  for (const auto& sc : cfg.servers) {
    ServerStatus st = StatusOf(sc.name);
    st.pgbouncer_configured = !sc.pgbouncer_dsn.empty();
    servers.push_back(std::move(st));
  }
  status_.servers = std::move(servers);
  status_.dry_run = dry_run;
  Publish();
}

void StatusBoard::AttachSegment(std::unique_ptr<StatusSegment> segment) {
  std::lock_guard<std::mutex> g(mu_);
  segment_ = std::move(segment);
  Publish();
}

void StatusBoard::DetachSegment() {
  std::lock_guard<std::mutex> g(mu_);
  segment_.reset();
}

DaemonStatus StatusBoard::Copy() const {
  std::lock_guard<std::mutex> g(mu_);
  return status_;
}

bool StatusBoard::AllPolledOk() const {
  std::lock_guard<std::mutex> g(mu_);
  bool ok = true;
  for (const auto& st : status_.servers) ok = ok && st.last_poll_ok;
  return ok;
}

void StatusBoard::Connected(const std::string& server, bool extension, AdmissionKind admission) {
  std::lock_guard<std::mutex> g(mu_);
  ServerStatus& st = StatusOf(server);
  st.connected = true;
  st.mode = extension ? "extension" : "degraded";
  st.admission = ToString(admission);
}

void StatusBoard::PollOk(const Config& cfg, const std::string& server, const Snapshot& snap,
                         double poll_seconds, const ServerState& state) {
  std::lock_guard<std::mutex> g(mu_);
  ServerStatus& st = StatusOf(server);
  bool was_ok = st.last_poll_ok;
  st.connected = true;
  st.polled = true;
  st.last_poll_ok = true;
  st.error.clear();
  st.last_ok_unix = Wall();
  st.poll_seconds = poll_seconds;
  st.connections = snap.connections;
  st.max_connections = snap.max_connections;
  st.reserved = snap.reserved;
  st.usage_percent = snap.usage_percent;
  st.degraded_percent = snap.degraded_percent;
  st.unhealthy_percent = snap.unhealthy_percent;
  st.in_recovery = snap.in_recovery;
  st.enforce_off = snap.enforce_off;
  st.replay_lag_seconds = snap.replay_lag_seconds;
  st.active = snap.Active();
  st.idle = snap.Idle();
  st.idle_in_transaction = snap.IdleInTransaction();
  st.longest_idle_seconds = snap.LongestIdleSeconds();
  st.longest_idle_in_transaction_seconds = snap.LongestIdleInTransactionSeconds();
  // Bounded: the largest applications and roles, the rest folded into "<other>".
  size_t cap = static_cast<size_t>(cfg.daemon.metrics_max_applications);
  st.apps = FoldApplications(snap.apps, cap);
  st.counters = snap.counters;
  st.budgets = snap.budgets;
  st.roles = FoldRoles(snap.Roles(), cap,
                       [&](const std::string& role) { return cfg.RoleLimitFor(role) != nullptr; });
  st.admission_closed = state.applied;
  st.paused_pools.assign(state.paused.begin(), state.paused.end());
  st.emergency_active.clear();
  for (size_t i = 0; i < state.emergency_active.size() && i < cfg.emergencies.size(); ++i)
    if (state.emergency_active[i]) st.emergency_active.push_back(cfg.emergencies[i].at_percent);
  if (!was_ok)
    spdlog::info("[{}] polled: {}/{} connections ({:.1f}%), {}", server, snap.connections,
                 snap.max_connections, snap.usage_percent,
                 snap.in_recovery ? "standby" : "primary");
  RefreshAlerts(cfg, st);
  Publish();
}

void StatusBoard::PollError(const Config& cfg, const std::string& server, bool connected,
                            const std::string& error) {
  std::lock_guard<std::mutex> g(mu_);
  ServerStatus& st = StatusOf(server);
  st.connected = connected;
  st.last_poll_ok = false;
  st.error = error;
  RefreshAlerts(cfg, st);
  Publish();
}

void StatusBoard::Bouncer(const Config& cfg, const std::string& server, BouncerReport report) {
  std::lock_guard<std::mutex> g(mu_);
  ServerStatus& st = StatusOf(server);
  st.pgbouncer_configured = true;
  st.pgbouncer_ok = report.ok;
  st.pgbouncer_error = std::move(report.error);
  st.pools = std::move(report.pools);
  st.bouncer_stats = std::move(report.stats);
  st.bouncer_clients = std::move(report.clients);
  RefreshAlerts(cfg, st);
  Publish();
}

void StatusBoard::Action(const std::string& server, const std::string& kind,
                         const std::string& text) {
  std::lock_guard<std::mutex> g(mu_);
  StatusOf(server).actions_total[kind]++;
  status_.recent.push_back({Wall(), server, text});
  while (status_.recent.size() > kRecentActions) status_.recent.pop_front();
}

void StatusBoard::JournalError(const std::string& server, const std::string& error) {
  std::lock_guard<std::mutex> g(mu_);
  StatusOf(server).journal_error = error;
}

void StatusBoard::Member(const std::string& server, const std::string& cluster,
                         const std::string& role, const std::string& state,
                         std::optional<int64_t> lag_bytes) {
  std::lock_guard<std::mutex> g(mu_);
  ServerStatus& st = StatusOf(server);
  st.cluster = cluster;
  st.patroni_role = role;
  st.patroni_state = state;
  st.lag_bytes = lag_bytes;
  Publish();
}

void StatusBoard::ConfigProblems(const std::string& server, std::vector<std::string> problems) {
  std::lock_guard<std::mutex> g(mu_);
  StatusOf(server).config_problems = std::move(problems);
  Publish();
}

ServerStatus& StatusBoard::StatusOf(const std::string& name) {
  for (auto& st : status_.servers)
    if (st.name == name) return st;
  status_.servers.push_back(ServerStatus{});
  status_.servers.back().name = name;
  return status_.servers.back();
}

void StatusBoard::RefreshAlerts(const Config& cfg, ServerStatus& st) {
  auto now = CurrentAlerts(cfg, st);
  double t = Wall();
  for (auto& [key, a] : now) {
    auto old = st.alerts.find(key);
    if (old != st.alerts.end()) {
      a.since = old->second.since;
    } else {
      a.since = t;
      spdlog::warn("[{}] alert {}: {}", st.name, key, a.message);
    }
  }
  for (const auto& [key, a] : st.alerts)
    if (!now.count(key)) spdlog::info("[{}] alert {} cleared", st.name, key);
  st.alerts = std::move(now);
}

void StatusBoard::Publish() {
  if (segment_) segment_->Publish(status_);
}

}  // namespace wardend

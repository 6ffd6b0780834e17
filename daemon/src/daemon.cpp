// wardend's main loop (see daemon.hpp): connect, poll, decide, hand over to
// the executor, report; signals, reload and shutdown.
//
// Threads: the main thread (signals, reload, shutdown), one thread per
// server (connect, poll, decide, act), httplib's threads (read status copies).
// Locks: cfg_mu_ (the current Config pointer), the StatusBoard's mutex,
// Journal's own mutex. Never two at once. A Slot is touched only by its
// thread, or by the main thread while no worker runs.
#include "wardend/daemon.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <random>
#include <tuple>

#include "wardend/admission.hpp"
#include "wardend/backoff.hpp"
#include "wardend/clock.hpp"
#include "wardend/http.hpp"
#include "wardend/log.hpp"
#include "wardend/status_shm.hpp"

namespace wardend {

namespace {

volatile sig_atomic_t g_term = 0;    // SIGTERM/SIGINT count
volatile sig_atomic_t g_reload = 0;  // SIGHUP

extern "C" void OnTerm(int) { g_term = g_term + 1; }
extern "C" void OnHup(int) { g_reload = 1; }

}  // namespace

void InstallSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnTerm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sa.sa_handler = OnHup;
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

Daemon::Daemon(Options opts, Config cfg)
    : opts_(std::move(opts)), cfg_(std::make_shared<const Config>(std::move(cfg))) {}

Daemon::~Daemon() = default;

std::shared_ptr<const Config> Daemon::config() const {
  std::lock_guard<std::mutex> g(cfg_mu_);
  return cfg_;
}

void Daemon::WarnOnce(Slot& s, const std::string& key, const std::string& msg) {
  if (s.warned.insert(key).second) spdlog::warn("[{}] {}", s.server.name, msg);
}

int Daemon::Run() {
  auto cfg = config();
  try {
    lock_ = std::make_unique<InstanceLock>(cfg->daemon.state_file);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  journal_ = std::make_unique<Journal>(cfg->daemon.state_file);
  try {
    journal_->Load();
  } catch (const std::exception& e) {
    spdlog::error("state file {}: {} (move it away after checking what it holds)",
                  cfg->daemon.state_file, e.what());
    return 1;
  }
  for (const auto& e : journal_->Entries())
    if (e.mechanism == AdmissionKind::kPausePool)
      spdlog::warn(
          "state file: change left in force by a previous run: server {}, pgbouncer {} pool {} "
          "paused; it will be resumed once no emergency step needs it",
          e.server, e.pgbouncer, e.pool);
    else
      spdlog::warn(
          "state file: change left in force by a previous run: server {}, role {} ({}, "
          "limit {} -> {}); it will be undone",
          e.server, e.role, ToString(e.mechanism), e.original_limit, e.applied_limit);

  file_cfg_ = *cfg;
  if (!file_cfg_.clusters.empty()) {
    // Members come from Patroni: ask once before the first poll.
    RefreshFleet(file_cfg_);
    next_fleet_ = Mono() + static_cast<double>(file_cfg_.daemon.interval.count()) / 1000.0;
    {
      std::lock_guard<std::mutex> g(cfg_mu_);
      cfg_ = std::make_shared<const Config>(Effective(file_cfg_));
    }
    cfg = config();
  }
  board_.Start(*cfg, static_cast<int>(getpid()), Wall(), DryRun(*cfg));
  for (const auto& [name, pc] : fleet_)
    for (const auto& m : pc.members)
      board_.Member(name + "/" + m.name, name, m.role, m.state, m.lag_bytes);
  for (const auto& sc : cfg->servers) slots_[sc.name] = MakeSlot(sc);
  spdlog::info(
      "wardend {} starting: {} server(s), {} role limit(s), {} emergency step(s), interval {}{}",
      getpid(), cfg->servers.size(), cfg->role_limits.size(), cfg->emergencies.size(),
      FormatDuration(cfg->daemon.interval), DryRun(*cfg) ? ", DRY RUN" : "");
  for (const auto& sc : cfg->servers) spdlog::info("[{}] dsn: {}", sc.name, MaskDsn(sc.dsn));

  if (opts_.once) {
    for (auto& [name, slot] : slots_) {
      try {
        Step(*slot, *cfg);
      } catch (const std::exception& e) {
        spdlog::error("[{}] unexpected error: {}", name, MaskDsn(e.what()));
      }
    }
    spdlog::info("--once: done");
    return board_.AllPolledOk() ? 0 : 1;
  }

  try {
    board_.AttachSegment(
        std::make_unique<StatusSegment>(SegmentName(cfg->daemon.state_file), opts_.config_path));
  } catch (const std::exception& e) {
    spdlog::warn("no shared-memory status segment (wardenctl status will not work): {}", e.what());
  }
  if (!cfg->daemon.http.empty()) {
    http_ =
        std::make_unique<HttpServer>([this](std::shared_ptr<const Config>* c, DaemonStatus* st) {
          *c = config();
          *st = board_.Copy();
        });
    try {
      http_->Start(cfg->daemon.http);
      spdlog::info("HTTP on {} (/health /health/ready /metrics /alerts){}", cfg->daemon.http,
                   cfg->daemon.http_token.empty() ? "" : ", bearer token required");
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
      return 1;
    }
  }

  StartWorkers();
  bool ready = false;
  while (true) {
    if (g_term) break;
    if (g_reload) {
      g_reload = 0;
      if (ready) notifier_.Reloading();
      Reload();
      if (ready) notifier_.Ready(fmt::format("polling {} server(s)", slots_.size()));
    }
    // [[cluster]]s: members from Patroni every interval; a member joining or
    // leaving changes the server set without SIGHUP.
    if (!file_cfg_.clusters.empty() && Mono() >= next_fleet_) {
      next_fleet_ = Mono() + static_cast<double>(file_cfg_.daemon.interval.count()) / 1000.0;
      RefreshFleet(file_cfg_);
      Config eff = Effective(file_cfg_);
      auto cur = config();
      auto key = [](const std::vector<ServerConfig>& v) {
        std::vector<std::tuple<std::string, std::string, bool>> k;
        k.reserve(v.size());
        for (const auto& sc : v) k.emplace_back(sc.name, sc.dsn, sc.acts_local);
        return k;
      };
      if (key(eff.servers) != key(cur->servers)) Resync(std::move(eff), false);
    }
    // systemd: ready once every server was polled once (reachable or not);
    // the watchdog is fed only while no poll loop is stuck.
    if (!ready && polls_.Polled() >= slots_.size()) {
      ready = true;
      notifier_.Ready(fmt::format("polling {} server(s)", slots_.size()));
    }
    notifier_.FeedWatchdog(!polls_.AnyStuck(notifier_.watchdog_timeout()));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  spdlog::info("stopping: undoing every change in force (a second SIGTERM skips this)");
  notifier_.Stopping();
  shutdown_ = true;
  std::thread watcher([this] {
    while (shutdown_ && !fast_) {
      if (g_term > 1) fast_ = true;
      // Undoing may take a while; TimeoutStopSec bounds it, not the watchdog.
      notifier_.FeedWatchdog(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  StopWorkers();
  shutdown_ = false;
  watcher.join();
  if (http_) http_->Stop();
  size_t left = journal_->Entries().size();
  if (left)
    spdlog::warn(
        "{} change(s) could not be undone now; they stay in {} and are undone at the next start",
        left, cfg_->daemon.state_file);
  board_.DetachSegment();
  spdlog::info("stopped");
  return 0;
}

std::unique_ptr<Daemon::Slot> Daemon::MakeSlot(const ServerConfig& sc) {
  auto slot = std::make_unique<Slot>();
  slot->server = sc;
  const std::string name = sc.name;
  Executor::Events events;
  events.action = [this, name](const std::string& kind, const std::string& text) {
    board_.Action(name, kind, text);
  };
  events.journal_error = [this, name](const std::string& error) {
    board_.JournalError(name, error);
  };
  slot->executor = std::make_unique<Executor>(name, *journal_, std::move(events));
  return slot;
}

void Daemon::StartWorkers() {
  stop_workers_ = false;
  for (auto& [name, slot] : slots_) {
    Slot* s = slot.get();
    s->thread = std::thread([this, s] { Worker(s); });
  }
}

void Daemon::StopWorkers() {
  stop_workers_ = true;
  wake_.notify_all();
  for (auto& [name, slot] : slots_)
    if (slot->thread.joinable()) slot->thread.join();
}

void Daemon::WaitFor(double seconds) {
  std::unique_lock<std::mutex> lk(wake_mu_);
  wake_.wait_for(lk, std::chrono::duration<double>(seconds),
                 [this] { return stop_workers_.load(); });
}

void Daemon::Worker(Slot* s) {
  while (!stop_workers_) {
    auto cfg = config();
    double t0 = Mono();
    polls_.Begin(s);
    try {
      Step(*s, *cfg);
    } catch (const std::exception& e) {  // a bug must not take the other servers down
      spdlog::error("[{}] unexpected error, reconnecting: {}", s->server.name, MaskDsn(e.what()));
      s->conn.reset();
    }
    polls_.End(s);
    double left = cfg->daemon.interval.count() / 1000.0 - (Mono() - t0);
    if (left > 0) WaitFor(left);
  }
  if (shutdown_ && !fast_) {
    try {
      UndoAll(*s, *config(), "wardend stopping");
    } catch (const std::exception& e) {
      spdlog::error("[{}] undo at stop failed: {}", s->server.name, MaskDsn(e.what()));
    }
  }
}

void Daemon::PollError(Slot& s, const Config& cfg, const std::string& error) {
  board_.PollError(cfg, s.server.name, s.conn && s.conn->ok(), error);
}

void Daemon::Step(Slot& s, const Config& cfg) {
  if (!EnsureConnected(s, cfg)) return;
  if (!DryRun(cfg) && !s.enforce_off) {
    // Before the poll, which a lock on the extension's views may hold up.
    ConnectionTarget target(*s.conn);
    s.executor->Renew(target, s.state, Mono());
    if (!s.conn->ok()) {
      s.conn.reset();
      return;
    }
  }
  if ((s.redetect || Mono() - s.detected_at > cfg.daemon.probe_interval.count() / 1000.0) &&
      !Redetect(s, cfg))
    return;
  Snapshot snap;
  double t0 = Mono();
  try {
    snap = s.conn->Poll();
  } catch (const std::exception& e) {
    auto* pe = dynamic_cast<const PgError*>(&e);
    std::string msg = MaskDsn(e.what());
    spdlog::warn("[{}] poll failed: {}", s.server.name, msg);
    if (!pe || pe->connection_lost() || !s.conn->ok()) s.conn.reset();
    PollError(s, cfg, msg);
    return;
  }
  double poll_seconds = Mono() - t0;
  s.in_recovery = snap.in_recovery;
  if (snap.enforce_off != s.enforce_off) {
    if (snap.enforce_off)
      spdlog::warn("[{}] warden.enforce is off there: wardend's actions are dry runs too",
                   s.server.name);
    else
      spdlog::info("[{}] warden.enforce is on again: wardend acts", s.server.name);
    s.enforce_off = snap.enforce_off;
  }
  if (!s.server.cluster.empty()) ClusterCaps(s, cfg, snap);
  if (!s.roles_checked) CheckRoles(s, cfg);
  Decision d = Decide(cfg, snap, s.state, Mono());
  if (!s.server.acts_local) {
    // Another member's wardend acts here; this one only places the caps of
    // cluster-scoped limits (while it is the cluster's actor) and lifts them.
    auto cluster_role = [&cfg](const std::string& role) {
      const RoleLimitConfig* r = cfg.RoleLimitFor(role);
      return r && r->scope == RoleScope::kCluster;
    };
    d.actions.erase(std::remove_if(d.actions.begin(), d.actions.end(),
                                   [&](const Action& a) {
                                     return a.kind == Action::Kind::kTerminate ||
                                            !cluster_role(a.role);
                                   }),
                    d.actions.end());
  }
  for (const auto& ev : d.events) spdlog::warn("[{}] {}", s.server.name, ev);
  {
    ConnectionTarget target(*s.conn, s.server.pgbouncer_dsn,
                            static_cast<int>(cfg.daemon.statement_timeout.count()));
    s.executor->Apply(target, s.state, snap.in_recovery, d.actions, DryRun(cfg) || snap.enforce_off,
                      [this] { return stop_workers_ && fast_; });
  }
  if (!s.conn->ok()) s.conn.reset();
  board_.PollOk(cfg, s.server.name, snap, poll_seconds, s.state);
  if (!s.server.pgbouncer_dsn.empty()) {
    BouncerReport report = s.bouncer.Poll(s.server.pgbouncer_dsn);
    if (!report.ok)
      WarnOnce(s, "pgbouncer", fmt::format("pgbouncer admin console: {}", report.error));
    board_.Bouncer(cfg, s.server.name, std::move(report));
  }
}

void Daemon::Reload() {
  auto old = config();
  Config fresh;
  try {
    fresh = LoadConfig(opts_.config_path);
  } catch (const ConfigError& e) {
    spdlog::error("reload: {}; keeping the previous configuration", e.what());
    return;
  }
  for (const auto& w : fresh.warnings) spdlog::warn("{}", w);
  if (fresh.daemon.state_file != old->daemon.state_file)
    spdlog::warn("reload: state_file changes need a restart; keeping {}", old->daemon.state_file);
  fresh.daemon.state_file = old->daemon.state_file;
  if (fresh.daemon.http != old->daemon.http)
    spdlog::warn("reload: http address changes need a restart; still listening on {}",
                 old->daemon.http);
  fresh.daemon.http = old->daemon.http;
  file_cfg_ = fresh;
  if (!file_cfg_.clusters.empty()) RefreshFleet(file_cfg_);
  Resync(Effective(file_cfg_), true);
}

// Replaces the server set (a reload, or a cluster's members changed): the
// kept servers keep their slot and connection, new ones get one, removed ones
// have what wardend placed there undone (a member that is gone cannot be
// reached: its changes stay in the state file until they can be).
void Daemon::Resync(Config fresh, bool reload) {
  auto old = config();
  StopWorkers();
  // The logger is replaced only while no server thread logs (the HTTP threads do not).
  if (reload) SetupLogging(fresh.daemon.log_format, fresh.daemon.log_level);
  std::map<std::string, std::unique_ptr<Slot>> next;
  for (const auto& sc : fresh.servers) {
    auto it = slots_.find(sc.name);
    std::unique_ptr<Slot> slot;
    if (it != slots_.end()) {
      slot = std::move(it->second);
      slots_.erase(it);
      if (slot->server.dsn != sc.dsn) slot->conn.reset();
      if (slot->server.pgbouncer_dsn != sc.pgbouncer_dsn) slot->bouncer.Reset();
    } else {
      slot = MakeSlot(sc);
    }
    slot->server = sc;
    if (reload) slot->redetect = true;
    slot->roles_checked = false;
    if (fresh.emergencies.size() != old->emergencies.size()) {
      slot->state.emergency_active.clear();
      slot->state.emergency_caps.clear();
    }
    next[sc.name] = std::move(slot);
  }
  // Servers removed from the file: undo what is in force there, then let go.
  for (auto& [name, slot] : slots_) {
    try {
      UndoAll(*slot, *old,
              reload ? "server removed from the configuration" : "member left the cluster");
    } catch (const std::exception& e) {
      spdlog::error("[{}] undo failed: {}", name, MaskDsn(e.what()));
    }
    if (!slot->server.cluster.empty()) {
      std::lock_guard<std::mutex> g(fleet_mu_);
      shared_[slot->server.cluster].counts.erase(name);
    }
  }
  slots_ = std::move(next);
  {
    std::lock_guard<std::mutex> g(cfg_mu_);
    cfg_ = std::make_shared<const Config>(std::move(fresh));
  }
  auto cfg = config();
  board_.Reconfigure(*cfg, DryRun(*cfg));
  if (reload)
    spdlog::info("reloaded {}: {} server(s), {} role limit(s), {} emergency step(s){}",
                 opts_.config_path, cfg->servers.size(), cfg->role_limits.size(),
                 cfg->emergencies.size(), DryRun(*cfg) ? ", DRY RUN" : "");
  else
    spdlog::info("cluster members changed: now {} server(s)", cfg->servers.size());
  for (const auto& [name, pc] : fleet_)
    for (const auto& m : pc.members)
      board_.Member(name + "/" + m.name, name, m.role, m.state, m.lag_bytes);
  StartWorkers();
}

}  // namespace wardend

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
#include "wardend/http.hpp"
#include "wardend/log.hpp"
#include "wardend/status_shm.hpp"

namespace wardend {

namespace {

volatile sig_atomic_t g_term = 0;    // SIGTERM/SIGINT count
volatile sig_atomic_t g_reload = 0;  // SIGHUP

extern "C" void OnTerm(int) { g_term = g_term + 1; }
extern "C" void OnHup(int) { g_reload = 1; }

double Mono() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double Wall() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// How long an override wardend sets lasts unless renewed: a few intervals,
// never under 10 s (a slow poll or a short network blip must not lift it).
double LeaseSeconds(const Config& cfg) {
  return std::max(10.0, 4.0 * static_cast<double>(cfg.daemon.interval.count()) / 1000.0);
}

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

bool Daemon::EnsureConnected(Slot& s, const Config& cfg) {
  if (s.conn && s.conn->ok()) return true;
  if (s.conn) {
    spdlog::warn("[{}] connection lost", s.server.name);
    s.conn.reset();
  }
  double now = Mono();
  if (now < s.next_attempt) return false;
  try {
    s.conn = Connection::Open(s.server.dsn,
                              static_cast<int>((cfg.daemon.connect_timeout.count() + 999) / 1000),
                              static_cast<int>(cfg.daemon.statement_timeout.count()));
  } catch (const PgError& e) {
    static thread_local std::mt19937 rng{std::random_device{}()};
    s.backoff_ms =
        NextBackoffMs(s.backoff_ms, static_cast<double>(cfg.daemon.reconnect_min.count()),
                      static_cast<double>(cfg.daemon.reconnect_max.count()),
                      std::uniform_real_distribution<double>(0, 1)(rng));
    s.next_attempt = now + s.backoff_ms / 1000.0;
    std::string msg = MaskDsn(e.what());
    spdlog::warn("[{}] cannot connect: {} (next attempt in {:.0f} ms)", s.server.name, msg,
                 s.backoff_ms);
    PollError(s, cfg, msg);
    return false;
  }
  s.backoff_ms = 0;
  s.next_attempt = 0;
  s.conn->set_lease_seconds(LeaseSeconds(cfg));
  s.executor->set_lease(LeaseSeconds(cfg));
  s.in_recovery = s.conn->caps().in_recovery;
  s.detected_at = Mono();
  s.redetect = false;
  s.roles_checked = false;
  const auto& caps = s.conn->caps();
  if (caps.extension)
    spdlog::info(
        "[{}] connected (pid {}, {}, mode extension, admission via {})", s.server.name,
        s.conn->backend_pid(), s.in_recovery ? "standby" : "primary",
        caps.close_admission ? "warden.close_admission" : "ALTER ROLE (no warden.close_admission)");
  else
    spdlog::warn(
        "[{}] connected (pid {}, {}); the pg_warden extension is absent: DEGRADED MODE "
        "(pg_stat_activity, pg_terminate_backend, ALTER ROLE)",
        s.server.name, s.conn->backend_pid(), s.in_recovery ? "standby" : "primary");
  if (!caps.superuser)
    WarnOnce(s, "nosuper",
             "connected as a non-superuser: terminating superuser sessions and ALTER ROLE "
             "of superusers will fail");
  board_.Connected(s.server.name, caps.extension, ChooseMechanism(caps));
  ConnectionTarget target(*s.conn);
  try {
    // The journal knows this server by its identity from now on (a renamed
    // [[server]] finds the entries written under its old name).
    s.executor->SetIdentity(caps.identity);
  } catch (const std::exception& e) {
    spdlog::error("[{}] state file {}: {}", s.server.name, journal_->path(), e.what());
  }
  if (caps.identity.empty())
    WarnOnce(s, "noidentity",
             "cannot read the server's system identifier (pg_control_system): the state file "
             "knows this server by its [[server]] name only");
  if (!s.recovered) {
    // First connection since start: undo what a previous run left in force.
    s.executor->UndoAll(target, s.in_recovery, "left by a previous run");
    s.recovered = true;
  } else if (!s.server.cluster.empty()) {
    // A cluster member reconnected to: Patroni may have restarted it (a
    // switchover demotes by restarting), so what wardend placed there may be
    // gone or have lost its reason. Reopen (a no-op where the override died
    // with the server) and let this poll's decisions place again what still
    // has a reason: nothing stays behind, in the server or the state file.
    s.executor->UndoAll(target, s.in_recovery, "reconnected to a cluster member");
    // Its sessions may be gone with it: the reasons are weighed afresh.
    s.state.roles.clear();
    s.state.emergency_active.clear();
    s.state.emergency_caps.clear();
    std::set<std::string> kept;
    for (const auto& e : journal_->EntriesFor(s.server.name)) kept.insert(e.role);
    for (auto it = s.state.applied.begin(); it != s.state.applied.end();)
      it = kept.count(it->first) ? std::next(it) : s.state.applied.erase(it);
  } else {
    try {
      s.executor->Reconcile(target, s.state);
    } catch (const PgError& e) {
      // Could not tell: what is journaled stays, and so does what the decisions know.
      spdlog::warn("[{}] cannot read warden.admission_overrides: {}", s.server.name, e.what());
    }
  }
  if (!s.conn->ok()) s.conn.reset();
  return s.conn != nullptr;
}

// The extension may be created or dropped while wardend runs: look again
// every minute and after SIGHUP, on the open connection.
bool Daemon::Redetect(Slot& s, const Config& cfg) {
  bool had = s.conn->caps().extension;
  try {
    s.conn->Detect();
  } catch (const PgError& e) {
    spdlog::warn("[{}] capability detection failed: {}", s.server.name, e.what());
    if (e.connection_lost() || !s.conn->ok()) s.conn.reset();
    PollError(s, cfg, MaskDsn(e.what()));
    return false;
  }
  s.detected_at = Mono();
  s.redetect = false;
  const auto& caps = s.conn->caps();
  if (caps.extension != had) {
    if (caps.extension)
      spdlog::info("[{}] the pg_warden extension is now present: mode extension", s.server.name);
    else
      spdlog::warn("[{}] the pg_warden extension is gone: DEGRADED MODE", s.server.name);
  }
  board_.Connected(s.server.name, caps.extension, ChooseMechanism(caps));
  return true;
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
    ConnectionTarget target(*s.conn);
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

// A [[role]] naming no role on the server is a typo until proven otherwise:
// check-config has no server, so it is checked here, at the first poll after
// each connection and reload (an error in the log and in /health).
void Daemon::CheckRoles(Slot& s, const Config& cfg) {
  std::vector<std::string> names;
  for (const auto& r : cfg.role_limits) names.push_back(r.role);
  std::vector<std::string> problems;
  if (!names.empty()) {
    try {
      for (const auto& role : s.conn->MissingRoles(names)) {
        int i = 0;
        for (; i < static_cast<int>(cfg.role_limits.size()); ++i)
          if (cfg.role_limits[static_cast<size_t>(i)].role == role) break;
        problems.push_back(fmt::format(
            "{}: role[{}].name: role \"{}\" does not exist on this server (a typo?): its "
            "limits never apply",
            cfg.path, i, role));
      }
    } catch (const PgError& e) {
      spdlog::warn("[{}] cannot check the [[role]] names: {}", s.server.name, e.what());
      return;
    }
  }
  for (const auto& p : problems) spdlog::error("[{}] configuration: {}", s.server.name, p);
  board_.ConfigProblems(s.server.name, problems);
  s.roles_checked = true;
}

void Daemon::UndoAll(Slot& s, const Config& cfg, const std::string& why) {
  if (journal_->EntriesFor(s.server.name, s.conn ? s.conn->caps().identity : "").empty()) return;
  if (!s.conn || !s.conn->ok()) {
    s.next_attempt = 0;
    s.recovered = true;  // undo below is the recovery
    if (!EnsureConnected(s, cfg)) return;
  }
  ConnectionTarget target(*s.conn);
  s.executor->UndoAll(target, s.in_recovery, why);
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

namespace wardend {

Config Daemon::Effective(const Config& file) const {
  Config c = file;
  for (const auto& cl : file.clusters) {
    auto it = fleet_.find(cl.name);
    if (it == fleet_.end()) continue;
    for (const auto& m : it->second.members) {
      ServerConfig sc;
      sc.name = cl.name + "/" + m.name;
      sc.dsn = MemberDsn(cl.dsn, m);
      sc.cluster = cl.name;
      sc.member = m.name;
      sc.acts_local = cl.member.empty() || cl.member == m.name;
      c.servers.push_back(std::move(sc));
    }
  }
  return c;
}

void Daemon::RefreshFleet(const Config& file) {
  int timeout_ms = static_cast<int>(
      std::clamp<long long>(static_cast<long long>(file.daemon.interval.count()), 200, 2000));
  for (const auto& cl : file.clusters) {
    PatroniCluster pc;
    try {
      pc = FetchCluster(cl.patroni, timeout_ms);
    } catch (const PatroniError& e) {
      // Keep the last members known: Patroni's API down is not the members gone.
      if (fleet_error_[cl.name] != e.what()) spdlog::warn("[{}] {}", cl.name, e.what());
      fleet_error_[cl.name] = e.what();
      continue;
    }
    if (fleet_error_.erase(cl.name)) spdlog::info("[{}] Patroni answers again", cl.name);
    auto it = fleet_.find(cl.name);
    const PatroniCluster* before = it == fleet_.end() ? nullptr : &it->second;
    for (const auto& m : pc.members) {
      const PatroniMember* was = before ? before->Find(m.name) : nullptr;
      if (!was)
        spdlog::info("[{}/{}] member found: {} {} at {}:{}", cl.name, m.name, m.role, m.state,
                     m.host, m.port);
      else if (was->role != m.role || was->state != m.state)
        spdlog::info("[{}/{}] now {} {} (was {} {})", cl.name, m.name, m.role, m.state, was->role,
                     was->state);
      board_.Member(cl.name + "/" + m.name, cl.name, m.role, m.state, m.lag_bytes);
    }
    if (before)
      for (const auto& m : before->members)
        if (!pc.Find(m.name)) spdlog::info("[{}/{}] member gone from Patroni", cl.name, m.name);
    if (!cl.member.empty() && !pc.Find(cl.member))
      WarnOnceFleet(cl.name, "member \"" + cl.member + "\" is not in Patroni's member list");
    const PatroniMember* leader = pc.RunningLeader();
    // The cluster's actor for cluster-scoped limits: the wardend beside the
    // member holding Patroni's leader key (or the one wardend watching the
    // whole cluster). While no leader runs (the seconds of a switchover) or
    // Patroni is paused, the actor does not change.
    {
      std::lock_guard<std::mutex> g(fleet_mu_);
      FleetShared& f = shared_[cl.name];
      bool actor = leader && !pc.paused ? cl.member.empty() || leader->name == cl.member : f.actor;
      if (f.actor != actor)
        spdlog::info("[{}] {} cluster-scoped limits (leader: {})", cl.name,
                     actor ? "acting on" : "not acting on", leader ? leader->name : "none");
      if (actor && !f.actor) f.actor_since = Mono();
      f.actor = actor;
    }
    fleet_[cl.name] = std::move(pc);
  }
}

void Daemon::ClusterCaps(Slot& s, const Config& cfg, const Snapshot& snap) {
  const double now = Mono();
  const double fresh_for = 3.0 * static_cast<double>(cfg.daemon.interval.count()) / 1000.0 + 1.0;
  const auto roles = snap.Roles();
  std::map<std::string, int> mine;
  for (const auto& lim : cfg.role_limits) {
    if (lim.scope != RoleScope::kCluster || !lim.max_connections) continue;
    auto rc = roles.find(lim.role);
    mine[lim.role] = rc == roles.end() ? 0 : rc->second.connections;
  }
  s.state.cluster_caps.clear();
  if (mine.empty()) return;
  std::lock_guard<std::mutex> g(fleet_mu_);
  FleetShared& f = shared_[s.server.cluster];
  f.counts[s.server.name] = {now, mine};
  for (const auto& lim : cfg.role_limits) {
    if (lim.scope != RoleScope::kCluster || !lim.max_connections) continue;
    if (std::find(snap.exempt_roles.begin(), snap.exempt_roles.end(), lim.role) !=
        snap.exempt_roles.end())
      continue;
    std::map<std::string, int> counts;  // members polled lately -> connections
    int sum = 0;
    for (const auto& [server, tc] : f.counts) {
      if (now - tc.first > fresh_for) continue;
      auto n = tc.second.find(lim.role);
      counts[server] = n == tc.second.end() ? 0 : n->second;
      sum += counts[server];
    }
    ClusterRoleState& rs = f.roles[lim.role];
    const int limit = *lim.max_connections;
    Millis cooldown = lim.cooldown ? *lim.cooldown : cfg.daemon.cooldown;
    // Caps go on at 80% of the limit, sized to sum to the limit: logins that
    // race between two polls then meet a member's cap, not an open door.
    if (sum * 5 >= limit * 4) {
      if (!rs.over)
        spdlog::warn(
            "[{}] role {} near its cluster limit: {} connections over {} member(s), "
            "max_connections {}: capping each member at its share",
            s.server.cluster, lim.role, sum, counts.size(), limit);
      rs.over = true;
      rs.under_since.reset();
      bool same_members =
          rs.caps.size() == counts.size() &&
          std::equal(rs.caps.begin(), rs.caps.end(), counts.begin(),
                     [](const auto& a, const auto& b) { return a.first == b.first; });
      if (!same_members) rs.caps = SplitLimit(limit, counts);
    } else if (rs.over) {
      if (!rs.under_since) rs.under_since = now;
      if (now - *rs.under_since >= static_cast<double>(cooldown.count()) / 1000.0) {
        spdlog::info("[{}] role {} below 80% of its cluster limit for {}: caps lifted",
                     s.server.cluster, lim.role, FormatDuration(cooldown));
        rs.over = false;
        rs.caps.clear();
      }
    }
    // A new actor waits two intervals: the previous one (beside the old
    // leader) lifts its caps at its next interval, and reopening the same
    // role on the same member must not undo the new actor's caps.
    const double grace = 2.0 * static_cast<double>(cfg.daemon.interval.count()) / 1000.0;
    if (f.actor && now - f.actor_since >= grace && rs.over) {
      auto c = rs.caps.find(s.server.name);
      if (c != rs.caps.end()) s.state.cluster_caps[lim.role] = c->second;
    }
  }
}

void Daemon::WarnOnceFleet(const std::string& cluster, const std::string& msg) {
  if (fleet_warned_.insert(cluster + "\n" + msg).second) spdlog::warn("[{}] {}", cluster, msg);
}

}  // namespace wardend

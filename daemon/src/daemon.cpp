// wardend's main loop (see daemon.hpp).
//
// Threads: the main thread (signals, reload, shutdown), one thread per
// server (connect, poll, decide, act), httplib's threads (read status copies).
// Locks: cfg_mu_ (the current Config pointer), status_mu_ (status_ and the
// shared-memory segment), Journal's own mutex. Never two at once, except
// status_mu_ -> (none). A Slot is touched only by its thread, or by the main
// thread while no worker runs.
#include "wardend/daemon.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <random>

#include "wardend/backoff.hpp"
#include "wardend/health.hpp"
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

constexpr size_t kRecentActions = 64;

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
        e.server, e.role, e.mechanism, e.original_limit, e.applied_limit);

  status_.pid = static_cast<int>(getpid());
  status_.started = Wall();
  status_.dry_run = DryRun(*cfg);
  for (const auto& sc : cfg->servers) {
    ServerStatus st;
    st.name = sc.name;
    st.pgbouncer_configured = !sc.pgbouncer_dsn.empty();
    status_.servers.push_back(st);
    auto slot = std::make_unique<Slot>();
    slot->server = sc;
    slots_[sc.name] = std::move(slot);
  }
  spdlog::info(
      "wardend {} starting: {} server(s), {} budget(s), {} emergency step(s), interval {}{}",
      getpid(), cfg->servers.size(), cfg->budgets.size(), cfg->emergencies.size(),
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
    bool ok = true;
    for (const auto& st : status_.servers) ok = ok && st.last_poll_ok;
    spdlog::info("--once: done");
    return ok ? 0 : 1;
  }

  try {
    segment_ =
        std::make_unique<StatusSegment>(SegmentName(cfg->daemon.state_file), opts_.config_path);
  } catch (const std::exception& e) {
    spdlog::warn("no shared-memory status segment (wardenctl status will not work): {}", e.what());
  }
  if (!cfg->daemon.http.empty()) {
    http_ =
        std::make_unique<HttpServer>([this](std::shared_ptr<const Config>* c, DaemonStatus* st) {
          *c = config();
          std::lock_guard<std::mutex> g(status_mu_);
          *st = status_;
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
  {
    std::lock_guard<std::mutex> g(status_mu_);
    Publish();
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
  segment_.reset();
  spdlog::info("stopped");
  return 0;
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
    UpdateStatusError(s, cfg, msg);
    return false;
  }
  s.backoff_ms = 0;
  s.next_attempt = 0;
  s.in_recovery = s.conn->caps().in_recovery;
  s.detected_at = Mono();
  s.redetect = false;
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
  {
    std::lock_guard<std::mutex> g(status_mu_);
    ServerStatus& st = StatusOf(s.server.name);
    st.connected = true;
    st.mode = caps.extension ? "extension" : "degraded";
    st.admission = ChooseAdmission(caps);
  }
  if (!s.recovered) {
    // First connection since start: undo what a previous run left in force.
    for (const auto& e : journal_->EntriesFor(s.server.name)) Undo(s, e, "left by a previous run");
    s.recovered = true;
  } else {
    // Overrides live in the server's memory: after a server restart they are
    // gone; forget them so the next decision puts them back if still needed.
    for (const auto& e : journal_->EntriesFor(s.server.name))
      if (e.mechanism == "override") s.state.applied.erase(e.role);
  }
  return true;
}

void Daemon::Step(Slot& s, const Config& cfg) {
  if (!EnsureConnected(s, cfg)) return;
  // The extension may be created or dropped while wardend runs: look again
  // every minute and after SIGHUP, on the open connection.
  if (s.redetect || Mono() - s.detected_at > 60) {
    bool had = s.conn->caps().extension;
    try {
      s.conn->Detect();
    } catch (const PgError& e) {
      spdlog::warn("[{}] capability detection failed: {}", s.server.name, e.what());
      if (e.connection_lost() || !s.conn->ok()) s.conn.reset();
      UpdateStatusError(s, cfg, MaskDsn(e.what()));
      return;
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
    std::lock_guard<std::mutex> g(status_mu_);
    ServerStatus& st = StatusOf(s.server.name);
    st.mode = caps.extension ? "extension" : "degraded";
    st.admission = ChooseAdmission(caps);
  }
  Snapshot snap;
  double t0 = Mono();
  try {
    snap = s.conn->Poll();
  } catch (const std::exception& e) {
    auto* pe = dynamic_cast<const PgError*>(&e);
    std::string msg = MaskDsn(e.what());
    spdlog::warn("[{}] poll failed: {}", s.server.name, msg);
    if (!pe || pe->connection_lost() || !s.conn->ok()) s.conn.reset();
    UpdateStatusError(s, cfg, msg);
    return;
  }
  double poll_seconds = Mono() - t0;
  s.in_recovery = snap.in_recovery;
  Decision d = Decide(cfg, snap, s.state, Mono());
  for (const auto& ev : d.events) spdlog::warn("[{}] {}", s.server.name, ev);
  std::set<std::string> dry_now;
  for (const auto& a : d.actions) {
    if (stop_workers_ && fast_) break;
    try {
      if (DryRun(cfg)) {
        std::string key = a.kind == Action::Kind::kTerminate
                              ? fmt::format("t{}", a.pid)
                              : fmt::format("a{}:{}", a.role, a.limit);
        dry_now.insert(key);
        if (!s.dry_logged.count(key)) {
          spdlog::info("[{}] dry-run: would {}", s.server.name, Describe(a));
          if (a.kind == Action::Kind::kTerminate) Record(s, a, true);
        }
        continue;
      }
      Execute(s, cfg, snap, a);
    } catch (const PgError& e) {
      spdlog::error("[{}] {} failed: {}", s.server.name, Describe(a), e.what());
      if (e.connection_lost()) {
        s.conn.reset();
        break;
      }
    } catch (const std::exception& e) {
      spdlog::error("[{}] {} failed: {}", s.server.name, Describe(a), e.what());
    }
  }
  s.dry_logged = std::move(dry_now);
  UpdateStatusOk(s, cfg, snap, poll_seconds);
  if (!s.server.pgbouncer_dsn.empty()) {
    ServerStatus tmp;
    PollBouncer(s, cfg, tmp);
    std::lock_guard<std::mutex> g(status_mu_);
    ServerStatus& st = StatusOf(s.server.name);
    st.pgbouncer_ok = tmp.pgbouncer_ok;
    st.pgbouncer_error = tmp.pgbouncer_error;
    st.pools = std::move(tmp.pools);
    st.bouncer_stats = std::move(tmp.bouncer_stats);
    RefreshAlerts(cfg, st);
    Publish();
  }
}

void Daemon::Execute(Slot& s, const Config& cfg, const Snapshot& snap, const Action& a) {
  switch (a.kind) {
    case Action::Kind::kTerminate: {
      if (s.conn->TerminateIfStill(a.pid, a.backend_start, a.state, a.min_idle_seconds)) {
        NoteAction(s, "terminate", Describe(a));
        spdlog::info("[{}] terminated pid {} (role {}, application \"{}\", {} for {:.1f}s): {}",
                     s.server.name, a.pid, a.role, a.application_name, a.state, a.idle_seconds,
                     a.reason);
        Record(s, a, false);
      } else {
        spdlog::debug("[{}] pid {} no longer qualifies: left alone", s.server.name, a.pid);
      }
      break;
    }
    case Action::Kind::kCloseAdmission:
      ApplyClose(s, cfg, snap, a);
      break;
    case Action::Kind::kOpenAdmission: {
      auto e = journal_->Find(s.server.name, a.role);
      if (!e) {
        s.state.applied.erase(a.role);
        spdlog::info("[{}] admission of role {}: nothing to reopen ({})", s.server.name, a.role,
                     a.reason);
        break;
      }
      if (Undo(s, *e, a.reason)) s.state.applied.erase(a.role);
      break;
    }
  }
}

void Daemon::ApplyClose(Slot& s, const Config&, const Snapshot& snap, const Action& a) {
  auto existing = journal_->Find(s.server.name, a.role);
  std::string mechname = existing ? existing->mechanism : ChooseAdmission(s.conn->caps());
  auto mech = MakeAdmission(mechname);
  if (!mech->Usable(snap.in_recovery)) {
    WarnOnce(s, "standby-close:" + a.role,
             fmt::format("cannot close admission of role {}: this server is a standby and "
                         "warden.close_admission is absent (ALTER ROLE is impossible here)",
                         a.role));
    return;
  }
  int original;
  if (existing) {
    original = existing->original_limit;
  } else {
    auto cur = mech->CurrentLimit(*s.conn, a.role);
    if (!cur) {
      WarnOnce(s, "norole:" + a.role,
               fmt::format("role {} does not exist: admission not closed", a.role));
      return;
    }
    original = *cur;
  }
  if (mechname == "alter_role" && original >= 0 && original <= a.limit) {
    // Its own CONNECTION LIMIT is already as tight: nothing to lower.
    if (existing)
      Undo(s, *existing, fmt::format("its own CONNECTION LIMIT {} is tight enough", original));
    s.state.applied[a.role] = a.limit;
    WarnOnce(s, fmt::format("tight:{}:{}", a.role, a.limit),
             fmt::format("role {} already has CONNECTION LIMIT {} <= {}: left as is", a.role,
                         original, a.limit));
    return;
  }
  JournalEntry e{s.server.name, a.role,  mechname,
                 original,      a.limit, existing ? existing->since : Wall()};
  // A retry of the same limit keeps what was known to be in force before it.
  if (existing)
    e.previous_limit =
        existing->applied_limit == a.limit ? existing->previous_limit : existing->applied_limit;
  try {
    journal_->Upsert(e);  // before the change: a crash right after still knows what to undo
  } catch (const std::exception& ex) {
    // Never change what could not be journaled: it might never be undone.
    std::string msg = fmt::format("state file {}: {}", journal_->path(), ex.what());
    spdlog::error("[{}] admission of role {} NOT closed: {}", s.server.name, a.role, msg);
    std::lock_guard<std::mutex> g(status_mu_);
    StatusOf(s.server.name).journal_error = msg;
    return;
  }
  {
    std::lock_guard<std::mutex> g(status_mu_);
    StatusOf(s.server.name).journal_error.clear();
  }
  mech->Close(*s.conn, a.role, a.limit, a.reason);
  s.state.applied[a.role] = a.limit;
  std::string how = mechname == "alter_role"
                        ? fmt::format("CONNECTION LIMIT {} (was {})", a.limit, original)
                        : fmt::format("warden.close_admission max_connections {}", a.limit);
  NoteAction(s, "close_admission", Describe(a));
  spdlog::warn("[{}] closed admission of role {}: {}: {}", s.server.name, a.role, how, a.reason);
  Action rec = a;
  rec.state = "";
  Record(s, rec, false);
}

bool Daemon::Undo(Slot& s, const JournalEntry& e, const std::string& why) {
  if (!s.conn || !s.conn->ok()) return false;
  try {
    if (e.mechanism == "alter_role" && s.in_recovery) {
      WarnOnce(
          s, "standby-undo:" + e.role,
          fmt::format(
              "cannot restore CONNECTION LIMIT of role {} on a standby; kept in the state file",
              e.role));
      return false;
    }
    std::string note;
    if (e.mechanism == "override" && !s.conn->caps().close_admission) {
      note = "the extension is gone, and its overrides with it";
    } else {
      note = MakeAdmission(e.mechanism)
                 ->Open(*s.conn, e.role, e.original_limit, e.applied_limit, e.previous_limit);
    }
    journal_->Remove(e.server, e.role);
    NoteAction(s, "open_admission", fmt::format("reopen admission of role {}: {}", e.role, why));
    spdlog::warn("[{}] reopened admission of role {} ({}): {}", s.server.name, e.role, why, note);
    Action rec;
    rec.kind = Action::Kind::kOpenAdmission;
    rec.role = e.role;
    rec.limit = e.original_limit;
    rec.reason = why + ": " + note;
    Record(s, rec, false);
    return true;
  } catch (const PgError& ex) {
    spdlog::error("[{}] cannot reopen admission of role {}: {}", s.server.name, e.role, ex.what());
    if (ex.connection_lost()) s.conn.reset();
    return false;
  } catch (const std::exception& ex) {  // the state file: undone, but still journaled
    spdlog::error("[{}] admission of role {}: state file {}: {} (undone; entry kept)",
                  s.server.name, e.role, journal_->path(), ex.what());
    return false;
  }
}

void Daemon::UndoAll(Slot& s, const Config& cfg, const std::string& why) {
  auto entries = journal_->EntriesFor(s.server.name);
  if (entries.empty()) return;
  if (!s.conn || !s.conn->ok()) {
    s.next_attempt = 0;
    s.recovered = true;  // undo below is the recovery
    EnsureConnected(s, cfg);
  }
  for (const auto& e : journal_->EntriesFor(s.server.name)) Undo(s, e, why);
}

void Daemon::Record(Slot& s, const Action& a, bool dry) {
  if (!s.conn || !s.conn->caps().record_action) return;
  try {
    // The extension keeps the action in its 63-byte policy column: keep it short.
    std::string what = a.kind == Action::Kind::kTerminate
                           ? "wardend " + a.rule
                           : fmt::format("wardend {} {}", ToString(a.kind), a.limit);
    s.conn->RecordAction(what, a.pid, a.database, a.role, a.application_name, a.state,
                         a.idle_seconds, a.reason, dry);
  } catch (const PgError& e) {
    WarnOnce(s, "record_action",
             fmt::format("warden.record_action failed, not used again on this "
                         "connection: {}",
                         e.what()));
    if (e.connection_lost()) s.conn.reset();
  }
}

void Daemon::NoteAction(Slot& s, const std::string& kind, const std::string& text) {
  std::lock_guard<std::mutex> g(status_mu_);
  StatusOf(s.server.name).actions_total[kind]++;
  status_.recent.push_back({Wall(), s.server.name, text});
  while (status_.recent.size() > kRecentActions) status_.recent.pop_front();
}

ServerStatus& Daemon::StatusOf(const std::string& name) {
  for (auto& st : status_.servers)
    if (st.name == name) return st;
  status_.servers.push_back(ServerStatus{});
  status_.servers.back().name = name;
  return status_.servers.back();
}

void Daemon::RefreshAlerts(const Config& cfg, ServerStatus& st) {
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

void Daemon::UpdateStatusOk(Slot& s, const Config& cfg, const Snapshot& snap, double poll_seconds) {
  std::lock_guard<std::mutex> g(status_mu_);
  ServerStatus& st = StatusOf(s.server.name);
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
  st.replay_lag_seconds = snap.replay_lag_seconds;
  st.active = snap.Active();
  st.idle = snap.Idle();
  st.idle_in_transaction = snap.IdleInTransaction();
  st.longest_idle_seconds = snap.LongestIdleSeconds();
  // Bounded: the largest applications, the rest folded per server into "<other>".
  size_t cap = static_cast<size_t>(cfg.daemon.metrics_max_applications);
  std::vector<AppUsage> apps = snap.apps;
  std::sort(apps.begin(), apps.end(), [](const AppUsage& x, const AppUsage& y) {
    if (x.connections != y.connections) return x.connections > y.connections;
    return std::tie(x.database, x.role, x.application_name) <
           std::tie(y.database, y.role, y.application_name);
  });
  if (apps.size() > cap) {
    AppUsage other{"<other>", "<other>", "<other>", 0, 0, 0, 0, 0};
    for (size_t i = cap - 1; i < apps.size(); ++i) {
      other.connections += apps[i].connections;
      other.active += apps[i].active;
      other.idle += apps[i].idle;
      other.idle_in_transaction += apps[i].idle_in_transaction;
      other.longest_idle_seconds =
          std::max(other.longest_idle_seconds, apps[i].longest_idle_seconds);
    }
    apps.resize(cap - 1);
    apps.push_back(other);
  }
  st.apps = std::move(apps);
  st.roles.clear();
  auto roles = snap.Roles();
  for (const auto& [role, rc] : roles) {
    if (st.roles.size() + 1 >= cap && !cfg.BudgetFor(role)) {
      auto& o = st.roles["<other>"];
      o.connections += rc.connections;
      o.active += rc.active;
      o.idle += rc.idle;
      o.idle_in_transaction += rc.idle_in_transaction;
    } else {
      st.roles[role] = rc;
    }
  }
  st.admission_closed = s.state.applied;
  st.emergency_active.clear();
  for (size_t i = 0; i < s.state.emergency_active.size() && i < cfg.emergencies.size(); ++i)
    if (s.state.emergency_active[i]) st.emergency_active.push_back(cfg.emergencies[i].at_percent);
  if (!was_ok)
    spdlog::info("[{}] polled: {}/{} connections ({:.1f}%), {}", s.server.name, snap.connections,
                 snap.max_connections, snap.usage_percent,
                 snap.in_recovery ? "standby" : "primary");
  RefreshAlerts(cfg, st);
  Publish();
}

void Daemon::UpdateStatusError(Slot& s, const Config& cfg, const std::string& error) {
  std::lock_guard<std::mutex> g(status_mu_);
  ServerStatus& st = StatusOf(s.server.name);
  st.connected = s.conn && s.conn->ok();
  st.last_poll_ok = false;
  st.error = error;
  RefreshAlerts(cfg, st);
  Publish();
}

void Daemon::PollBouncer(Slot& s, const Config&, ServerStatus& st) {
  st.pgbouncer_configured = true;
  try {
    if (!s.bouncer || PQstatus(s.bouncer.get()) != CONNECTION_OK) {
      s.bouncer.reset();
      const char* keys[] = {"dbname", "connect_timeout", "fallback_application_name", nullptr};
      const char* vals[] = {s.server.pgbouncer_dsn.c_str(), "2", "wardend", nullptr};
      ConnPtr c(PQconnectdbParams(keys, vals, 1));
      if (!c || PQstatus(c.get()) != CONNECTION_OK) {
        std::string msg = c ? PQerrorMessage(c.get()) : "out of memory";
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
        throw std::runtime_error(MaskDsn(msg));
      }
      s.bouncer = std::move(c);
    }
    // The admin console speaks the simple query protocol only: PQexec, a
    // constant statement, no parameters.
    ResultPtr r(PQexec(s.bouncer.get(), "SHOW POOLS"));
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      std::string msg = PQerrorMessage(s.bouncer.get());
      s.bouncer.reset();
      throw std::runtime_error("SHOW POOLS: " + msg);
    }
    auto col = [&](const char* name) { return PQfnumber(r.get(), name); };
    auto num = [&](int row, int c) { return c < 0 ? 0.0 : std::atof(PQgetvalue(r.get(), row, c)); };
    int cdb = col("database"), cuser = col("user"), cca = col("cl_active"), ccw = col("cl_waiting"),
        csa = col("sv_active"), csi = col("sv_idle"), csu = col("sv_used"), cmw = col("maxwait"),
        cmwu = col("maxwait_us");
    for (int i = 0; i < PQntuples(r.get()) && i < 256; ++i) {
      PoolStat p;
      p.database = cdb >= 0 ? PQgetvalue(r.get(), i, cdb) : "";
      p.user = cuser >= 0 ? PQgetvalue(r.get(), i, cuser) : "";
      p.cl_active = static_cast<int>(num(i, cca));
      p.cl_waiting = static_cast<int>(num(i, ccw));
      p.sv_active = static_cast<int>(num(i, csa));
      p.sv_idle = static_cast<int>(num(i, csi));
      p.sv_used = static_cast<int>(num(i, csu));
      p.maxwait_seconds = num(i, cmw) + num(i, cmwu) / 1e6;
      st.pools.push_back(std::move(p));
    }
    r.reset();
    ResultPtr stats(PQexec(s.bouncer.get(), "SHOW STATS"));
    if (!stats || PQresultStatus(stats.get()) != PGRES_TUPLES_OK) {
      std::string msg = PQerrorMessage(s.bouncer.get());
      s.bouncer.reset();
      throw std::runtime_error("SHOW STATS: " + msg);
    }
    int sdb = PQfnumber(stats.get(), "database"), sx = PQfnumber(stats.get(), "total_xact_count"),
        sq = PQfnumber(stats.get(), "total_query_count"),
        sw = PQfnumber(stats.get(), "total_wait_time");
    for (int i = 0; i < PQntuples(stats.get()) && i < 256; ++i) {
      BouncerDbStat b;
      b.database = sdb >= 0 ? PQgetvalue(stats.get(), i, sdb) : "";
      b.xact_count = sx >= 0 ? std::atof(PQgetvalue(stats.get(), i, sx)) : 0;
      b.query_count = sq >= 0 ? std::atof(PQgetvalue(stats.get(), i, sq)) : 0;
      b.wait_seconds = sw >= 0 ? std::atof(PQgetvalue(stats.get(), i, sw)) / 1e6 : 0;
      st.bouncer_stats.push_back(std::move(b));
    }
    st.pgbouncer_ok = true;
  } catch (const std::exception& e) {
    st.pgbouncer_ok = false;
    st.pgbouncer_error = e.what();
    WarnOnce(s, "pgbouncer", fmt::format("pgbouncer admin console: {}", e.what()));
  }
}

void Daemon::Publish() {
  if (segment_) segment_->Publish(status_);
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
  if (fresh.daemon.state_file != old->daemon.state_file)
    spdlog::warn("reload: state_file changes need a restart; keeping {}", old->daemon.state_file);
  fresh.daemon.state_file = old->daemon.state_file;
  if (fresh.daemon.http != old->daemon.http)
    spdlog::warn("reload: http address changes need a restart; still listening on {}",
                 old->daemon.http);
  fresh.daemon.http = old->daemon.http;
  StopWorkers();
  // The logger is replaced only while no server thread logs (the HTTP threads do not).
  SetupLogging(fresh.daemon.log_format, fresh.daemon.log_level);
  std::map<std::string, std::unique_ptr<Slot>> next;
  for (const auto& sc : fresh.servers) {
    auto it = slots_.find(sc.name);
    std::unique_ptr<Slot> slot;
    if (it != slots_.end()) {
      slot = std::move(it->second);
      slots_.erase(it);
      if (slot->server.dsn != sc.dsn) slot->conn.reset();
      if (slot->server.pgbouncer_dsn != sc.pgbouncer_dsn) slot->bouncer.reset();
    } else {
      slot = std::make_unique<Slot>();
    }
    slot->server = sc;
    slot->redetect = true;
    if (fresh.emergencies.size() != old->emergencies.size()) {
      slot->state.emergency_active.clear();
      slot->state.emergency_caps.clear();
    }
    next[sc.name] = std::move(slot);
  }
  // Servers removed from the file: undo what is in force there, then let go.
  for (auto& [name, slot] : slots_) {
    try {
      UndoAll(*slot, *old, "server removed from the configuration");
    } catch (const std::exception& e) {
      spdlog::error("[{}] undo failed: {}", name, MaskDsn(e.what()));
    }
  }
  slots_ = std::move(next);
  {
    std::lock_guard<std::mutex> g(cfg_mu_);
    cfg_ = std::make_shared<const Config>(std::move(fresh));
  }
  auto cfg = config();
  {
    std::lock_guard<std::mutex> g(status_mu_);
    std::vector<ServerStatus> servers;
    for (const auto& sc : cfg->servers) {
      ServerStatus st = StatusOf(sc.name);
      st.pgbouncer_configured = !sc.pgbouncer_dsn.empty();
      servers.push_back(std::move(st));
    }
    status_.servers = std::move(servers);
    status_.dry_run = DryRun(*cfg);
    Publish();
  }
  spdlog::info("reloaded {}: {} server(s), {} budget(s), {} emergency step(s){}", opts_.config_path,
               cfg->servers.size(), cfg->budgets.size(), cfg->emergencies.size(),
               DryRun(*cfg) ? ", DRY RUN" : "");
  StartWorkers();
}

}  // namespace wardend

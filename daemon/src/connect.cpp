// A server's connection, for wardend's loop (see daemon.hpp): connect with
// backoff, detect the capabilities, reconcile what the journal holds with the
// server (recovery after a previous run, an override still in force), look
// the [[role]] names up, and undo everything there at stop.
//
// Threads: the server's own thread (the main thread only while no worker
// runs, at stop). Locks: none of its own; the StatusBoard's and the Journal's
// mutexes through their calls, never two at once.
#include "wardend/daemon.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "wardend/admission.hpp"
#include "wardend/backoff.hpp"
#include "wardend/clock.hpp"

namespace wardend {

namespace {

// How long an override wardend sets lasts unless renewed: a few intervals,
// never under 10 s (a slow poll or a short network blip must not lift it).
double LeaseSeconds(const Config& cfg) {
  return std::max(10.0, 4.0 * static_cast<double>(cfg.daemon.interval.count()) / 1000.0);
}

}  // namespace

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
  s.conn->set_member(s.server.member);
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
  ConnectionTarget target(*s.conn, s.server.pgbouncer_dsn,
                          static_cast<int>(cfg.daemon.statement_timeout.count()));
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
    // First connection since start: undo what a previous run left in force;
    // the pools it paused are resumed by the decisions once no step needs them.
    s.executor->AdoptPaused(s.state);
    s.executor->UndoAll(target, s.in_recovery, "left by a previous run", true);
    s.recovered = true;
  } else if (!s.server.cluster.empty()) {
    // A cluster member reconnected to: Patroni may have restarted it (a
    // switchover demotes by restarting), so what wardend placed there may be
    // gone or have lost its reason. Reopen (a no-op where the override died
    // with the server) and let this poll's decisions place again what still
    // has a reason: nothing stays behind, in the server or the state file.
    s.executor->UndoAll(target, s.in_recovery, "reconnected to a cluster member", true);
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
  ConnectionTarget target(*s.conn, s.server.pgbouncer_dsn,
                          static_cast<int>(cfg.daemon.statement_timeout.count()));
  s.executor->UndoAll(target, s.in_recovery, why);
}

}  // namespace wardend

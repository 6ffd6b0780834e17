// wardend's main loop, and only the loop: one thread per server (connect
// with backoff, poll, decide, hand the actions to its Executor, report to the
// StatusBoard), the main thread for signals, reload and shutdown.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "wardend/config.hpp"
#include "wardend/decide.hpp"
#include "wardend/executor.hpp"
#include "wardend/journal.hpp"
#include "wardend/notify.hpp"
#include "wardend/patroni.hpp"
#include "wardend/pg.hpp"
#include "wardend/pgbouncer.hpp"
#include "wardend/status_board.hpp"

namespace wardend {

struct Options {
  std::string config_path;
  bool dry_run = false;  // --dry-run (overrides the file)
  bool once = false;     // --once
};

// Signal handlers only set these flags; the main loop acts on them.
void InstallSignalHandlers();

class HttpServer;
class InstanceLock;

class Daemon {
 public:
  Daemon(Options opts, Config cfg);
  ~Daemon();
  int Run();  // returns the process exit code

 private:
  struct Slot {
    ServerConfig server;
    ServerState state;
    std::unique_ptr<Connection> conn;
    std::unique_ptr<Executor> executor;
    BouncerPoller bouncer;   // pgbouncer's admin console
    bool recovered = false;  // the journal's leftovers for this server were undone
    double detected_at = 0;  // monotonic time of the last capability detection
    bool redetect = false;   // detect again before the next poll (after SIGHUP)
    bool in_recovery = false;
    bool enforce_off = false;  // the server's warden.enforce, as last polled
    double backoff_ms = 0;
    double next_attempt = 0;       // monotonic seconds
    std::set<std::string> warned;  // one-time warnings
    bool roles_checked = false;    // the [[role]] names were looked up on this server
    std::thread thread;
  };

  // [[cluster]]s: what Patroni said last (main thread only), and what the
  // server threads share under fleet_mu_ (counts of cluster-scoped roles per
  // member, the caps in force, whether this wardend is a cluster's actor).
  struct ClusterRoleState {
    bool over = false;
    std::optional<double> under_since;
    std::map<std::string, int> caps;  // server name -> cap
  };
  struct FleetShared {
    bool actor = false;      // acts on cluster-scoped limits (no member, or beside the leader)
    double actor_since = 0;  // monotonic: caps are placed two intervals after becoming the actor
    std::map<std::string, std::pair<double, std::map<std::string, int>>> counts;  // server ->
    std::map<std::string, ClusterRoleState> roles;  // cluster-scoped role ->
  };
  void RefreshFleet(const Config& file);
  Config Effective(const Config& file) const;
  void ClusterCaps(Slot& s, const Config& cfg, const Snapshot& snap);
  void Resync(Config fresh, bool reload);
  void WarnOnceFleet(const std::string& cluster, const std::string& msg);

  std::shared_ptr<const Config> config() const;
  bool DryRun(const Config& cfg) const { return opts_.dry_run || cfg.daemon.dry_run; }
  void StartWorkers();
  void StopWorkers();
  std::unique_ptr<Slot> MakeSlot(const ServerConfig& sc);
  void Worker(Slot* s);
  void Step(Slot& s, const Config& cfg);
  bool EnsureConnected(Slot& s, const Config& cfg);
  bool Redetect(Slot& s, const Config& cfg);
  void CheckRoles(Slot& s, const Config& cfg);
  void UndoAll(Slot& s, const Config& cfg, const std::string& why);
  void PollError(Slot& s, const Config& cfg, const std::string& error);
  void Reload();
  void WaitFor(double seconds);
  void WarnOnce(Slot& s, const std::string& key, const std::string& msg);

  Options opts_;
  mutable std::mutex cfg_mu_;
  std::shared_ptr<const Config> cfg_;
  Config file_cfg_;  // as read from the file (main thread); cfg_ adds the clusters' members
  std::map<std::string, PatroniCluster> fleet_;  // cluster name -> last good GET /cluster
  std::map<std::string, std::string> fleet_error_;
  std::set<std::string> fleet_warned_;
  double next_fleet_ = 0;
  std::mutex fleet_mu_;
  std::map<std::string, FleetShared> shared_;  // cluster name -> (fleet_mu_)
  std::unique_ptr<Journal> journal_;
  std::map<std::string, std::unique_ptr<Slot>> slots_;  // by server name; survive reloads

  StatusBoard board_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<InstanceLock> lock_;
  ServiceNotifier notifier_;  // systemd (main thread; the stop watcher while it stops)
  PollMonitor polls_;         // progress of the poll loops, for READY=1 and the watchdog

  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::atomic<bool> stop_workers_{false};
  std::atomic<bool> shutdown_{false};
  std::atomic<bool> fast_{false};
};

}  // namespace wardend

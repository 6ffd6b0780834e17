// The daemon's live status board: what each server's thread reports (polls,
// errors, actions, PgBouncer), kept in one DaemonStatus and published to the
// shared-memory segment; the HTTP threads read copies.
// Lock: the board's own mutex, taken by every method and held only inside it
// (it calls nothing that takes another lock; spdlog's own is a leaf).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "wardend/config.hpp"
#include "wardend/decide.hpp"
#include "wardend/journal.hpp"
#include "wardend/snapshot.hpp"
#include "wardend/status.hpp"

namespace wardend {

class StatusSegment;

class StatusBoard {
 public:
  StatusBoard();
  ~StatusBoard();

  // At start: the process, and one (empty) status per configured server.
  void Start(const Config& cfg, int pid, double started_unix, bool dry_run);
  // After a reload: servers in the file's order (kept ones keep their status).
  void Reconfigure(const Config& cfg, bool dry_run);
  void AttachSegment(std::unique_ptr<StatusSegment> segment);
  void DetachSegment();
  DaemonStatus Copy() const;
  bool AllPolledOk() const;

  void Connected(const std::string& server, bool extension, AdmissionKind admission);
  void PollOk(const Config& cfg, const std::string& server, const Snapshot& snap,
              double poll_seconds, const ServerState& state);
  void PollError(const Config& cfg, const std::string& server, bool connected,
                 const std::string& error);
  void Bouncer(const Config& cfg, const std::string& server, BouncerReport report);
  void Action(const std::string& server, const std::string& kind, const std::string& text);
  // A cluster member as Patroni lists it (the main thread, each interval).
  void Member(const std::string& server, const std::string& cluster, const std::string& role,
              const std::string& state, std::optional<int64_t> lag_bytes);
  void JournalError(const std::string& server, const std::string& error);  // "": cleared
  // Configuration problems found against the server (unknown [[role]] names).
  void ConfigProblems(const std::string& server, std::vector<std::string> problems);

 private:
  ServerStatus& StatusOf(const std::string& name);          // mu_ held
  void RefreshAlerts(const Config& cfg, ServerStatus& st);  // mu_ held
  void Publish();                                           // mu_ held

  mutable std::mutex mu_;
  DaemonStatus status_;
  std::unique_ptr<StatusSegment> segment_;
};

}  // namespace wardend

// The daemon's live status in a named Boost.Interprocess shared-memory
// segment, read by `wardenctl status` and `wardenctl top` with no network, and
// the file lock that keeps a second daemon off the same state file.
//
// Layout: one fixed-size plain struct (no pointers), versioned by a magic
// number. Consistency: a sequence counter (odd while the daemon writes); a
// reader copies the struct and retries while the counter was odd or moved.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "wardend/status.hpp"

namespace wardend {

constexpr uint32_t kShmMagic = 0x57415244;  // "WARD"
constexpr uint32_t kShmVersion = 4;
constexpr int kShmServers = 16;
constexpr int kShmApps = 64;
constexpr int kShmActions = 32;
constexpr int kShmClosed = 32;  // roles with admission closed, per server
constexpr int kShmAlerts = 16;  // alerts, per server

struct ShmClosed {
  char role[64];
  int32_t limit;
};

struct ShmAlert {
  char key[48];
  char severity[16];
  char message[256];
};

struct ShmApp {
  char database[64];
  char role[64];
  char application[64];
  int32_t connections, active, idle, idle_in_transaction;
  double longest_idle_seconds, longest_idle_in_transaction_seconds;
};

struct ShmServer {
  char name[64];
  char mode[16];
  char error[160];
  int32_t last_poll_ok, in_recovery;
  int32_t connections, max_connections, reserved;
  int32_t active, idle, idle_in_transaction;
  double usage_percent, longest_idle_seconds, last_ok_unix, poll_seconds, replay_lag_seconds;
  double longest_idle_in_transaction_seconds;
  char patroni_role[24];     // a [[cluster]]'s member: Patroni's role; "" otherwise
  int64_t lag_bytes;         // Patroni's lag of the member; -1: none or unknown
  int32_t admission_closed;  // roles whose admission wardend has closed
  int32_t emergencies_active;
  int32_t alerts;
  int32_t napps;
  uint64_t actions_total;
  ShmApp apps[kShmApps];  // most connections first
  int32_t nclosed;        // entries of closed[] (admission_closed counts them all)
  ShmClosed closed[kShmClosed];
  int32_t nalerts;  // entries of alert_list[] (alerts counts them all)
  ShmAlert alert_list[kShmAlerts];
};

struct ShmAction {
  double at;
  char server[64];
  char text[1024];  // the whole description (reason included)
};

struct ShmStatus {
  uint32_t magic;
  uint32_t version;
  std::atomic<uint64_t> seq;
  int32_t pid;
  int32_t dry_run;
  double started;
  double updated;
  char config_path[256];
  int32_t nservers;
  ShmServer servers[kShmServers];
  int32_t nactions;
  ShmAction actions[kShmActions];  // oldest first
};

// "/pg_warden.<hash of the state file's absolute path>".
std::string SegmentName(const std::string& state_file);

// Owned by the daemon: created at start (a stale one is replaced), removed on clean exit.
class StatusSegment {
 public:
  StatusSegment(std::string name, const std::string& config_path);
  ~StatusSegment();
  void Publish(const DaemonStatus& st);
  const std::string& name() const { return name_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string name_;
};

// A plain copy for readers (the atomic is copied as a number).
struct StatusCopy {
  int pid = 0;
  bool dry_run = false;
  double started = 0, updated = 0;
  std::string config_path;
  std::vector<ShmServer> servers;
  std::vector<ShmAction> actions;
};
// Reads the segment; nullopt with *error set when there is none or it is unreadable.
std::optional<StatusCopy> ReadStatusSegment(const std::string& name, std::string* error);

// One daemon per state file: an exclusive lock on "<state_file>.lock", held
// for the life of the process (released by the kernel at any exit).
class InstanceLock {
 public:
  explicit InstanceLock(const std::string& state_file);  // throws with a clear message
  ~InstanceLock();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wardend

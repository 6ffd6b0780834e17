// The service manager's view of wardend: systemd's notify protocol
// (sd_notify(3) from libsystemd) and the watchdog fed from the poll loops.
//
// READY=1 once every server has been polled once, WATCHDOG=1 while no poll
// loop is stuck, RELOADING=1 ... READY=1 around SIGHUP, STOPPING=1 at
// SIGTERM. Without $NOTIFY_SOCKET every call does nothing.
// Locks: PollMonitor's own mutex (taken by the server threads and the main
// thread, never while holding another lock).
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>

namespace wardend {

// Progress of the poll loops, one per server: the server threads say when a
// poll begins and ends, the main thread asks whether all polled once and
// whether one has been inside a poll for too long (stuck).
class PollMonitor {
 public:
  using Clock = std::chrono::steady_clock;

  void Begin(const void* loop);
  void End(const void* loop);
  // Loops that finished at least one poll.
  size_t Polled() const;
  // A loop inside one poll for longer than `limit`.
  bool AnyStuck(Clock::duration limit) const;

 private:
  struct Loop {
    Clock::time_point since{};  // start of the current poll
    bool busy = false;
    bool polled = false;
  };
  mutable std::mutex mu_;
  std::map<const void*, Loop> loops_;
};

class ServiceNotifier {
 public:
  // Reads $NOTIFY_SOCKET and $WATCHDOG_USEC (and $WATCHDOG_PID).
  ServiceNotifier();

  bool enabled() const { return enabled_; }
  // Zero when the watchdog is off.
  std::chrono::microseconds watchdog_timeout() const { return watchdog_; }

  void Ready(const std::string& status);
  void Reloading();
  void Stopping();
  void Status(const std::string& status);
  // Call often (every few ms): sends WATCHDOG=1 at half the timeout while
  // `healthy`, and nothing while not, so that the manager restarts a stuck
  // daemon once the timeout passes.
  void FeedWatchdog(bool healthy);

 private:
  void Send(const std::string& state);

  bool enabled_ = false;
  std::chrono::microseconds watchdog_{0};
  std::chrono::steady_clock::time_point last_ping_{};
};

}  // namespace wardend

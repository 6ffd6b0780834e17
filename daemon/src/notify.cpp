// systemd's notify protocol and the poll-loop watchdog (see notify.hpp).
#include "wardend/notify.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>

namespace wardend {

void PollMonitor::Begin(const void* loop) {
  std::lock_guard<std::mutex> g(mu_);
  Loop& l = loops_[loop];
  l.busy = true;
  l.since = Clock::now();
}

void PollMonitor::End(const void* loop) {
  std::lock_guard<std::mutex> g(mu_);
  Loop& l = loops_[loop];
  l.busy = false;
  l.polled = true;
}

size_t PollMonitor::Polled() const {
  std::lock_guard<std::mutex> g(mu_);
  size_t n = 0;
  for (const auto& [key, l] : loops_) n += l.polled ? 1 : 0;
  return n;
}

bool PollMonitor::AnyStuck(Clock::duration limit) const {
  std::lock_guard<std::mutex> g(mu_);
  auto now = Clock::now();
  for (const auto& [key, l] : loops_)
    if (l.busy && now - l.since > limit) return true;
  return false;
}

ServiceNotifier::ServiceNotifier() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && socket[0] != '\0';
  uint64_t usec = 0;
  // Checks $WATCHDOG_PID against our pid when it is set.
  if (enabled_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
    watchdog_ = std::chrono::microseconds(usec);
}

void ServiceNotifier::Send(const std::string& state) {
  if (!enabled_) return;
  int rc = sd_notify(0, state.c_str());
  if (rc < 0) spdlog::warn("sd_notify({}): {}", state, std::strerror(-rc));
}

void ServiceNotifier::Ready(const std::string& status) { Send("READY=1\nSTATUS=" + status); }

void ServiceNotifier::Reloading() { Send("RELOADING=1\nSTATUS=reloading the configuration"); }

void ServiceNotifier::Stopping() { Send("STOPPING=1\nSTATUS=stopping: undoing every change"); }

void ServiceNotifier::Status(const std::string& status) { Send("STATUS=" + status); }

void ServiceNotifier::FeedWatchdog(bool healthy) {
  if (!enabled_ || watchdog_.count() == 0 || !healthy) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < watchdog_ / 2) return;
  last_ping_ = now;
  Send("WATCHDOG=1");
}

}  // namespace wardend

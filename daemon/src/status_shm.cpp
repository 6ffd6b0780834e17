// Shared-memory status segment and instance lock (see status_shm.hpp).
// Lock: none across processes; the writer is one thread at a time (the caller
// serializes Publish), readers use the sequence counter.
#include "wardend/status_shm.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <boost/interprocess/sync/file_lock.hpp>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace bip = boost::interprocess;

namespace wardend {

namespace {

template <size_t N>
void Copy(char (&dst)[N], const std::string& src) {
  size_t n = std::min(N - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

std::string Absolute(const std::string& path) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

}  // namespace

std::string SegmentName(const std::string& state_file) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : Absolute(state_file)) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "pg_warden.%016llx", static_cast<unsigned long long>(h));
  return buf;
}

struct StatusSegment::Impl {
  bip::shared_memory_object shm;
  bip::mapped_region region;
  ShmStatus* st = nullptr;
};

StatusSegment::StatusSegment(std::string name, const std::string& config_path)
    : impl_(std::make_unique<Impl>()), name_(std::move(name)) {
  // We hold the instance lock: whatever segment has this name is stale.
  bip::shared_memory_object::remove(name_.c_str());
  // Owner only (0600): it names servers and roles; wardenctl runs as wardend's user.
  impl_->shm = bip::shared_memory_object(bip::create_only, name_.c_str(), bip::read_write, 0600);
  impl_->shm.truncate(sizeof(ShmStatus));
  impl_->region = bip::mapped_region(impl_->shm, bip::read_write);
  std::memset(impl_->region.get_address(), 0, sizeof(ShmStatus));
  impl_->st = new (impl_->region.get_address()) ShmStatus;
  impl_->st->seq.store(0);
  impl_->st->version = kShmVersion;
  impl_->st->pid = static_cast<int32_t>(getpid());
  Copy(impl_->st->config_path, Absolute(config_path));
  std::atomic_thread_fence(std::memory_order_release);
  impl_->st->magic = kShmMagic;
}

StatusSegment::~StatusSegment() { bip::shared_memory_object::remove(name_.c_str()); }

void StatusSegment::Publish(const DaemonStatus& d) {
  ShmStatus* st = impl_->st;
  st->seq.fetch_add(1, std::memory_order_acq_rel);  // odd: writing
  std::atomic_thread_fence(std::memory_order_release);
  st->started = d.started;
  st->dry_run = d.dry_run;
  st->updated =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  st->nservers = static_cast<int32_t>(std::min<size_t>(d.servers.size(), kShmServers));
  for (int i = 0; i < st->nservers; ++i) {
    const ServerStatus& s = d.servers[static_cast<size_t>(i)];
    ShmServer& o = st->servers[i];
    Copy(o.name, s.name);
    Copy(o.mode, s.mode);
    Copy(o.error, s.error);
    Copy(o.patroni_role, s.patroni_role);
    o.lag_bytes = s.lag_bytes ? *s.lag_bytes : -1;
    o.last_poll_ok = s.last_poll_ok;
    o.in_recovery = s.in_recovery;
    o.connections = s.connections;
    o.max_connections = s.max_connections;
    o.reserved = s.reserved;
    o.active = s.active;
    o.idle = s.idle;
    o.idle_in_transaction = s.idle_in_transaction;
    o.usage_percent = s.usage_percent;
    o.longest_idle_seconds = s.longest_idle_seconds;
    o.longest_idle_in_transaction_seconds = s.longest_idle_in_transaction_seconds;
    o.last_ok_unix = s.last_ok_unix;
    o.poll_seconds = s.poll_seconds;
    o.replay_lag_seconds = s.replay_lag_seconds.value_or(-1);
    o.admission_closed = static_cast<int32_t>(s.admission_closed.size());
    o.emergencies_active = static_cast<int32_t>(s.emergency_active.size());
    o.alerts = static_cast<int32_t>(s.alerts.size());
    o.nclosed = 0;
    for (const auto& [role, limit] : s.admission_closed) {
      if (o.nclosed >= kShmClosed) break;
      Copy(o.closed[o.nclosed].role, role);
      o.closed[o.nclosed].limit = limit;
      ++o.nclosed;
    }
    o.nalerts = 0;
    for (const auto& [key, a] : s.alerts) {
      if (o.nalerts >= kShmAlerts) break;
      Copy(o.alert_list[o.nalerts].key, key);
      Copy(o.alert_list[o.nalerts].severity, a.severity);
      Copy(o.alert_list[o.nalerts].message, a.message);
      ++o.nalerts;
    }
    uint64_t total = 0;
    for (const auto& [k, v] : s.actions_total) total += v;
    o.actions_total = total;
    std::vector<const AppUsage*> apps;
    for (const auto& a : s.apps) apps.push_back(&a);
    std::sort(apps.begin(), apps.end(),
              [](const AppUsage* x, const AppUsage* y) { return x->connections > y->connections; });
    o.napps = static_cast<int32_t>(std::min<size_t>(apps.size(), kShmApps));
    for (int j = 0; j < o.napps; ++j) {
      const AppUsage& a = *apps[static_cast<size_t>(j)];
      ShmApp& x = o.apps[j];
      Copy(x.database, a.database);
      Copy(x.role, a.role);
      Copy(x.application, a.application_name);
      x.connections = a.connections;
      x.active = a.active;
      x.idle = a.idle;
      x.idle_in_transaction = a.idle_in_transaction;
      x.longest_idle_seconds = a.longest_idle_seconds;
      x.longest_idle_in_transaction_seconds = a.longest_idle_in_transaction_seconds;
    }
  }
  size_t n = std::min<size_t>(d.recent.size(), kShmActions);
  st->nactions = static_cast<int32_t>(n);
  for (size_t i = 0; i < n; ++i) {
    const RecentAction& r = d.recent[d.recent.size() - n + i];
    st->actions[i].at = r.at;
    Copy(st->actions[i].server, r.server);
    Copy(st->actions[i].text, r.text);
  }
  std::atomic_thread_fence(std::memory_order_release);
  st->seq.fetch_add(1, std::memory_order_acq_rel);  // even: consistent
}

std::optional<StatusCopy> ReadStatusSegment(const std::string& name, std::string* error) {
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_only);
    bip::offset_t size = 0;
    if (!shm.get_size(size) || size < static_cast<bip::offset_t>(sizeof(ShmStatus))) {
      if (error)
        *error = "status segment " + name + " has the wrong size (another version of wardend?)";
      return std::nullopt;
    }
    bip::mapped_region region(shm, bip::read_only);
    const auto* st = static_cast<const ShmStatus*>(region.get_address());
    if (st->magic != kShmMagic || st->version != kShmVersion) {
      if (error) *error = "status segment " + name + " is not initialized or from another version";
      return std::nullopt;
    }
    auto buf = std::make_unique<unsigned char[]>(sizeof(ShmStatus));
    for (int attempt = 0; attempt < 200; ++attempt) {
      uint64_t before = st->seq.load(std::memory_order_acquire);
      if (before % 2 == 0) {
        std::memcpy(buf.get(), static_cast<const void*>(st), sizeof(ShmStatus));
        std::atomic_thread_fence(std::memory_order_acquire);
        if (st->seq.load(std::memory_order_acquire) == before) {
          const auto* c = reinterpret_cast<const ShmStatus*>(buf.get());
          StatusCopy out;
          out.pid = c->pid;
          out.dry_run = c->dry_run;
          out.started = c->started;
          out.updated = c->updated;
          out.config_path = c->config_path;
          for (int i = 0; i < std::min(c->nservers, kShmServers); ++i)
            out.servers.push_back(c->servers[i]);
          for (int i = 0; i < std::min(c->nactions, kShmActions); ++i)
            out.actions.push_back(c->actions[i]);
          return out;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (error) *error = "status segment " + name + " kept changing while read";
  } catch (const bip::interprocess_exception& e) {
    if (error)
      *error =
          "no status segment " + name + " (is wardend running with this state file?): " + e.what();
  }
  return std::nullopt;
}

struct InstanceLock::Impl {
  bip::file_lock lock;
};

InstanceLock::InstanceLock(const std::string& state_file) : impl_(std::make_unique<Impl>()) {
  std::string path = state_file + ".lock";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error("cannot create lock file " + path + ": " + std::strerror(errno));
  ::close(fd);
  try {
    impl_->lock = bip::file_lock(path.c_str());
    if (!impl_->lock.try_lock())
      throw std::runtime_error("another wardend is already running with state file " + state_file +
                               " (lock " + path + " is held)");
  } catch (const bip::interprocess_exception& e) {
    throw std::runtime_error("cannot lock " + path + ": " + e.what());
  }
}

InstanceLock::~InstanceLock() {
  try {
    impl_->lock.unlock();
  } catch (...) {
  }
}

}  // namespace wardend

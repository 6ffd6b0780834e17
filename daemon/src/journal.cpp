// The journal of changes in force (see journal.hpp). Lock: Journal::mu_,
// held while the file is written (a few hundred bytes, once per change).
#include "wardend/journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace wardend {

const char* ToString(AdmissionKind k) {
  switch (k) {
    case AdmissionKind::kOverride:
      return "override";
    case AdmissionKind::kConnectionLimit:
      return "alter_role";
    case AdmissionKind::kPausePool:
      return "pause_pool";
  }
  return "override";
}

std::optional<AdmissionKind> AdmissionKindFrom(const std::string& name) {
  if (name == "override") return AdmissionKind::kOverride;
  if (name == "alter_role") return AdmissionKind::kConnectionLimit;
  if (name == "pause_pool") return AdmissionKind::kPausePool;
  return std::nullopt;
}

bool operator==(const JournalEntry& a, const JournalEntry& b) {
  return a.server == b.server && a.identity == b.identity && a.role == b.role &&
         a.mechanism == b.mechanism && a.original_limit == b.original_limit &&
         a.applied_limit == b.applied_limit && a.previous_limit == b.previous_limit &&
         a.pool == b.pool && a.pgbouncer == b.pgbouncer;
}

std::string SerializeJournal(const std::vector<JournalEntry>& entries) {
  nlohmann::json j;
  j["version"] = 1;
  j["pid"] = static_cast<long>(getpid());
  j["entries"] = nlohmann::json::array();
  for (const auto& e : entries) {
    nlohmann::json x = {{"server", e.server},
                        {"identity", e.identity},
                        {"role", e.role},
                        {"mechanism", ToString(e.mechanism)},
                        {"original_limit", e.original_limit},
                        {"applied_limit", e.applied_limit},
                        {"previous_limit", e.previous_limit},
                        {"since", e.since}};
    if (e.mechanism == AdmissionKind::kPausePool) {
      x["pool"] = e.pool;
      x["pgbouncer"] = e.pgbouncer;
    }
    j["entries"].push_back(std::move(x));
  }
  return j.dump(2) + "\n";
}

std::vector<JournalEntry> ParseJournal(const std::string& text) {
  std::vector<JournalEntry> out;
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) return out;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
    if (j.at("version").get<int>() != 1) throw std::runtime_error("unknown journal version");
    for (const auto& e : j.at("entries")) {
      JournalEntry x;
      x.server = e.at("server").get<std::string>();
      x.identity = e.value("identity", std::string());
      x.role = e.at("role").get<std::string>();
      const auto name = e.at("mechanism").get<std::string>();
      auto kind = AdmissionKindFrom(name);
      if (!kind) throw std::runtime_error("unknown mechanism \"" + name + "\"");
      x.mechanism = *kind;
      x.original_limit = e.at("original_limit").get<int>();
      x.applied_limit = e.at("applied_limit").get<int>();
      x.previous_limit = e.value("previous_limit", -1);
      x.since = e.value("since", 0.0);
      x.pool = e.value("pool", std::string());
      x.pgbouncer = e.value("pgbouncer", std::string());
      if (x.mechanism == AdmissionKind::kPausePool && x.pool.empty())
        throw std::runtime_error("a pause_pool entry without its pool");
      out.push_back(std::move(x));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("malformed state file: ") + e.what());
  }
  return out;
}

void WriteFileAtomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  auto fail = [&](const char* what) {
    throw std::runtime_error(std::string(what) + " " + tmp + ": " + std::strerror(errno));
  };
  // A new file only, never through a symbolic link: whatever sits at the temp
  // path (left by a crash, or planted) is unlinked, not followed, and the
  // exclusive create then fails if someone races us to it.
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = ::open(tmp.c_str(), flags, 0600);
  if (fd < 0 && errno == EEXIST) {
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) fail("cannot remove the stale");
    fd = ::open(tmp.c_str(), flags, 0600);
  }
  if (fd < 0) fail("cannot create");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      fail("cannot write");
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("cannot fsync");
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename");
  std::string dir = ".";
  if (auto slash = path.rfind('/'); slash != std::string::npos)
    dir = slash == 0 ? "/" : path.substr(0, slash);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

Journal::Journal(std::string path) : path_(std::move(path)) {}

void Journal::Load() {
  std::lock_guard<std::mutex> g(mu_);
  std::ifstream in(path_);
  if (!in) {
    entries_.clear();
    return;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  entries_ = ParseJournal(ss.str());
}

std::vector<JournalEntry> Journal::Entries() const {
  std::lock_guard<std::mutex> g(mu_);
  return entries_;
}

bool Journal::Belongs(const JournalEntry& e, const std::string& server,
                      const std::string& identity) {
  if (!identity.empty() && !e.identity.empty()) return e.identity == identity;
  return e.server == server;
}

std::vector<JournalEntry> Journal::EntriesFor(const std::string& server,
                                              const std::string& identity) const {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<JournalEntry> out;
  for (const auto& e : entries_)
    if (Belongs(e, server, identity)) out.push_back(e);
  return out;
}

std::optional<JournalEntry> Journal::Find(const std::string& server, const std::string& role,
                                          const std::string& identity) const {
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& e : entries_)
    if (Belongs(e, server, identity) && e.role == role && e.pool.empty()) return e;
  return std::nullopt;
}

std::optional<JournalEntry> Journal::FindPool(const std::string& server, const std::string& pool,
                                              const std::string& identity) const {
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& e : entries_)
    if (Belongs(e, server, identity) && e.mechanism == AdmissionKind::kPausePool && e.pool == pool)
      return e;
  return std::nullopt;
}

std::optional<JournalEntry> Journal::FindSameSystem(const std::string& identity,
                                                    const std::string& role) const {
  auto slash = identity.find('/');
  if (slash == std::string::npos || slash == 0) return std::nullopt;
  const std::string system = identity.substr(0, slash + 1);
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& e : entries_)
    if (e.role == role && e.mechanism == AdmissionKind::kConnectionLimit &&
        e.identity.compare(0, system.size(), system) == 0)
      return e;
  return std::nullopt;
}

void Journal::Adopt(const std::string& server, const std::string& identity) {
  if (identity.empty()) return;
  std::lock_guard<std::mutex> g(mu_);
  auto old = entries_;
  bool changed = false;
  for (auto& x : entries_) {
    if (x.identity == identity && x.server != server) {
      x.server = server;
      changed = true;
    } else if (x.identity.empty() && x.server == server) {
      x.identity = identity;
      changed = true;
    }
  }
  if (!changed) return;
  try {
    SaveLocked();
  } catch (...) {
    entries_ = std::move(old);
    throw;
  }
}

void Journal::Upsert(const JournalEntry& e) {
  std::lock_guard<std::mutex> g(mu_);
  auto old = entries_;
  bool found = false;
  for (auto& x : entries_)
    if (Belongs(x, e.server, e.identity) && x.role == e.role && x.pool == e.pool) {
      x = e;
      found = true;
    }
  if (!found) entries_.push_back(e);
  try {
    SaveLocked();
  } catch (...) {
    entries_ = std::move(old);
    throw;
  }
}

void Journal::Remove(const std::string& server, const std::string& role,
                     const std::string& identity) {
  std::lock_guard<std::mutex> g(mu_);
  RemoveLocked(server, role, "", identity);
}

void Journal::RemovePool(const std::string& server, const std::string& pool,
                         const std::string& identity) {
  std::lock_guard<std::mutex> g(mu_);
  RemoveLocked(server, "", pool, identity);
}

void Journal::RemoveLocked(const std::string& server, const std::string& role,
                           const std::string& pool, const std::string& identity) {
  auto old = entries_;
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const JournalEntry& x) {
                                  return Belongs(x, server, identity) && x.role == role &&
                                         x.pool == pool;
                                }),
                 entries_.end());
  if (entries_.size() == old.size()) return;
  try {
    SaveLocked();
  } catch (...) {
    entries_ = std::move(old);
    throw;
  }
}

void Journal::SaveLocked() const { WriteFileAtomic(path_, SerializeJournal(entries_)); }

}  // namespace wardend

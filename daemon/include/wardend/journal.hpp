// The state file: a journal of every change wardend has made to a server and
// must undo. Written atomically (temp file, fsync, rename, fsync of the
// directory) BEFORE each change is applied, so that after a crash or kill -9
// the next start finds every change that may be in force.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace wardend {

// How a role's admission was closed. The state file names them "override"
// and "alter_role"; ToString/AdmissionKindFrom are the one mapping.
enum class AdmissionKind {
  kOverride,         // the extension's warden.close_admission (per server, also on a standby)
  kConnectionLimit,  // ALTER ROLE ... CONNECTION LIMIT (degraded mode, primary only)
};
const char* ToString(AdmissionKind k);
std::optional<AdmissionKind> AdmissionKindFrom(const std::string& name);

struct JournalEntry {
  std::string server;
  std::string role;
  AdmissionKind mechanism = AdmissionKind::kOverride;
  int original_limit = -1;  // kConnectionLimit: rolconnlimit before the first change (-1 = none)
  int applied_limit = -1;   // what wardend set
  double since = 0;         // unix time of the first change
  // What wardend had set before the last change (-1: nothing): a crash between
  // journaling a new limit and applying it leaves this one in force.
  int previous_limit = -1;
};

bool operator==(const JournalEntry& a, const JournalEntry& b);

std::string SerializeJournal(const std::vector<JournalEntry>& entries);
// Throws std::runtime_error on malformed content.
std::vector<JournalEntry> ParseJournal(const std::string& text);

// Thread-safe; every mutation is persisted before it returns.
class Journal {
 public:
  explicit Journal(std::string path);
  // Loads the file (a missing file is an empty journal). Throws on a corrupt file.
  void Load();
  std::vector<JournalEntry> Entries() const;
  std::vector<JournalEntry> EntriesFor(const std::string& server) const;
  std::optional<JournalEntry> Find(const std::string& server, const std::string& role) const;
  void Upsert(const JournalEntry& e);  // by (server, role); throws if it cannot be written
  void Remove(const std::string& server, const std::string& role);
  const std::string& path() const { return path_; }

 private:
  void SaveLocked() const;
  std::string path_;
  mutable std::mutex mu_;
  std::vector<JournalEntry> entries_;
};

// Writes `data` to `path` atomically and durably.
void WriteFileAtomic(const std::string& path, const std::string& data);

}  // namespace wardend

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

struct JournalEntry {
  std::string server;
  std::string role;
  std::string mechanism;  // "alter_role" (CONNECTION LIMIT) or "override" (warden.close_admission)
  int original_limit = -1;  // alter_role: rolconnlimit before the first change (-1 = none)
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

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

// How a role's admission was closed, or (kPausePool) that a pgbouncer pool
// was paused. The state file names them "override", "alter_role" and
// "pause_pool"; ToString/AdmissionKindFrom are the one mapping.
enum class AdmissionKind {
  kOverride,         // the extension's warden.close_admission (per server, also on a standby)
  kConnectionLimit,  // ALTER ROLE ... CONNECTION LIMIT (degraded mode, primary only)
  kPausePool,        // PAUSE <pool> on the server's pgbouncer (undone by RESUME <pool>)
};
const char* ToString(AdmissionKind k);
std::optional<AdmissionKind> AdmissionKindFrom(const std::string& name);

struct JournalEntry {
  std::string server;  // the [[server]] name when it was last written (for people)
  std::string role;
  AdmissionKind mechanism = AdmissionKind::kOverride;
  int original_limit = -1;  // kConnectionLimit: rolconnlimit before the first change (-1 = none)
  int applied_limit = -1;   // what wardend set
  double since = 0;         // unix time of the first change
  // What wardend had set before the last change (-1: nothing): a crash between
  // journaling a new limit and applying it leaves this one in force.
  int previous_limit = -1;
  std::string identity;  // the server's identity (Capabilities::identity); "" until known
  // kPausePool (role is then ""): the pgbouncer database paused, and the
  // host:port of the pgbouncer_dsn it was paused on (for people).
  std::string pool;
  std::string pgbouncer;
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
  // An entry belongs to a server by identity when both are known, else by name.
  static bool Belongs(const JournalEntry& e, const std::string& server,
                      const std::string& identity);
  std::vector<JournalEntry> EntriesFor(const std::string& server,
                                       const std::string& identity = "") const;
  // A role's admission entry (never a pool's).
  std::optional<JournalEntry> Find(const std::string& server, const std::string& role,
                                   const std::string& identity = "") const;
  // A paused pool's entry.
  std::optional<JournalEntry> FindPool(const std::string& server, const std::string& pool,
                                       const std::string& identity = "") const;
  // By (server or identity, role, pool); throws if it cannot be written.
  void Upsert(const JournalEntry& e);
  void Remove(const std::string& server, const std::string& role, const std::string& identity = "");
  void RemovePool(const std::string& server, const std::string& pool,
                  const std::string& identity = "");
  // Once a server's identity is known: its entries written under another
  // [[server]] name (renamed while wardend was down) take the current name,
  // and entries known only by this name take the identity. Throws if it
  // cannot be written.
  void Adopt(const std::string& server, const std::string& identity);
  // An ALTER ROLE entry for the role on another member of the same system
  // (the part of the identity before '/'): its original survives a failover.
  std::optional<JournalEntry> FindSameSystem(const std::string& identity,
                                             const std::string& role) const;
  const std::string& path() const { return path_; }

 private:
  void SaveLocked() const;
  void RemoveLocked(const std::string& server, const std::string& role, const std::string& pool,
                    const std::string& identity);
  std::string path_;
  mutable std::mutex mu_;
  std::vector<JournalEntry> entries_;
};

// Writes `data` to `path` atomically and durably.
void WriteFileAtomic(const std::string& path, const std::string& data);

}  // namespace wardend

// Closing and reopening a role's admission on one server, behind one
// interface with two implementations: the extension's per-server override
// (warden.close_admission; preferred, also on a standby) and ALTER ROLE ...
// CONNECTION LIMIT (degraded mode, primary only). The executor picks one
// through ChooseMechanism and never compares mechanism names.
// No locks, no threads: a mechanism is used on its server's thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "wardend/journal.hpp"
#include "wardend/pg.hpp"

namespace wardend {

class AdmissionMechanism {
 public:
  virtual ~AdmissionMechanism() = default;
  virtual AdmissionKind kind() const = 0;
  // Whether it can act on this server now (ALTER ROLE never on a standby).
  virtual bool Usable(bool in_recovery) const = 0;
  // The limit in force before any change (for the journal); nullopt: no such role.
  virtual std::optional<int> CurrentLimit(const std::string& role) = 0;
  virtual void Close(const std::string& role, int limit, const std::string& reason) = 0;
  // Undoes: `original` is the journaled limit before the first change,
  // `applied` what wardend set last, `previous` what it had set before (-1:
  // nothing). Returns a note for the log.
  virtual std::string Reopen(const std::string& role, int original, int applied, int previous) = 0;
  // For the log: how a close to `limit` was done ("CONNECTION LIMIT 3 (was 7)").
  virtual std::string DescribeClose(int limit, int original) const = 0;
  // Whether a change it made vanishes with the server's memory (a restart):
  // then the executor forgets it and the next decision puts it back.
  virtual bool LostAtRestart() const = 0;
};

// The mechanism of `kind` over a connection (which must outlive it).
std::unique_ptr<AdmissionMechanism> MakeMechanism(AdmissionKind kind, Connection& c);
// The mechanism a server offers: the override where warden.close_admission exists.
AdmissionKind ChooseMechanism(const Capabilities& caps);

}  // namespace wardend

// libpq at the edge: RAII handles, one connection per server, the poll (one
// round trip) and the statements that apply actions. All SQL goes through
// PQexecParams; role names that must be identifiers through PQescapeIdentifier.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "wardend/snapshot.hpp"

namespace wardend {

struct PGconnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PGresultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ConnPtr = std::unique_ptr<PGconn, PGconnDeleter>;
using ResultPtr = std::unique_ptr<PGresult, PGresultDeleter>;

// A failed statement or a lost connection.
class PgError : public std::runtime_error {
 public:
  PgError(const std::string& msg, std::string sqlstate, bool connection_lost)
      : std::runtime_error(msg), sqlstate_(std::move(sqlstate)), lost_(connection_lost) {}
  const std::string& sqlstate() const { return sqlstate_; }
  bool connection_lost() const { return lost_; }

 private:
  std::string sqlstate_;
  bool lost_;
};

// What the server offers, detected at connect time.
struct Capabilities {
  bool extension = false;        // warden.server_usage & co. exist
  bool close_admission = false;  // warden.close_admission / open_admission
  bool record_action = false;
  std::vector<std::string> record_action_args;  // input argument names of warden.record_action
  bool superuser = false;
  bool in_recovery = false;
};

// A nullable text parameter for Exec.
using Param = std::optional<std::string>;

class Connection {
 public:
  // Connects (blocking, bounded by connect_timeout seconds) and detects capabilities.
  static std::unique_ptr<Connection> Open(const std::string& dsn, int connect_timeout_s,
                                          int statement_timeout_ms);

  ResultPtr Exec(const std::string& sql, const std::vector<Param>& params = {});
  std::string QuoteIdent(const std::string& name);
  const Capabilities& caps() const { return caps_; }
  bool ok() const { return PQstatus(conn_.get()) == CONNECTION_OK; }
  int backend_pid() const { return PQbackendPID(conn_.get()); }
  // Detects the capabilities (done at connect; again to notice CREATE/DROP EXTENSION).
  void Detect();

  // One round trip: the usage views (extension) or pg_stat_activity (degraded).
  Snapshot Poll();

  // Terminates the session if it is still (pid, backend_start) and still idle
  // in `state` for at least min_idle_seconds. Returns whether it was terminated.
  bool TerminateIfStill(int pid, const std::string& backend_start, const std::string& state,
                        double min_idle_seconds);

  // Puts the action into warden.terminations when warden.record_action exists;
  // a failure disables it for this connection (logged once by the caller).
  bool RecordAction(const std::string& action, int pid, const std::string& database,
                    const std::string& role, const std::string& application,
                    const std::string& state, double idle_seconds, const std::string& reason,
                    bool dry_run);

 private:
  explicit Connection(ConnPtr c) : conn_(std::move(c)) {}
  ConnPtr conn_;
  Capabilities caps_;
};

// Closing and reopening a role's admission on one server. Two mechanisms:
// the extension's per-server override (preferred; also on a standby), or
// ALTER ROLE ... CONNECTION LIMIT (degraded mode; primary only).
class Admission {
 public:
  virtual ~Admission() = default;
  virtual const char* mechanism() const = 0;
  // Whether it can act on this server now (ALTER ROLE never on a standby).
  virtual bool Usable(bool in_recovery) const = 0;
  // The limit in force before any change (for the journal); nullopt: no such role.
  virtual std::optional<int> CurrentLimit(Connection& c, const std::string& role) = 0;
  virtual void Close(Connection& c, const std::string& role, int limit,
                     const std::string& reason) = 0;
  // Undoes: `original` is the journaled limit before the first change,
  // `applied` what wardend set last, `previous` what it had set before (-1:
  // nothing). Returns a note for the log.
  virtual std::string Open(Connection& c, const std::string& role, int original, int applied,
                           int previous) = 0;
};

std::unique_ptr<Admission> MakeAdmission(const std::string& mechanism);
// The mechanism this connection should use: "override" or "alter_role".
std::string ChooseAdmission(const Capabilities& caps);

}  // namespace wardend

// libpq at the edge, and the only file that calls it: RAII handles, one
// connection per server, the poll (one round trip) and the statements that
// apply actions; PgBouncer's admin console. All SQL to PostgreSQL goes through
// PQexecParams; role names that must be identifiers through PQescapeIdentifier.
// No locks: a connection belongs to one server's thread.
#pragma once

#include <libpq-fe.h>

#include <map>
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
  // warden.app_usage has longest_idle_in_transaction_seconds (1.1); without
  // it the poll computes it from warden.backends.
  bool idle_in_transaction_column = false;
  bool rewind_roles = false;  // warden.config_status() (1.1) readable: its rewind roles are exempt
  std::vector<std::string> record_action_args;  // input argument names of warden.record_action
  bool superuser = false;
  bool in_recovery = false;
  // The server's identity for the journal: "<system identifier>/<where>",
  // where is cluster_name, the data directory (when readable) and the port,
  // then "@<member>" for a [[cluster]]'s member; "" when it could not be read
  // (then the config name keys it).
  std::string identity;
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
  // Throws PgError whenever it cannot tell (a timeout, a lock, a lost
  // connection): only a confirmed absence clears caps().extension.
  void Detect();
  // How long an override wardend sets lasts unless renewed (0: no expiry).
  void set_lease_seconds(double s) { lease_seconds_ = s; }
  // A [[cluster]]'s member: its Patroni name joins the identity (members of one
  // cluster share the system identifier, and on their own hosts often the
  // cluster_name, data directory and port too).
  void set_member(const std::string& member) {
    member_ = member;
    if (!member_.empty() && !caps_.identity.empty()) caps_.identity += "@" + member_;
  }

  // One round trip: the usage views (extension) or pg_stat_activity (degraded).
  Snapshot Poll();

  // Terminates the session if it is still (pid, backend_start), still in
  // `state`, has not changed state since `sampled_at` (when known) and has
  // been idle for at least min_idle_seconds. Returns whether it was terminated.
  // A superuser's session only when superuser_ok.
  bool TerminateIfStill(int pid, const std::string& backend_start, const std::string& state,
                        const std::string& sampled_at, double min_idle_seconds, bool superuser_ok);

  // The role's rolconnlimit (-1: none); nullopt: no such role.
  std::optional<int> RoleConnectionLimit(const std::string& role);
  // The names in `roles` that are no role on this server.
  std::vector<std::string> MissingRoles(const std::vector<std::string>& roles);
  void SetRoleConnectionLimit(const std::string& role, int limit);  // ALTER ROLE
  // warden.close_admission / warden.open_admission for the role, any application.
  void CloseAdmission(const std::string& role, int limit, const std::string& reason);
  void OpenAdmission(const std::string& role);
  // The caps of warden.admission_overrides for roles, any application (role -> max_connections).
  std::map<std::string, int> RoleOverrides();

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
  double lease_seconds_ = 0;
  std::string member_;
};

// "host:port" of a libpq connection string, for people (the journal, the
// log); the defaults where it names none.
std::string DsnHostPort(const std::string& dsn);

// PgBouncer's admin console: the simple query protocol only, constant
// statements, no parameters (it refuses PQexecParams).
class ConsoleConnection {
 public:
  // Connects (bounded by connect_timeout seconds); throws PgError.
  static std::unique_ptr<ConsoleConnection> Open(const std::string& dsn, int connect_timeout_s);
  // The rows of a constant statement ("SHOW POOLS"), column name -> text;
  // at most max_rows. Throws PgError.
  std::vector<std::map<std::string, std::string>> Show(const char* statement, size_t max_rows);
  // A command without rows ("PAUSE app", "RESUME app"), waited for at most
  // timeout_ms without blocking the thread longer: true once pgbouncer
  // answered it, false when it has not yet (PAUSE waits for the pool's server
  // connections to be released; it stays under way in pgbouncer, and this
  // connection must not be used again). Throws PgError on an error answer.
  bool Command(const std::string& statement, int timeout_ms);
  bool ok() const { return PQstatus(conn_.get()) == CONNECTION_OK; }

 private:
  explicit ConsoleConnection(ConnPtr c) : conn_(std::move(c)) {}
  ConnPtr conn_;
};

}  // namespace wardend

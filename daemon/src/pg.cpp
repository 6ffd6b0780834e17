// libpq edge (see pg.hpp). No locks: a connection belongs to one server's thread.
#include "wardend/pg.hpp"

#include <fmt/format.h>

#include <poll.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "wardend/clock.hpp"
#include "wardend/fold.hpp"

namespace wardend {

namespace {

// The poll with the extension: its views, one statement, one JSON value.
const char* kPollExtension = R"SQL(
SELECT pg_catalog.json_build_object(
  'server', (SELECT pg_catalog.json_build_array(connections, max_connections, reserved,
                                                usage_percent, in_recovery)
               FROM warden.server_usage),
  'apps', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(database, role,
                                    application_name, connections, active, idle,
                                    idle_in_transaction, coalesce(longest_idle_seconds, 0),
                                    @IIT@)),
                           '[]')
             FROM warden.app_usage WHERE connections > 0),
  'counters', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(database, role,
                                        application_name, refused, terminated)), '[]')
                 FROM warden.app_usage WHERE refused > 0 OR terminated > 0),
  'budgets', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(name, application,
                                       role, database, max_connections, connections)), '[]')
                FROM warden.budget_usage),
  'backends', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(pid, role,
                                        database, application_name, state, state_seconds,
                                        backend_start::text, u.sampled_at::text)), '[]')
                 FROM warden.backends, (SELECT sampled_at FROM warden.server_usage) u
                WHERE state LIKE 'idle%'),
  'own_pid', pg_catalog.pg_backend_pid(),
  'replay_lag', CASE WHEN pg_catalog.pg_is_in_recovery()
                     THEN extract(epoch FROM pg_catalog.now()
                                             - pg_catalog.pg_last_xact_replay_timestamp()) END,
  'settings', pg_catalog.json_build_array(
                pg_catalog.current_setting('warden.degraded_percent', true),
                pg_catalog.current_setting('warden.unhealthy_percent', true),
                pg_catalog.current_setting('warden.exempt_roles', true),
                pg_catalog.current_setting('warden.enforce', true),
                @REWIND@)
)::text)SQL";

// Degraded mode: the same facts from pg_stat_activity.
const char* kPollDegraded = R"SQL(
WITH a AS (
  SELECT pid, datname::text AS database, usename::text AS role, application_name, state,
         coalesce(extract(epoch FROM pg_catalog.clock_timestamp() - state_change),
                  0)::float8 AS state_seconds,
         backend_start
    FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'),
s AS (SELECT (SELECT pg_catalog.count(*) FROM a)::int AS connections,
             pg_catalog.current_setting('max_connections')::int AS max_connections,
             pg_catalog.current_setting('superuser_reserved_connections')::int AS reserved)
SELECT pg_catalog.json_build_object(
  'server', (SELECT pg_catalog.json_build_array(connections, max_connections, reserved,
                100.0 * connections / greatest(1, max_connections - reserved),
                pg_catalog.pg_is_in_recovery()) FROM s),
  'apps', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(database, role,
                                    application_name, n, act, idl, iit, lis, liit)),
                           '[]')
             FROM (SELECT database, role, application_name, pg_catalog.count(*) AS n,
                          pg_catalog.count(*) FILTER (WHERE state = 'active') AS act,
                          pg_catalog.count(*) FILTER (WHERE state = 'idle') AS idl,
                          pg_catalog.count(*) FILTER (WHERE state LIKE 'idle in transaction%')
                            AS iit,
                          coalesce(pg_catalog.max(state_seconds) FILTER (WHERE state = 'idle'),
                                   0) AS lis,
                          coalesce(pg_catalog.max(state_seconds)
                                     FILTER (WHERE state LIKE 'idle in transaction%'), 0) AS liit
                     FROM a GROUP BY 1, 2, 3) g),
  'backends', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(pid, role,
                                        database, application_name, state, state_seconds,
                                        backend_start::text,
                                        pg_catalog.statement_timestamp()::text)), '[]')
                 FROM a WHERE state LIKE 'idle%'),
  'own_pid', pg_catalog.pg_backend_pid(),
  'replay_lag', CASE WHEN pg_catalog.pg_is_in_recovery()
                     THEN extract(epoch FROM pg_catalog.now()
                                             - pg_catalog.pg_last_xact_replay_timestamp()) END
)::text)SQL";

// The poll with the extension, for an extension whose warden.app_usage has
// (1.1) or has not (1.0) longest_idle_in_transaction_seconds, and whose
// warden.config_status() (1.1, readable by pg_monitor) lists the rewind roles
// the extension exempts (warden.exempt_rewind_roles): wardend exempts them too.
std::string PollExtensionSql(bool idle_in_transaction_column, bool rewind_roles) {
  std::string sql = kPollExtension;
  sql.replace(
      sql.find("@IIT@"), 5,
      idle_in_transaction_column ? "coalesce(longest_idle_in_transaction_seconds, 0)" : "0");
  sql.replace(sql.find("@REWIND@"), 8,
              rewind_roles ? "(SELECT pg_catalog.to_json(rewind_roles) FROM warden.config_status() "
                             "WHERE pg_catalog.current_setting('warden.exempt_rewind_roles', true) "
                             "OPERATOR(pg_catalog.=) 'on')"
                           : "NULL");
  return sql;
}

std::string Str(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : ""; }
double Num(const nlohmann::json& v) { return v.is_number() ? v.get<double>() : 0.0; }
int Int(const nlohmann::json& v) { return v.is_number() ? static_cast<int>(v.get<double>()) : 0; }

std::string Trimmed(std::string msg) {
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

// Blocking connect bounded by connect_timeout; throws PgError (connection lost).
ConnPtr Connect(const std::string& dsn, int connect_timeout_s) {
  std::string timeout = std::to_string(std::max(1, connect_timeout_s));
  // dbname first (expanded as the connection string), then our defaults.
  const char* keys[] = {"dbname", "connect_timeout", "fallback_application_name", nullptr};
  const char* vals[] = {dsn.c_str(), timeout.c_str(), "wardend", nullptr};
  ConnPtr c(PQconnectdbParams(keys, vals, 1));
  if (!c) throw PgError("out of memory", "", true);
  if (PQstatus(c.get()) != CONNECTION_OK) throw PgError(Trimmed(PQerrorMessage(c.get())), "", true);
  return c;
}

}  // namespace

std::unique_ptr<Connection> Connection::Open(const std::string& dsn, int connect_timeout_s,
                                             int statement_timeout_ms) {
  std::unique_ptr<Connection> conn(new Connection(Connect(dsn, connect_timeout_s)));
  // Every statement wardend runs resolves names in pg_catalog first and never
  // in a schema a user can create objects in (pg_temp is named last so that
  // it is not searched first either).
  conn->Exec(
      "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false), "
      "pg_catalog.set_config('statement_timeout', $1, false)",
      {std::to_string(statement_timeout_ms)});
  conn->Detect();
  return conn;
}

ResultPtr Connection::Exec(const std::string& sql, const std::vector<Param>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  ResultPtr r(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                           values.data(), nullptr, nullptr, 0));
  ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string msg = r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_.get());
    if (msg.empty()) msg = PQerrorMessage(conn_.get());
    msg = Trimmed(std::move(msg));
    const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
    throw PgError(msg, state ? state : "", PQstatus(conn_.get()) != CONNECTION_OK);
  }
  return r;
}

std::string Connection::QuoteIdent(const std::string& name) {
  char* q = PQescapeIdentifier(conn_.get(), name.c_str(), name.size());
  if (!q) throw PgError(PQerrorMessage(conn_.get()), "", !ok());
  std::string out(q);
  PQfreemem(q);
  return out;
}

void Connection::Detect() {
  auto r = Exec(R"SQL(
SELECT pg_catalog.to_regclass('warden.server_usage') IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'warden' AND p.proname = 'close_admission')
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'warden' AND p.proname = 'open_admission'),
       (SELECT pg_catalog.pg_get_function_identity_arguments(p.oid) FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'warden' AND p.proname = 'record_action' ORDER BY p.oid LIMIT 1),
       (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
       pg_catalog.pg_is_in_recovery(),
       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                WHERE attrelid = pg_catalog.to_regclass('warden.app_usage')
                  AND attname = 'longest_idle_in_transaction_seconds' AND NOT attisdropped),
       pg_catalog.to_regprocedure('warden.config_status()') IS NOT NULL
   AND pg_catalog.has_function_privilege('warden.config_status()', 'EXECUTE'))SQL");
  bool views = std::string(PQgetvalue(r.get(), 0, 0)) == "t";
  caps_.close_admission = std::string(PQgetvalue(r.get(), 0, 1)) == "t";
  caps_.superuser = std::string(PQgetvalue(r.get(), 0, 3)) == "t";
  caps_.in_recovery = std::string(PQgetvalue(r.get(), 0, 4)) == "t";
  caps_.idle_in_transaction_column = std::string(PQgetvalue(r.get(), 0, 5)) == "t";
  caps_.rewind_roles = std::string(PQgetvalue(r.get(), 0, 6)) == "t";
  caps_.record_action = !PQgetisnull(r.get(), 0, 2);
  caps_.record_action_args.clear();  // Detect runs again at every capability probe
  if (caps_.record_action) {
    // "action text, pid integer, ..." -> the argument names, with their types.
    std::string args = PQgetvalue(r.get(), 0, 2);
    std::stringstream ss(args);
    std::string item;
    while (std::getline(ss, item, ',')) {
      while (!item.empty() && item.front() == ' ') item.erase(0, 1);
      if (item.rfind("IN ", 0) == 0) item.erase(0, 3);
      caps_.record_action_args.push_back(item);
    }
  }
  caps_.identity.clear();
  try {
    auto id = Exec(R"SQL(
SELECT (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) || '/' ||
       pg_catalog.current_setting('cluster_name') || ':' ||
       CASE WHEN pg_catalog.pg_has_role('pg_read_all_settings', 'USAGE')
            THEN pg_catalog.current_setting('data_directory') ELSE '' END || ':' ||
       pg_catalog.current_setting('port'))SQL");
    if (!PQgetisnull(id.get(), 0, 0)) caps_.identity = PQgetvalue(id.get(), 0, 0);
    if (!member_.empty() && !caps_.identity.empty()) caps_.identity += "@" + member_;
  } catch (const PgError& e) {
    if (e.connection_lost() || e.sqlstate() != "42501") throw;  // only "not allowed" is an answer
  }
  caps_.extension = false;
  if (views) {
    // The schema may exist on a server that did not preload the library: that
    // (SQLSTATE 55000) is the one error that means "no extension". Anything
    // else (a lock, a timeout) means "could not tell" and is thrown.
    try {
      Exec("SELECT 1 FROM warden.server_usage");
      caps_.extension = true;
    } catch (const PgError& e) {
      if (e.connection_lost() || e.sqlstate() != "55000") throw;
    }
  }
  if (!caps_.extension) {
    caps_.close_admission = false;
    caps_.record_action = false;
  }
}

Snapshot Connection::Poll() {
  auto r =
      Exec(caps_.extension ? PollExtensionSql(caps_.idle_in_transaction_column, caps_.rewind_roles)
                           : std::string(kPollDegraded));
  Snapshot s;
  auto j = nlohmann::json::parse(PQgetvalue(r.get(), 0, 0));
  r.reset();
  const auto& sv = j.at("server");
  s.connections = Int(sv.at(0));
  s.max_connections = Int(sv.at(1));
  s.reserved = Int(sv.at(2));
  s.usage_percent = Num(sv.at(3));
  s.in_recovery = sv.at(4).is_boolean() && sv.at(4).get<bool>();
  s.own_pid = Int(j.at("own_pid"));
  if (j.at("replay_lag").is_number()) s.replay_lag_seconds = std::max(0.0, Num(j.at("replay_lag")));
  if (j.contains("settings")) {
    const auto& st = j.at("settings");
    auto pct = [](const nlohmann::json& v) -> std::optional<double> {
      if (!v.is_string()) return std::nullopt;
      const std::string text = v.get<std::string>();  // outlives `end`
      char* end = nullptr;
      double d = std::strtod(text.c_str(), &end);
      return end != text.c_str() && *end == '\0' && d > 0 ? std::optional<double>(d) : std::nullopt;
    };
    s.degraded_percent = pct(st.at(0));
    s.unhealthy_percent = pct(st.at(1));
    if (st.size() > 3 && st.at(3).is_string()) s.enforce_off = st.at(3).get<std::string>() == "off";
    if (st.at(2).is_string()) {
      std::stringstream list(st.at(2).get<std::string>());
      std::string role;
      while (std::getline(list, role, ',')) {
        role.erase(0, role.find_first_not_of(" \t\""));
        role.erase(role.find_last_not_of(" \t\"") + 1);
        if (!role.empty()) s.exempt_roles.push_back(role);
      }
    }
    if (st.size() > 4 && st.at(4).is_array())
      for (const auto& role : st.at(4))
        if (role.is_string()) s.exempt_roles.push_back(role.get<std::string>());
  }
  s.apps.reserve(j.at("apps").size());
  for (const auto& a : j.at("apps"))
    s.apps.push_back(AppUsage{Str(a.at(0)), Str(a.at(1)), Str(a.at(2)), Int(a.at(3)), Int(a.at(4)),
                              Int(a.at(5)), Int(a.at(6)), Num(a.at(7)), Num(a.at(8))});
  if (j.contains("counters"))
    for (const auto& a : j.at("counters"))
      s.counters.push_back(
          AppCounters{Str(a.at(0)), Str(a.at(1)), Str(a.at(2)), Num(a.at(3)), Num(a.at(4))});
  if (j.contains("budgets"))
    for (const auto& b : j.at("budgets"))
      s.budgets.push_back(BudgetUse{Str(b.at(0)), Str(b.at(1)), Str(b.at(2)), Str(b.at(3)),
                                    Int(b.at(4)), Int(b.at(5))});
  s.backends.reserve(j.at("backends").size());
  for (const auto& b : j.at("backends"))
    s.backends.push_back(Backend{Int(b.at(0)), Str(b.at(1)), Str(b.at(2)), Str(b.at(3)),
                                 Str(b.at(4)), Num(b.at(5)), Str(b.at(6)),
                                 b.size() > 7 ? Str(b.at(7)) : std::string()});
  if (caps_.extension && !caps_.idle_in_transaction_column) LongestIdleInTransactionFromBackends(s);
  return s;
}

bool Connection::TerminateIfStill(int pid, const std::string& backend_start,
                                  const std::string& state, const std::string& sampled_at,
                                  double min_idle_seconds, bool superuser_ok) {
  // One statement: the check and the termination see the same row, so a
  // session used since its state was sampled (a later state_change) is spared.
  auto r =
      Exec(R"SQL(
SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
 WHERE pid = $1::int AND backend_start = $2::timestamptz AND state = $3
   AND state_change <= coalesce($5::timestamptz, state_change)
   AND extract(epoch FROM pg_catalog.clock_timestamp() - state_change) >= $4::float8
   AND ($6::bool OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                                 WHERE r.oid = usesysid AND r.rolsuper)))SQL",
           {std::to_string(pid), backend_start, state, fmt::format("{:.6f}", min_idle_seconds),
            sampled_at.empty() ? Param() : Param(sampled_at), superuser_ok ? "true" : "false"});
  return PQntuples(r.get()) == 1 && std::string(PQgetvalue(r.get(), 0, 0)) == "t";
}

bool Connection::RecordAction(const std::string& action, int pid, const std::string& database,
                              const std::string& role, const std::string& application,
                              const std::string& state, double idle_seconds,
                              const std::string& reason, bool dry_run) {
  if (!caps_.record_action) return false;
  std::vector<std::string> named;
  std::vector<Param> params;
  for (const std::string& arg : caps_.record_action_args) {
    auto sp = arg.find(' ');
    if (sp == std::string::npos) continue;
    std::string name = arg.substr(0, sp), type = arg.substr(sp + 1);
    Param v;
    if (name == "action" || name == "kind")
      v = action;
    else if (name == "pid")
      v = std::to_string(pid);
    else if (name == "database" || name == "datname")
      v = database.empty() ? Param() : Param(database);
    else if (name == "role")
      v = role;
    else if (name == "application_name" || name == "application")
      v = application;
    else if (name == "state")
      v = state.empty() ? Param() : Param(state);
    else if (name == "idle_seconds")
      v = fmt::format("{:.3f}", idle_seconds);
    else if (name == "policy" || name == "reason" || name == "detail" || name == "note" ||
             name == "message")
      v = "wardend: " + reason;
    else if (name == "source")
      v = "daemon";
    else if (name == "dry_run")
      v = dry_run ? "true" : "false";
    else
      continue;  // left to its default
    params.push_back(v);
    named.push_back(fmt::format("{} => ${}::{}", QuoteIdent(name), params.size(), type));
  }
  std::string sql = "SELECT warden.record_action(";
  for (size_t i = 0; i < named.size(); ++i) sql += (i ? ", " : "") + named[i];
  sql += ")";
  try {
    Exec(sql, params);
    return true;
  } catch (const PgError& e) {
    if (e.connection_lost()) throw;
    caps_.record_action = false;
    throw;
  }
}

std::vector<std::string> Connection::MissingRoles(const std::vector<std::string>& roles) {
  nlohmann::json names = roles;
  auto r = Exec(
      "SELECT n FROM pg_catalog.json_array_elements_text($1::json) AS n "
      "WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = n) ORDER BY 1",
      {names.dump()});
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(PQntuples(r.get())));
  for (int i = 0; i < PQntuples(r.get()); ++i) out.emplace_back(PQgetvalue(r.get(), i, 0));
  return out;
}

std::optional<int> Connection::RoleConnectionLimit(const std::string& role) {
  auto r = Exec("SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = $1", {role});
  if (PQntuples(r.get()) == 0) return std::nullopt;
  return std::stoi(PQgetvalue(r.get(), 0, 0));
}

void Connection::SetRoleConnectionLimit(const std::string& role, int limit) {
  try {
    Exec(fmt::format("ALTER ROLE {} CONNECTION LIMIT {}", QuoteIdent(role), limit));
  } catch (const PgError& e) {
    if (e.sqlstate() != "42501") throw;
    // PostgreSQL says only "permission denied to alter role": say what is missing.
    throw PgError(fmt::format("{} (ALTER ROLE ... CONNECTION LIMIT needs the CREATEROLE "
                              "attribute, and superuser for a superuser role: grant it to "
                              "wardend's role, or install the pg_warden extension)",
                              e.what()),
                  e.sqlstate(), e.connection_lost());
  }
}

void Connection::CloseAdmission(const std::string& role, int limit, const std::string& reason) {
  // A lease: renewed while the reason holds (Executor::Renew), so that a
  // wardend that dies leaves no cap behind for longer than this.
  Exec(
      "SELECT warden.close_admission(role => $1, application => NULL, max_connections => "
      "$2::int, reason => $3, expires => $4::interval)",
      {role, std::to_string(limit), reason,
       lease_seconds_ > 0 ? Param(fmt::format("{:.3f} s", lease_seconds_)) : Param()});
}

std::map<std::string, int> Connection::RoleOverrides() {
  auto r = Exec(
      "SELECT role::text, max_connections FROM warden.admission_overrides "
      "WHERE application IS NULL AND max_connections IS NOT NULL");
  std::map<std::string, int> out;
  for (int i = 0; i < PQntuples(r.get()); ++i)
    out[PQgetvalue(r.get(), i, 0)] = std::stoi(PQgetvalue(r.get(), i, 1));
  return out;
}

void Connection::OpenAdmission(const std::string& role) {
  Exec("SELECT warden.open_admission(role => $1, application => NULL)", {role});
}

// -- PgBouncer's admin console -------------------------------------------------

std::unique_ptr<ConsoleConnection> ConsoleConnection::Open(const std::string& dsn,
                                                           int connect_timeout_s) {
  return std::unique_ptr<ConsoleConnection>(new ConsoleConnection(Connect(dsn, connect_timeout_s)));
}

std::vector<std::map<std::string, std::string>> ConsoleConnection::Show(const char* statement,
                                                                        size_t max_rows) {
  ResultPtr r(PQexec(conn_.get(), statement));
  if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK)
    throw PgError(std::string(statement) + ": " + Trimmed(PQerrorMessage(conn_.get())), "", !ok());
  std::vector<std::map<std::string, std::string>> rows;
  const int nfields = PQnfields(r.get());
  for (int i = 0; i < PQntuples(r.get()) && static_cast<size_t>(i) < max_rows; ++i) {
    std::map<std::string, std::string> row;
    for (int f = 0; f < nfields; ++f) row[PQfname(r.get(), f)] = PQgetvalue(r.get(), i, f);
    rows.push_back(std::move(row));
  }
  return rows;
}

bool ConsoleConnection::Command(const std::string& statement, int timeout_ms) {
  PGconn* c = conn_.get();
  if (!PQsendQuery(c, statement.c_str()))
    throw PgError(statement + ": " + Trimmed(PQerrorMessage(c)), "", !ok());
  const double deadline = Mono() + timeout_ms / 1000.0;
  std::string error;
  for (;;) {
    if (!PQconsumeInput(c)) throw PgError(statement + ": " + Trimmed(PQerrorMessage(c)), "", true);
    while (!PQisBusy(c)) {
      ResultPtr r(PQgetResult(c));
      if (!r) {
        if (!error.empty()) throw PgError(fmt::format("{}: {}", statement, error), "", !ok());
        return true;
      }
      const auto st = PQresultStatus(r.get());
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && error.empty()) {
        error = Trimmed(PQresultErrorMessage(r.get()));
        if (error.empty()) error = PQresStatus(st);
      }
    }
    const double left = deadline - Mono();
    if (left <= 0) return false;
    pollfd p{PQsocket(c), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (n < 0 && errno != EINTR)
      throw PgError(fmt::format("{}: poll: {}", statement, std::strerror(errno)), "", true);
  }
}

std::string DsnHostPort(const std::string& dsn) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (err) PQfreemem(err);
  std::string host, port;
  if (opts) {
    for (PQconninfoOption* o = opts; o->keyword; ++o) {
      if (!o->val) continue;
      if (std::string(o->keyword) == "host")
        host = o->val;
      else if (std::string(o->keyword) == "port")
        port = o->val;
    }
    PQconninfoFree(opts);
  }
  return (host.empty() ? "localhost" : host) + ":" + (port.empty() ? "5432" : port);
}

}  // namespace wardend

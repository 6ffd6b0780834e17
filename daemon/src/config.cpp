// Parsing and validation of wardend.toml. Every key is checked for type and
// range, unknown keys are errors (a typo must not silently disable a role limit),
// and every error names the file, the line and the key. Pure (no I/O but
// reading the file named), no locks.
#include "wardend/config.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace wardend {

const char* ToString(Priority p) {
  switch (p) {
    case Priority::kLow:
      return "low";
    case Priority::kNormal:
      return "normal";
    case Priority::kCritical:
      return "critical";
  }
  return "normal";
}

const char* ToString(EmergencyAction a) {
  switch (a) {
    case EmergencyAction::kTerminateIdle:
      return "terminate_idle";
    case EmergencyAction::kCloseAdmission:
      return "close_admission";
    case EmergencyAction::kPausePool:
      return "pause_pool";
  }
  return "?";
}

const char* ToString(RoleScope s) { return s == RoleScope::kCluster ? "cluster" : "server"; }

const RoleLimitConfig* Config::RoleLimitFor(const std::string& role) const {
  for (const auto& r : role_limits)
    if (r.role == role) return &r;
  return nullptr;
}

Priority Config::PriorityOf(const std::string& role) const {
  const RoleLimitConfig* b = RoleLimitFor(role);
  return b ? b->priority : Priority::kNormal;
}

ConfigError::ConfigError(std::string file, int line, std::string key, const std::string& message)
    : std::runtime_error(file + ":" + std::to_string(line) + ": key '" + key + "': " + message),
      file_(std::move(file)),
      line_(line),
      key_(std::move(key)) {}

std::string MaskDsn(const std::string& dsn) {
  static const std::regex kv(R"((password\s*=\s*)('([^'\\]|\\.)*'|\S+))", std::regex::icase);
  static const std::regex uri(R"((://[^:/@\s]*:)[^@\s]*@)");
  std::string out = std::regex_replace(dsn, kv, "$1********");
  return std::regex_replace(out, uri, "$1********@");
}

namespace {

class Parser {
 public:
  explicit Parser(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void Fail(const toml::node* node, const std::string& key, const std::string& msg,
                         int fallback_line = 1) const {
    int line = fallback_line;
    if (node && node->source().begin.line > 0) line = static_cast<int>(node->source().begin.line);
    throw ConfigError(file_, line, key, msg);
  }

  // Rejects keys that are not in `known`.
  void CheckKeys(const toml::table& t, const std::string& prefix,
                 std::initializer_list<const char*> known) const {
    for (auto&& [k, v] : t) {
      bool ok = false;
      for (const char* name : known) ok = ok || k.str() == name;
      if (!ok) {
        int line = k.source().begin.line > 0 ? static_cast<int>(k.source().begin.line) : 1;
        throw ConfigError(file_, line, prefix + std::string(k.str()), "unknown key");
      }
    }
  }

  std::optional<std::string> String(const toml::table& t, const std::string& prefix,
                                    const char* key) const {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (!n->is_string()) Fail(n, prefix + key, "must be a string");
    auto v = n->value<std::string>();
    // libpq, PostgreSQL and the file system all stop at a NUL: "a\u0000b" would mean "a".
    if (v && v->find('\0') != std::string::npos)
      Fail(n, prefix + key, "must not contain a NUL character (\\u0000)");
    return v;
  }

  // A DSN libpq would refuse at connect time (unknown keyword, bad quoting)
  // is refused here, with libpq's own message.
  void CheckDsn(const toml::table& t, const std::string& prefix, const char* key,
                const std::string& dsn) const {
    // As libpq decides for dbname with expand_dbname: a string with "=" or a
    // URI is a connection string; anything else is a database name.
    if (dsn.find('=') == std::string::npos && dsn.rfind("postgresql://", 0) != 0 &&
        dsn.rfind("postgres://", 0) != 0)
      return;
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
    if (opts) {
      PQconninfoFree(opts);
      return;
    }
    std::string msg = err ? err : "out of memory";
    if (err) PQfreemem(err);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    Fail(t.get(key), prefix + key, "not a valid libpq connection string: " + msg);
  }

  std::optional<bool> Bool(const toml::table& t, const std::string& prefix, const char* key) const {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (!n->is_boolean()) Fail(n, prefix + key, "must be true or false");
    return n->value<bool>();
  }

  std::optional<long long> Int(const toml::table& t, const std::string& prefix, const char* key,
                               long long lo, long long hi) const {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (!n->is_integer()) Fail(n, prefix + key, "must be an integer");
    long long v = *n->value<long long>();
    if (v < lo || v > hi)
      Fail(n, prefix + key,
           "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", not " +
               std::to_string(v));
    return v;
  }

  std::optional<double> Number(const toml::table& t, const std::string& prefix, const char* key,
                               double lo, double hi) const {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    double v;
    if (n->is_integer())
      v = static_cast<double>(*n->value<long long>());
    else if (n->is_floating_point())
      v = *n->value<double>();
    else
      Fail(n, prefix + key, "must be a number");
    if (!(v >= lo && v <= hi)) {
      std::ostringstream m;
      m << "must be between " << lo << " and " << hi << ", not " << v;
      Fail(n, prefix + key, m.str());
    }
    return v;
  }

  std::optional<Millis> Duration(const toml::table& t, const std::string& prefix, const char* key,
                                 Millis min) const {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (!n->is_string())
      Fail(n, prefix + key,
           "must be a duration string with a unit, like \"200ms\", \"30s\", \"10m\", \"1h\"");
    auto d = ParseDuration(*n->value<std::string>());
    if (!d)
      Fail(n, prefix + key,
           "invalid duration \"" + *n->value<std::string>() +
               "\" (a number and a unit: ms, s, m, h; e.g. \"30s\")");
    if (*d < min) Fail(n, prefix + key, "must be at least " + FormatDuration(min));
    return d;
  }

  Priority ParsePriority(const toml::node* n, const std::string& key) const {
    if (!n->is_string()) Fail(n, key, "must be \"low\", \"normal\" or \"critical\"");
    std::string s = *n->value<std::string>();
    if (s == "low") return Priority::kLow;
    if (s == "normal") return Priority::kNormal;
    if (s == "critical") return Priority::kCritical;
    Fail(n, key, "must be \"low\", \"normal\" or \"critical\", not \"" + s + "\"");
  }

  std::optional<std::vector<Priority>> Priorities(const toml::table& t, const std::string& prefix,
                                                  const char* key) const {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    const toml::array* arr = n->as_array();
    if (!arr) Fail(n, prefix + key, "must be an array of priorities, like [\"critical\"]");
    std::vector<Priority> out;
    for (size_t i = 0; i < arr->size(); ++i)
      out.push_back(ParsePriority(arr->get(i), prefix + key + "[" + std::to_string(i) + "]"));
    return out;
  }

  // [[name]] arrays of tables; a single [name] table is an error (says how to write it).
  std::vector<const toml::table*> Tables(const toml::table& root, const char* name) const {
    std::vector<const toml::table*> out;
    const toml::node* n = root.get(name);
    if (!n) return out;
    const toml::array* arr = n->as_array();
    if (!arr) Fail(n, name, std::string("must be an array of tables: write [[") + name + "]]");
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::table* t = arr->get(i)->as_table();
      if (!t)
        Fail(arr->get(i), std::string(name) + "[" + std::to_string(i) + "]", "must be a table");
      out.push_back(t);
    }
    return out;
  }

  int LineOf(const toml::table& t) const {
    return t.source().begin.line > 0 ? static_cast<int>(t.source().begin.line) : 1;
  }

  Config Parse(const std::string& text) {
    toml::table root;
    try {
      root = toml::parse(text, file_);
    } catch (const toml::parse_error& e) {
      throw ConfigError(file_, static_cast<int>(e.source().begin.line), "(syntax)",
                        std::string(e.description()));
    }
    Config cfg;
    cfg.path = file_;
    CheckKeys(root, "", {"daemon", "server", "cluster", "role", "budget", "emergency"});

    if (const toml::node* dn = root.get("daemon")) {
      const toml::table* d = dn->as_table();
      if (!d) Fail(dn, "daemon", "must be a table: write [daemon]");
      ParseDaemon(*d, cfg.daemon);
    }

    std::set<std::string> names;
    auto servers = Tables(root, "server");
    for (size_t i = 0; i < servers.size(); ++i) {
      const toml::table& t = *servers[i];
      std::string p = "server[" + std::to_string(i) + "].";
      CheckKeys(t, p, {"name", "dsn", "pgbouncer_dsn"});
      ServerConfig s;
      auto name = String(t, p, "name");
      if (!name || name->empty())
        Fail(t.get("name"), p + "name", "is required (a non-empty string)", LineOf(t));
      if (name->size() > 63) Fail(t.get("name"), p + "name", "must be at most 63 characters");
      if (!names.insert(*name).second)
        Fail(t.get("name"), p + "name", "duplicate server name \"" + *name + "\"");
      auto dsn = String(t, p, "dsn");
      if (!dsn || dsn->empty())
        Fail(t.get("dsn"), p + "dsn", "is required (a libpq connection string)", LineOf(t));
      CheckDsn(t, p, "dsn", *dsn);
      s.name = *name;
      s.dsn = *dsn;
      s.pgbouncer_dsn = String(t, p, "pgbouncer_dsn").value_or("");
      if (!s.pgbouncer_dsn.empty()) CheckDsn(t, p, "pgbouncer_dsn", s.pgbouncer_dsn);
      cfg.servers.push_back(std::move(s));
    }
    auto clusters = Tables(root, "cluster");
    for (size_t i = 0; i < clusters.size(); ++i)
      cfg.clusters.push_back(ParseCluster(*clusters[i], i, names));
    if (cfg.servers.empty() && cfg.clusters.empty())
      throw ConfigError(file_, 1, "server", "at least one [[server]] or [[cluster]] is required");

    // [[role]]; the older spelling [[budget]] (key `role` for `name`) is
    // still read, with a warning, for one release.
    std::set<std::string> roles;
    for (const char* table : {"role", "budget"}) {
      const bool legacy = std::string(table) == "budget";
      auto tables = Tables(root, table);
      if (legacy && !tables.empty())
        cfg.warnings.push_back(file_ + ":" + std::to_string(LineOf(*tables[0])) +
                               ": [[budget]] is deprecated and will not be read by the next "
                               "release: write [[role]] with name = \"...\" instead of role");
      for (size_t i = 0; i < tables.size(); ++i)
        cfg.role_limits.push_back(ParseRoleLimit(*tables[i], table, i, legacy, roles));
      for (size_t i = 0; i < tables.size() && !legacy; ++i)
        if (cfg.clusters.empty() && cfg.role_limits[i].scope == RoleScope::kCluster)
          Fail(tables[i]->get("scope"), std::string(table) + "[" + std::to_string(i) + "].scope",
               "\"cluster\" needs a [[cluster]] (a Patroni cluster whose members it sums over)");
    }

    auto emergencies = Tables(root, "emergency");
    for (size_t i = 0; i < emergencies.size(); ++i) {
      const toml::table& t = *emergencies[i];
      std::string p = "emergency[" + std::to_string(i) + "].";
      CheckKeys(t, p,
                {"at_percent", "action", "older_than", "skip_priority", "priorities", "keep_min",
                 "pool"});
      EmergencyConfig e;
      auto at = Number(t, p, "at_percent", 1, 100);
      if (!at)
        Fail(nullptr, p + "at_percent", "is required (server usage percent, 1-100)", LineOf(t));
      e.at_percent = *at;
      auto action = String(t, p, "action");
      if (!action)
        Fail(nullptr, p + "action",
             "is required: \"terminate_idle\", \"close_admission\" or \"pause_pool\"", LineOf(t));
      if (*action == "terminate_idle")
        e.action = EmergencyAction::kTerminateIdle;
      else if (*action == "close_admission")
        e.action = EmergencyAction::kCloseAdmission;
      else if (*action == "pause_pool")
        e.action = EmergencyAction::kPausePool;
      else
        Fail(t.get("action"), p + "action",
             "must be \"terminate_idle\", \"close_admission\" or \"pause_pool\", not \"" + *action +
                 "\"");
      if (auto d = Duration(t, p, "older_than", Millis(0))) {
        if (e.action != EmergencyAction::kTerminateIdle)
          Fail(t.get("older_than"), p + "older_than", "applies to action \"terminate_idle\" only");
        e.older_than = *d;
      }
      if (auto v = Priorities(t, p, "skip_priority")) {
        if (e.action != EmergencyAction::kTerminateIdle)
          Fail(t.get("skip_priority"), p + "skip_priority",
               "applies to action \"terminate_idle\" only");
        e.skip_priority = *v;
      }
      if (auto v = Priorities(t, p, "priorities")) {
        if (e.action != EmergencyAction::kCloseAdmission)
          Fail(t.get("priorities"), p + "priorities", "applies to action \"close_admission\" only");
        e.priorities = *v;
      }
      if (auto v = Int(t, p, "keep_min", 0, 262143)) {
        if (e.action != EmergencyAction::kTerminateIdle)
          Fail(t.get("keep_min"), p + "keep_min", "applies to action \"terminate_idle\" only");
        e.keep_min = static_cast<int>(*v);
      }
      if (auto v = String(t, p, "pool")) {
        if (e.action != EmergencyAction::kPausePool)
          Fail(t.get("pool"), p + "pool", "applies to action \"pause_pool\" only");
        // Sent unquoted in PAUSE/RESUME on the admin console: a plain name only.
        static const std::regex plain(R"(^[A-Za-z0-9_]{1,63}$)");
        if (!std::regex_match(*v, plain))
          Fail(t.get("pool"), p + "pool",
               "must be a pgbouncer database name of letters, digits and '_' (at most 63)");
        e.pool = *v;
      }
      if (e.action == EmergencyAction::kPausePool) {
        if (e.pool.empty())
          Fail(nullptr, p + "pool", "is required for action \"pause_pool\" (a pgbouncer database)",
               LineOf(t));
        for (size_t k = 0; k < cfg.servers.size(); ++k)
          if (cfg.servers[k].pgbouncer_dsn.empty())
            Fail(t.get("action"), p + "action",
                 "\"pause_pool\" needs the pgbouncer_dsn of every [[server]]: server[" +
                     std::to_string(k) + "] (\"" + cfg.servers[k].name + "\") has none");
        if (!cfg.clusters.empty())
          Fail(t.get("action"), p + "action",
               "\"pause_pool\" needs a pgbouncer_dsn, which a [[cluster]]'s members have not");
      }
      for (size_t j = 0; j < cfg.emergencies.size(); ++j)
        if (cfg.emergencies[j].at_percent == e.at_percent &&
            cfg.emergencies[j].action == e.action && cfg.emergencies[j].pool == e.pool)
          Fail(t.get("at_percent"), p + "at_percent",
               "duplicate emergency step: emergency[" + std::to_string(j) +
                   "] already has this at_percent and action \"" + *action + "\"");
      cfg.emergencies.push_back(std::move(e));
    }
    CheckTerminateIdleSteps(cfg, emergencies);
    return cfg;
  }

  // A terminate_idle step at a higher at_percent is active only while every
  // lower one is (it fires later and is undone sooner). If it also spares at
  // least what a lower one spares (older_than not shorter, keep_min not
  // smaller, skip_priority a superset), it can never take a session the lower
  // one does not: a contradiction (an escalation that does not escalate).
  void CheckTerminateIdleSteps(const Config& cfg,
                               const std::vector<const toml::table*>& tables) const {
    auto spares_all = [](const std::vector<Priority>& hi, const std::vector<Priority>& lo) {
      for (Priority p : lo)
        if (std::find(hi.begin(), hi.end(), p) == hi.end()) return false;
      return true;
    };
    for (size_t h = 0; h < cfg.emergencies.size(); ++h) {
      const EmergencyConfig& hi = cfg.emergencies[h];
      if (hi.action != EmergencyAction::kTerminateIdle) continue;
      for (size_t l = 0; l < cfg.emergencies.size(); ++l) {
        const EmergencyConfig& lo = cfg.emergencies[l];
        if (lo.action != EmergencyAction::kTerminateIdle || lo.at_percent >= hi.at_percent)
          continue;
        if (hi.older_than >= lo.older_than && hi.keep_min >= lo.keep_min &&
            spares_all(hi.skip_priority, lo.skip_priority))
          Fail(tables[h]->get("at_percent"), "emergency[" + std::to_string(h) + "].at_percent",
               fmt::format("this terminate_idle step at {}% can take no session that "
                           "emergency[{}] at {}% does not take already: give it a shorter "
                           "older_than, a smaller keep_min or fewer skip_priority",
                           hi.at_percent, l, lo.at_percent));
      }
    }
  }

  // One [[cluster]]; `names` holds the server names (a cluster's members are
  // named "<cluster>/<member>": a cluster name must not contain '/').
  ClusterConfig ParseCluster(const toml::table& t, size_t i, std::set<std::string>& names) const {
    std::string p = "cluster[" + std::to_string(i) + "].";
    CheckKeys(t, p, {"name", "patroni", "dsn", "member"});
    ClusterConfig c;
    auto name = String(t, p, "name");
    if (!name || name->empty())
      Fail(t.get("name"), p + "name", "is required (a non-empty string)", LineOf(t));
    if (name->size() > 63) Fail(t.get("name"), p + "name", "must be at most 63 characters");
    if (name->find('/') != std::string::npos)
      Fail(t.get("name"), p + "name", "must not contain '/' (members are named CLUSTER/MEMBER)");
    if (!names.insert(*name).second)
      Fail(t.get("name"), p + "name", "duplicate server or cluster name \"" + *name + "\"");
    c.name = *name;
    const toml::node* pn = t.get("patroni");
    const toml::array* arr = pn ? pn->as_array() : nullptr;
    if (!arr || arr->empty())
      Fail(pn, p + "patroni",
           "is required: a non-empty array of Patroni REST API URLs, like "
           "[\"http://10.0.0.1:8008\"]",
           LineOf(t));
    static const std::regex url(R"(^https?://[^/\s]+(/\S*)?$)");
    for (size_t k = 0; k < arr->size(); ++k) {
      const toml::node* u = arr->get(k);
      std::string key = p + "patroni[" + std::to_string(k) + "]";
      if (!u->is_string()) Fail(u, key, "must be a string");
      std::string v = *u->value<std::string>();
      if (!std::regex_match(v, url))
        Fail(u, key, "must be an http:// or https:// URL, like \"http://10.0.0.1:8008\"");
      c.patroni.push_back(v);
    }
    auto dsn = String(t, p, "dsn");
    if (!dsn) Fail(nullptr, p + "dsn", "is required (a libpq connection string)", LineOf(t));
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(dsn->c_str(), &err);
    if (!opts) {
      std::string msg = err ? err : "invalid";
      if (err) PQfreemem(err);
      while (!msg.empty() && std::isspace(static_cast<unsigned char>(msg.back()))) msg.pop_back();
      Fail(t.get("dsn"), p + "dsn", "not a libpq connection string: " + msg);
    }
    std::string given;
    for (PQconninfoOption* o = opts; o->keyword; ++o) {
      std::string k = o->keyword;
      if (o->val && *o->val && (k == "host" || k == "hostaddr" || k == "port")) given = k;
    }
    PQconninfoFree(opts);
    if (!given.empty())
      Fail(t.get("dsn"), p + "dsn",
           "must not set " + given + ": each member's host and port come from Patroni");
    c.dsn = *dsn;
    if (auto m = String(t, p, "member")) {
      if (m->empty()) Fail(t.get("member"), p + "member", "must not be empty (or leave it out)");
      c.member = *m;
    }
    return c;
  }

  // One [[role]] (or legacy [[budget]]) table; `seen` catches a role named twice.
  RoleLimitConfig ParseRoleLimit(const toml::table& t, const char* table, size_t i, bool legacy,
                                 std::set<std::string>& seen) const {
    std::string p = std::string(table) + "[" + std::to_string(i) + "].";
    const char* name_key = legacy ? "role" : "name";
    if (legacy)
      CheckKeys(t, p,
                {"role", "max_connections", "max_idle", "idle_in_transaction_timeout", "priority",
                 "cooldown", "min_idle_age"});
    else
      CheckKeys(t, p,
                {"name", "scope", "max_connections", "max_idle", "idle_in_transaction_timeout",
                 "priority", "cooldown", "min_idle_age"});
    RoleLimitConfig b;
    auto role = String(t, p, name_key);
    if (!role || role->empty())
      Fail(t.get(name_key), p + name_key, "is required (a role name)", LineOf(t));
    // PostgreSQL truncates longer names to NAMEDATALEN - 1 = 63 bytes: the limit would
    // then never match the role it names.
    if (role->size() > 63) Fail(t.get(name_key), p + name_key, "must be at most 63 bytes");
    if (!seen.insert(*role).second)
      Fail(t.get(name_key), p + name_key, "duplicate limits for role \"" + *role + "\"");
    b.role = *role;
    if (auto scope = String(t, p, "scope")) {
      if (*scope == "cluster")
        b.scope = RoleScope::kCluster;
      else if (*scope != "server")
        Fail(t.get("scope"), p + "scope",
             "must be \"server\" (each server alone) or \"cluster\" (summed over a "
             "[[cluster]]'s members), not \"" +
                 *scope + "\"");
    }
    if (auto v = Int(t, p, "max_connections", 0, 262143)) b.max_connections = static_cast<int>(*v);
    if (auto v = Int(t, p, "max_idle", 0, 262143)) b.max_idle = static_cast<int>(*v);
    // Idle sessions are connections: above max_connections, max_idle could
    // only act once the role is already over its limit (two values swapped?).
    if (b.max_idle && b.max_connections && *b.max_idle > *b.max_connections)
      Fail(t.get("max_idle"), p + "max_idle",
           fmt::format("must not be above max_connections ({}): idle sessions are connections",
                       *b.max_connections));
    b.idle_in_transaction_timeout = Duration(t, p, "idle_in_transaction_timeout", Millis(1));
    if (const toml::node* n = t.get("priority")) b.priority = ParsePriority(n, p + "priority");
    b.cooldown = Duration(t, p, "cooldown", Millis(0));
    b.min_idle_age = Duration(t, p, "min_idle_age", Millis(0));
    return b;
  }

  void ParseDaemon(const toml::table& d, DaemonConfig& c) {
    const std::string p = "daemon.";
    CheckKeys(d, p,
              {"interval", "state_file", "http", "http_token", "http_token_file", "dry_run",
               "log_format", "log_level", "cooldown", "hysteresis_percent", "degraded_percent",
               "unhealthy_percent", "reconnect_min", "reconnect_max", "connect_timeout",
               "statement_timeout", "metrics_max_applications", "probe_interval", "min_idle_age"});
    if (auto v = Duration(d, p, "interval", Millis(10))) c.interval = *v;
    if (auto v = String(d, p, "state_file")) {
      if (v->empty()) Fail(d.get("state_file"), p + "state_file", "must not be empty");
      // Relative to what? wardend's working directory differs between a shell
      // and systemd: the journal would be lost between the two.
      if (v->front() != '/')
        Fail(d.get("state_file"), p + "state_file",
             "must be an absolute path (\"" + *v + "\" is relative)");
      c.state_file = *v;
    }
    if (auto v = String(d, p, "http")) {
      static const std::regex hp(R"(^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})$)");
      std::smatch m;
      if (!v->empty() && (!std::regex_match(*v, m, hp) || std::stoi(m[2].str()) > 65535))
        Fail(d.get("http"), p + "http",
             "must be \"host:port\" (e.g. \"127.0.0.1:9479\") or \"\" for none");
      c.http = *v;
    }
    auto token = String(d, p, "http_token");
    auto token_file = String(d, p, "http_token_file");
    if (token && token_file)
      Fail(d.get("http_token_file"), p + "http_token_file",
           "set either http_token or http_token_file, not both");
    if (token) c.http_token = *token;
    if (token_file) {
      std::ifstream in(*token_file);
      if (!in)
        Fail(d.get("http_token_file"), p + "http_token_file",
             "cannot read \"" + *token_file + "\"");
      std::getline(in, c.http_token);
      while (!c.http_token.empty() && std::isspace(static_cast<unsigned char>(c.http_token.back())))
        c.http_token.pop_back();
      if (c.http_token.empty())
        Fail(d.get("http_token_file"), p + "http_token_file", "\"" + *token_file + "\" is empty");
    }
    if (auto v = Bool(d, p, "dry_run")) c.dry_run = *v;
    if (auto v = String(d, p, "log_format")) {
      if (*v == "plain")
        c.log_format = LogFormat::kPlain;
      else if (*v == "json")
        c.log_format = LogFormat::kJson;
      else
        Fail(d.get("log_format"), p + "log_format",
             "must be \"plain\" or \"json\", not \"" + *v + "\"");
    }
    if (auto v = String(d, p, "log_level")) {
      static const std::set<std::string> levels{"trace", "debug",    "info", "warn",
                                                "error", "critical", "off"};
      if (!levels.count(*v))
        Fail(d.get("log_level"), p + "log_level",
             "must be one of trace, debug, info, warn, error, critical, off");
      c.log_level = *v;
    }
    if (auto v = Duration(d, p, "cooldown", Millis(0))) c.cooldown = *v;
    if (auto v = Number(d, p, "hysteresis_percent", 0, 50)) c.hysteresis_percent = *v;
    if (auto v = Number(d, p, "degraded_percent", 1, 100)) c.degraded_percent = *v;
    if (auto v = Number(d, p, "unhealthy_percent", 1, 100)) c.unhealthy_percent = *v;
    c.thresholds_set = d.get("degraded_percent") || d.get("unhealthy_percent");
    // Equal or crossed, no server could ever be Degraded: /health would go
    // from Healthy to Unhealthy. The key named is the one in the file (the
    // other is then its default).
    if (c.unhealthy_percent <= c.degraded_percent) {
      if (d.get("unhealthy_percent"))
        Fail(d.get("unhealthy_percent"), p + "unhealthy_percent",
             fmt::format("must be above degraded_percent ({}{})", c.degraded_percent,
                         d.get("degraded_percent") ? "" : ", the default"));
      Fail(d.get("degraded_percent"), p + "degraded_percent",
           fmt::format("must be below unhealthy_percent ({}, the default)", c.unhealthy_percent));
    }
    if (auto v = Duration(d, p, "reconnect_min", Millis(10))) c.reconnect_min = *v;
    if (auto v = Duration(d, p, "reconnect_max", Millis(10))) c.reconnect_max = *v;
    if (c.reconnect_max < c.reconnect_min)
      Fail(d.get("reconnect_max") ? d.get("reconnect_max") : d.get("reconnect_min"),
           p + "reconnect_max", "must not be below reconnect_min");
    if (auto v = Duration(d, p, "connect_timeout", Millis(1000))) c.connect_timeout = *v;
    if (auto v = Duration(d, p, "statement_timeout", Millis(10))) c.statement_timeout = *v;
    if (auto v = Int(d, p, "metrics_max_applications", 1, 100000))
      c.metrics_max_applications = static_cast<int>(*v);
    if (auto v = Duration(d, p, "probe_interval", Millis(100))) c.probe_interval = *v;
    if (auto v = Duration(d, p, "min_idle_age", Millis(0))) c.min_idle_age = *v;
  }

 private:
  std::string file_;
};

}  // namespace

Config ParseConfig(const std::string& text, const std::string& path) {
  return Parser(path).Parse(text);
}

Config LoadConfig(const std::string& path) {
  errno = 0;
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    throw ConfigError(path, 0, "(file)",
                      std::string("cannot read the configuration file: ") +
                          (err ? std::strerror(err) : "unknown error"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

}  // namespace wardend

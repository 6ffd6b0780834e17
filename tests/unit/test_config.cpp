// wardend.toml: a complete valid file, and every bad value named by file, line and key.
#include <gtest/gtest.h>

#include <fstream>

#include "wardend/config.hpp"

using namespace wardend;

namespace {

const char* kGood = R"(
[daemon]
interval = "200ms"
state_file = "/tmp/w.state"
http = "127.0.0.1:9479"
dry_run = true
log_format = "json"
cooldown = "2s"

[[server]]
name = "primary"
dsn  = "host=/tmp dbname=postgres user=warden password=s3cret"
pgbouncer_dsn = "host=127.0.0.1 port=6432 dbname=pgbouncer"

[[server]]
name = "replica"
dsn  = "host=/tmp port=5433"

[[role]]
name = "app_api"
scope = "server"
max_connections = 40
max_idle = 10
idle_in_transaction_timeout = "30s"
priority = "normal"

[[role]]
name = "batch"
max_connections = 5
priority = "low"
cooldown = "10s"

[[emergency]]
at_percent = 90
action = "terminate_idle"
older_than = "30m"
skip_priority = ["critical"]

[[emergency]]
at_percent = 95.5
action = "close_admission"
)";

struct Bad {
  const char* name;
  std::string text;
  std::string key;
  int line;
};

const std::string kServer = "[[server]]\nname = \"p\"\ndsn = \"host=/tmp\"\n";  // lines 1-3
// "[[cluster]]" on line 1 and name on line 2, then `rest` from line 3.
std::string kCluster(const std::string& rest) { return "[[cluster]]\nname = \"c\"\n" + rest; }

}  // namespace

TEST(Config, ParsesACompleteFile) {
  Config c = ParseConfig(kGood, "w.toml");
  EXPECT_EQ(c.daemon.interval, Millis(200));
  EXPECT_EQ(c.daemon.state_file, "/tmp/w.state");
  EXPECT_TRUE(c.daemon.dry_run);
  EXPECT_EQ(c.daemon.log_format, LogFormat::kJson);
  EXPECT_EQ(c.daemon.cooldown, Millis(2000));
  ASSERT_EQ(c.servers.size(), 2u);
  EXPECT_EQ(c.servers[0].pgbouncer_dsn, "host=127.0.0.1 port=6432 dbname=pgbouncer");
  ASSERT_EQ(c.role_limits.size(), 2u);
  EXPECT_EQ(c.role_limits[0].max_connections, 40);
  EXPECT_EQ(c.role_limits[0].max_idle, 10);
  EXPECT_EQ(c.role_limits[0].idle_in_transaction_timeout, Millis(30'000));
  EXPECT_EQ(c.role_limits[1].priority, Priority::kLow);
  EXPECT_EQ(c.role_limits[1].cooldown, Millis(10'000));
  EXPECT_FALSE(c.role_limits[1].max_idle.has_value());
  ASSERT_EQ(c.emergencies.size(), 2u);
  EXPECT_EQ(c.emergencies[0].older_than, Millis(1'800'000));
  EXPECT_EQ(c.emergencies[1].action, EmergencyAction::kCloseAdmission);
  EXPECT_DOUBLE_EQ(c.emergencies[1].at_percent, 95.5);
  EXPECT_EQ(c.emergencies[1].priorities, std::vector<Priority>{Priority::kLow});
  EXPECT_EQ(c.PriorityOf("batch"), Priority::kLow);
  EXPECT_EQ(c.PriorityOf("nobody"), Priority::kNormal);
}

TEST(Config, TheExampleOfTheDesignParses) {
  Config c = ParseConfig(R"(
[daemon]
interval = "1s"
state_file = "/var/lib/pg_warden/wardend.state"   # journal of every change to undo
http = "127.0.0.1:9479"                           # /health /health/ready /metrics /alerts
dry_run = false

[[server]]
name = "primary"
dsn  = "host=/var/run/postgresql dbname=postgres user=warden application_name=wardend"
pgbouncer_dsn = "host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer"   # optional

[[role]]
name = "app_api"
scope = "server"              # server: on each server alone
max_connections = 40          # soft: above it, act
max_idle = 10                 # idle beyond this many: terminate oldest idle
idle_in_transaction_timeout = "30s"
priority = "normal"           # low | normal | critical

[[emergency]]
at_percent = 90               # server usage, same formula as warden.server_usage
action = "terminate_idle"
older_than = "30m"
skip_priority = ["critical"]

[[emergency]]
at_percent = 95
action = "close_admission"    # per-server override: low-priority roles capped at what they hold now
)",
                         "design.toml");
  EXPECT_EQ(c.servers.size(), 1u);
  EXPECT_EQ(c.role_limits.size(), 1u);
  EXPECT_EQ(c.emergencies.size(), 2u);
}

TEST(Config, TheOldBudgetTableIsReadWithOneWarning) {
  Config c = ParseConfig(kServer +
                             "[[budget]]\nrole = \"api\"\nmax_idle = 2\n"
                             "[[budget]]\nrole = \"batch\"\npriority = \"low\"\n"
                             "[[role]]\nname = \"web\"\nmax_connections = 9\n",
                         "w.toml");
  ASSERT_EQ(c.role_limits.size(), 3u);
  ASSERT_NE(c.RoleLimitFor("api"), nullptr);
  EXPECT_EQ(c.RoleLimitFor("api")->max_idle, 2);
  EXPECT_EQ(c.PriorityOf("batch"), Priority::kLow);
  EXPECT_EQ(c.RoleLimitFor("web")->max_connections, 9);
  ASSERT_EQ(c.warnings.size(), 1u);  // once per file, not once per table
  EXPECT_EQ(c.warnings[0].rfind("w.toml:4: [[budget]] is deprecated", 0), 0u) << c.warnings[0];
  EXPECT_NE(c.warnings[0].find("[[role]]"), std::string::npos);
}

TEST(Config, TheNewRoleTableWarnsNothing) {
  Config c = ParseConfig(kServer + "[[role]]\nname = \"api\"\nscope = \"server\"\n", "w.toml");
  ASSERT_EQ(c.role_limits.size(), 1u);
  EXPECT_EQ(c.role_limits[0].scope, RoleScope::kServer);
  EXPECT_TRUE(c.warnings.empty());
}

TEST(Config, DefaultsAsDocumented) {
  Config c = ParseConfig(kServer, "w.toml");
  EXPECT_EQ(c.daemon.interval, Millis(1000));
  EXPECT_EQ(c.daemon.state_file, "/var/lib/pg_warden/wardend.state");
  EXPECT_EQ(c.daemon.http, "127.0.0.1:9479");
  EXPECT_FALSE(c.daemon.dry_run);
  EXPECT_EQ(c.daemon.log_format, LogFormat::kPlain);
  EXPECT_EQ(c.daemon.degraded_percent, 80);
  EXPECT_EQ(c.daemon.unhealthy_percent, 90);
}

TEST(Config, EveryBadValueNamesFileLineAndKey) {
  const std::vector<Bad> cases = {
      {"syntax", kServer + "[daemon\n", "(syntax)", 4},
      {"unknown top-level", "budgets = 1\n" + kServer, "budgets", 1},
      {"unknown daemon key", "[daemon]\nintervall = \"1s\"\n" + kServer, "daemon.intervall", 2},
      {"interval not a string", "[daemon]\ninterval = 1\n" + kServer, "daemon.interval", 2},
      {"interval no unit", "[daemon]\ninterval = \"1\"\n" + kServer, "daemon.interval", 2},
      {"interval too short", "[daemon]\ninterval = \"1ms\"\n" + kServer, "daemon.interval", 2},
      {"interval bad unit", "[daemon]\ninterval = \"1d\"\n" + kServer, "daemon.interval", 2},
      {"state_file empty", "[daemon]\nstate_file = \"\"\n" + kServer, "daemon.state_file", 2},
      {"state_file int", "[daemon]\nstate_file = 3\n" + kServer, "daemon.state_file", 2},
      {"http no port", "[daemon]\nhttp = \"localhost\"\n" + kServer, "daemon.http", 2},
      {"http port range", "[daemon]\nhttp = \"127.0.0.1:70000\"\n" + kServer, "daemon.http", 2},
      {"dry_run string", "[daemon]\ndry_run = \"yes\"\n" + kServer, "daemon.dry_run", 2},
      {"log_format", "[daemon]\nlog_format = \"xml\"\n" + kServer, "daemon.log_format", 2},
      {"log_level", "[daemon]\nlog_level = \"loud\"\n" + kServer, "daemon.log_level", 2},
      {"cooldown", "[daemon]\ncooldown = \"soon\"\n" + kServer, "daemon.cooldown", 2},
      {"hysteresis", "[daemon]\nhysteresis_percent = 80\n" + kServer, "daemon.hysteresis_percent",
       2},
      {"degraded > unhealthy",
       "[daemon]\ndegraded_percent = 95\nunhealthy_percent = 90\n" + kServer,
       "daemon.unhealthy_percent", 3},
      {"degraded = unhealthy",
       "[daemon]\nunhealthy_percent = 85\ndegraded_percent = 85\n" + kServer,
       "daemon.unhealthy_percent", 2},
      {"degraded alone above the default unhealthy",
       "[daemon]\ninterval = \"1s\"\ndegraded_percent = 92\n" + kServer, "daemon.degraded_percent",
       3},
      {"unhealthy alone below the default degraded", "[daemon]\nunhealthy_percent = 70\n" + kServer,
       "daemon.unhealthy_percent", 2},
      {"role max_idle above max_connections",
       kServer + "[[role]]\nname = \"a\"\nmax_connections = 5\nmax_idle = 10\n", "role[0].max_idle",
       7},
      {"role max_idle above max_connections, written first",
       kServer + "[[role]]\nname = \"a\"\nmax_idle = 10\nmax_connections = 5\n", "role[0].max_idle",
       6},
      {"terminate_idle step that cannot escalate",
       kServer + "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\n"
                 "older_than = \"10m\"\n"
                 "[[emergency]]\nat_percent = 95\naction = \"terminate_idle\"\n"
                 "older_than = \"1h\"\n",
       "emergency[1].at_percent", 9},
      {"terminate_idle step that cannot escalate, listed first",
       kServer + "[[emergency]]\nat_percent = 95\naction = \"terminate_idle\"\n"
                 "keep_min = 3\n"
                 "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\n"
                 "keep_min = 2\n",
       "emergency[0].at_percent", 5},
      {"token twice", "[daemon]\nhttp_token = \"a\"\nhttp_token_file = \"/x\"\n" + kServer,
       "daemon.http_token_file", 3},
      {"token file missing", "[daemon]\nhttp_token_file = \"/nonexistent/t\"\n" + kServer,
       "daemon.http_token_file", 2},
      {"reconnect order", "[daemon]\nreconnect_min = \"5s\"\nreconnect_max = \"1s\"\n" + kServer,
       "daemon.reconnect_max", 3},
      {"metrics cap", "[daemon]\nmetrics_max_applications = 0\n" + kServer,
       "daemon.metrics_max_applications", 2},
      {"daemon not a table", "daemon = 1\n" + kServer, "daemon", 1},
      {"no server", "[daemon]\ninterval = \"1s\"\n", "server", 1},
      {"server without dsn", "[[server]]\nname = \"p\"\n", "server[0].dsn", 1},
      {"server without name", "[[server]]\ndsn = \"x\"\n", "server[0].name", 1},
      {"server name empty", "[[server]]\nname = \"\"\ndsn = \"x\"\n", "server[0].name", 2},
      {"server dup", kServer + "[[server]]\nname = \"p\"\ndsn = \"y\"\n", "server[1].name", 5},
      {"server unknown key", kServer + "port = 5432\n", "server[0].port", 4},
      {"server single table", "[server]\nname = \"p\"\ndsn = \"x\"\n", "server", 1},
      {"role without name", kServer + "[[role]]\nmax_connections = 3\n", "role[0].name", 4},
      {"role dup role", kServer + "[[role]]\nname = \"a\"\n[[role]]\nname = \"a\"\n",
       "role[1].name", 7},
      {"role max_connections string",
       kServer + "[[role]]\nname = \"a\"\nmax_connections = \"40\"\n", "role[0].max_connections",
       6},
      {"role max_connections negative", kServer + "[[role]]\nname = \"a\"\nmax_connections = -1\n",
       "role[0].max_connections", 6},
      {"role max_idle float", kServer + "[[role]]\nname = \"a\"\nmax_idle = 1.5\n",
       "role[0].max_idle", 6},
      {"role iit timeout",
       kServer + "[[role]]\nname = \"a\"\nidle_in_transaction_timeout = \"30\"\n",
       "role[0].idle_in_transaction_timeout", 6},
      {"role priority", kServer + "[[role]]\nname = \"a\"\npriority = \"urgent\"\n",
       "role[0].priority", 6},
      {"role cooldown", kServer + "[[role]]\nname = \"a\"\ncooldown = 5\n", "role[0].cooldown", 6},
      {"role unknown", kServer + "[[role]]\nname = \"a\"\nmax_idel = 5\n", "role[0].max_idel", 6},
      {"role scope cluster", kServer + "[[role]]\nname = \"a\"\nscope = \"cluster\"\n",
       "role[0].scope", 6},
      {"role scope not a string", kServer + "[[role]]\nname = \"a\"\nscope = 1\n", "role[0].scope",
       6},
      {"role with the old key", kServer + "[[role]]\nrole = \"a\"\n", "role[0].role", 5},
      {"role single table", kServer + "[role]\nname = \"a\"\n", "role", 4},
      {"role dup across spellings", kServer + "[[role]]\nname = \"a\"\n[[budget]]\nrole = \"a\"\n",
       "budget[0].role", 7},
      {"budget (deprecated) unknown", kServer + "[[budget]]\nrole = \"a\"\nscope = \"server\"\n",
       "budget[0].scope", 6},
      {"budget (deprecated) without role", kServer + "[[budget]]\nmax_connections = 3\n",
       "budget[0].role", 4},
      {"emergency no at", kServer + "[[emergency]]\naction = \"terminate_idle\"\n",
       "emergency[0].at_percent", 4},
      {"emergency at range",
       kServer + "[[emergency]]\nat_percent = 120\naction = \"terminate_idle\"\n",
       "emergency[0].at_percent", 5},
      {"emergency at string",
       kServer + "[[emergency]]\nat_percent = \"90\"\naction = \"terminate_idle\"\n",
       "emergency[0].at_percent", 5},
      {"emergency no action", kServer + "[[emergency]]\nat_percent = 90\n", "emergency[0].action",
       4},
      {"emergency bad action", kServer + "[[emergency]]\nat_percent = 90\naction = \"panic\"\n",
       "emergency[0].action", 6},
      {"emergency older_than",
       kServer +
           "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nolder_than = \"x\"\n",
       "emergency[0].older_than", 7},
      {"emergency skip_priority not array",
       kServer + "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nskip_priority = "
                 "\"critical\"\n",
       "emergency[0].skip_priority", 7},
      {"emergency skip_priority bad item",
       kServer + "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nskip_priority = "
                 "[\"vip\"]\n",
       "emergency[0].skip_priority[0]", 7},
      {"emergency older_than on close_admission",
       kServer +
           "[[emergency]]\nat_percent = 95\naction = \"close_admission\"\nolder_than = \"1m\"\n",
       "emergency[0].older_than", 7},
      {"cluster without patroni", kCluster("dsn = \"dbname=postgres\"\n"), "cluster[0].patroni", 1},
      {"cluster patroni not a URL", kCluster("patroni = [\"10.0.0.1:8008\"]\ndsn = \"\"\n"),
       "cluster[0].patroni[0]", 3},
      {"cluster dsn with host",
       kCluster("patroni = [\"http://h:8008\"]\ndsn = \"host=x dbname=postgres\"\n"),
       "cluster[0].dsn", 4},
      {"cluster dsn with port", kCluster("patroni = [\"http://h:8008\"]\ndsn = \"port=5433\"\n"),
       "cluster[0].dsn", 4},
      {"cluster without dsn", kCluster("patroni = [\"http://h:8008\"]\n"), "cluster[0].dsn", 1},
      {"cluster name with a slash",
       "[[cluster]]\nname = \"a/b\"\npatroni = [\"http://h:8008\"]\ndsn = \"\"\n",
       "cluster[0].name", 2},
      {"cluster name taken by a server",
       kServer + "[[cluster]]\nname = \"p\"\npatroni = [\"http://h:8008\"]\ndsn = \"\"\n",
       "cluster[0].name", 5},
      {"cluster member empty",
       kCluster("patroni = [\"http://h:8008\"]\ndsn = \"\"\nmember = \"\"\n"), "cluster[0].member",
       5},
      {"cluster unknown", kCluster("patroni = [\"http://h:8008\"]\ndsn = \"\"\nhosts = 1\n"),
       "cluster[0].hosts", 5},
      {"emergency duplicate step",
       kServer + "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\n"
                 "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\n",
       "emergency[1].at_percent", 8},
      {"emergency keep_min on close_admission",
       kServer + "[[emergency]]\nat_percent = 95\naction = \"close_admission\"\nkeep_min = 1\n",
       "emergency[0].keep_min", 7},
      {"emergency keep_min negative",
       kServer + "[[emergency]]\nat_percent = 95\naction = \"terminate_idle\"\nkeep_min = -1\n",
       "emergency[0].keep_min", 7},
      {"state_file relative", "[daemon]\nstate_file = \"wardend.state\"\n" + kServer,
       "daemon.state_file", 2},
      {"dsn unknown keyword", "[[server]]\nname = \"p\"\ndsn = \"host=/tmp pport=5432\"\n",
       "server[0].dsn", 3},
      {"pgbouncer_dsn unknown keyword",
       kServer + "pgbouncer_dsn = \"host=/tmp prot=6432 dbname=pgbouncer\"\n",
       "server[0].pgbouncer_dsn", 4},
      {"dsn bad quoting", "[[server]]\nname = \"p\"\ndsn = \"host='/tmp\"\n", "server[0].dsn", 3},
      {"role min_idle_age", kServer + "[[role]]\nname = \"a\"\nmin_idle_age = \"soon\"\n",
       "role[0].min_idle_age", 6},
      {"probe_interval too short", "[daemon]\nprobe_interval = \"10ms\"\n" + kServer,
       "daemon.probe_interval", 2},
      {"emergency unknown",
       kServer + "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nwhen = 1\n",
       "emergency[0].when", 7},
  };
  for (const auto& c : cases) {
    try {
      ParseConfig(c.text, "/etc/w.toml");
      ADD_FAILURE() << c.name << ": no error";
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.key(), c.key) << c.name << ": " << e.what();
      EXPECT_EQ(e.line(), c.line) << c.name << ": " << e.what();
      EXPECT_EQ(e.file(), "/etc/w.toml") << c.name;
      std::string w = e.what();
      EXPECT_NE(w.find("/etc/w.toml:" + std::to_string(c.line) + ": key '" + c.key + "'"),
                std::string::npos)
          << c.name << ": " << w;
    }
  }
}

TEST(Config, ClusterAloneIsEnoughAndRoleScopeClusterIsRead) {
  Config c = ParseConfig(
      "[[cluster]]\nname = \"orders\"\npatroni = [\"http://127.0.0.1:8008\", "
      "\"https://pg2:8008/\"]\ndsn = \"dbname=postgres user=warden\"\nmember = \"pg1\"\n"
      "[[role]]\nname = \"app\"\nscope = \"cluster\"\nmax_connections = 30\n",
      "w.toml");
  EXPECT_TRUE(c.servers.empty());
  ASSERT_EQ(c.clusters.size(), 1u);
  EXPECT_EQ(c.clusters[0].name, "orders");
  EXPECT_EQ(c.clusters[0].patroni.size(), 2u);
  EXPECT_EQ(c.clusters[0].dsn, "dbname=postgres user=warden");
  EXPECT_EQ(c.clusters[0].member, "pg1");
  EXPECT_EQ(c.role_limits[0].scope, RoleScope::kCluster);
  EXPECT_STREQ(ToString(c.role_limits[0].scope), "cluster");
}

TEST(Config, MissingFileIsAConfigError) {
  EXPECT_THROW(LoadConfig("/nonexistent/wardend.toml"), ConfigError);
  // ... that says why (strerror), not only that it cannot be read.
  try {
    LoadConfig("/nonexistent/wardend.toml");
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos)
        << e.what();
  }
}

TEST(Config, NewKeysAndTheirDefaults) {
  Config c = ParseConfig(kServer, "w.toml");
  EXPECT_EQ(c.daemon.probe_interval, Millis(60'000));
  c = ParseConfig("[daemon]\nprobe_interval = \"2s\"\n" + kServer +
                      "[[role]]\nname = \"a\"\nmax_idle = 1\n[[role]]\nname = \"b\"\n"
                      "min_idle_age = \"0s\"\n"
                      "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nkeep_min = 3\n"
                      "[[emergency]]\nat_percent = 90\naction = \"close_admission\"\n",
                  "w.toml");
  EXPECT_EQ(c.daemon.probe_interval, Millis(2000));
  EXPECT_EQ(c.daemon.min_idle_age, Millis(30'000));
  EXPECT_FALSE(c.role_limits[0].min_idle_age);
  EXPECT_EQ(c.role_limits[1].min_idle_age, Millis(0));
  EXPECT_EQ(c.emergencies[0].keep_min, 3);
  EXPECT_EQ(c.emergencies[1].keep_min, 0);  // same at_percent, other action: not a duplicate
}

TEST(Config, TokenFileIsRead) {
  std::string path = ::testing::TempDir() + "wardend_token";
  { std::ofstream(path) << "tok3n\n"; }
  Config c = ParseConfig("[daemon]\nhttp_token_file = \"" + path + "\"\n" + kServer, "w.toml");
  EXPECT_EQ(c.daemon.http_token, "tok3n");
}

TEST(Config, MaskDsnHidesPasswords) {
  EXPECT_EQ(MaskDsn("host=x password=s3cret user=u"), "host=x password=******** user=u");
  EXPECT_EQ(MaskDsn("host=x password = 'a b\\'c' user=u"), "host=x password = ******** user=u");
  EXPECT_EQ(MaskDsn("postgresql://u:s3cret@h/db"), "postgresql://u:********@h/db");
  EXPECT_EQ(MaskDsn("host=x user=u"), "host=x user=u");
}

TEST(Config, ContradictionsAreRefusedWithTheirReason) {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      ParseConfig(text, "/etc/w.toml");
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of("[daemon]\ndegraded_percent = 90\nunhealthy_percent = 90\n" + kServer),
            "/etc/w.toml:3: key 'daemon.unhealthy_percent': must be above degraded_percent (90)");
  EXPECT_EQ(error_of("[daemon]\nunhealthy_percent = 75\n" + kServer),
            "/etc/w.toml:2: key 'daemon.unhealthy_percent': must be above degraded_percent (80, "
            "the default)");
  EXPECT_EQ(error_of("[daemon]\ndegraded_percent = 90\n" + kServer),
            "/etc/w.toml:2: key 'daemon.degraded_percent': must be below unhealthy_percent (90, "
            "the default)");
  EXPECT_EQ(error_of(kServer + "[[role]]\nname = \"a\"\nmax_connections = 5\nmax_idle = 6\n"),
            "/etc/w.toml:7: key 'role[0].max_idle': must not be above max_connections (5): idle "
            "sessions are connections");
  std::string two_steps = kServer +
                          "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\n"
                          "[[emergency]]\nat_percent = 95\naction = \"terminate_idle\"\n";
  EXPECT_NE(error_of(two_steps).find("/etc/w.toml:8: key 'emergency[1].at_percent': this "
                                     "terminate_idle step at 95% can take no session that "
                                     "emergency[0] at 90% does not take already"),
            std::string::npos)
      << error_of(two_steps);
}

TEST(Config, NeighboursOfTheContradictionsAreAccepted) {
  // A band between the thresholds, however narrow.
  EXPECT_NO_THROW(ParseConfig(
      "[daemon]\ndegraded_percent = 89.5\nunhealthy_percent = 90\n" + kServer, "w.toml"));
  // max_idle equal to max_connections; either one alone.
  EXPECT_NO_THROW(ParseConfig(
      kServer + "[[role]]\nname = \"a\"\nmax_connections = 5\nmax_idle = 5\n" +
          "[[role]]\nname = \"b\"\nmax_idle = 50\n[[role]]\nname = \"c\"\nmax_connections = 0\n",
      "w.toml"));
  // A higher terminate_idle step that reaches further in any one way escalates.
  const std::string lo =
      "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nolder_than = \"10m\"\n"
      "keep_min = 1\n";
  for (const char* hi :
       {"older_than = \"5m\"\nkeep_min = 1\n",                        // sooner
        "older_than = \"10m\"\nkeep_min = 0\n",                       // keeps fewer
        "older_than = \"10m\"\nkeep_min = 1\nskip_priority = []\n"})  // spares none
    EXPECT_NO_THROW(ParseConfig(
        kServer + lo + "[[emergency]]\nat_percent = 95\naction = \"terminate_idle\"\n" + hi,
        "w.toml"))
        << hi;
  // terminate_idle and close_admission steps are not compared.
  EXPECT_NO_THROW(ParseConfig(kServer +
                                  "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\n"
                                  "[[emergency]]\nat_percent = 95\naction = \"close_admission\"\n",
                              "w.toml"));
}

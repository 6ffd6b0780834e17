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
http = "127.0.0.1:9187"
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

[[budget]]
role = "app_api"
max_connections = 40
max_idle = 10
idle_in_transaction_timeout = "30s"
priority = "normal"

[[budget]]
role = "batch"
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
  ASSERT_EQ(c.budgets.size(), 2u);
  EXPECT_EQ(c.budgets[0].max_connections, 40);
  EXPECT_EQ(c.budgets[0].max_idle, 10);
  EXPECT_EQ(c.budgets[0].idle_in_transaction_timeout, Millis(30'000));
  EXPECT_EQ(c.budgets[1].priority, Priority::kLow);
  EXPECT_EQ(c.budgets[1].cooldown, Millis(10'000));
  EXPECT_FALSE(c.budgets[1].max_idle.has_value());
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
http = "127.0.0.1:9187"                           # /health /health/ready /metrics /alerts
dry_run = false

[[server]]
name = "primary"
dsn  = "host=/var/run/postgresql dbname=postgres user=warden application_name=wardend"
pgbouncer_dsn = "host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer"   # optional

[[budget]]
role = "app_api"
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
  EXPECT_EQ(c.budgets.size(), 1u);
  EXPECT_EQ(c.emergencies.size(), 2u);
}

TEST(Config, DefaultsAsDocumented) {
  Config c = ParseConfig(kServer, "w.toml");
  EXPECT_EQ(c.daemon.interval, Millis(1000));
  EXPECT_EQ(c.daemon.state_file, "/var/lib/pg_warden/wardend.state");
  EXPECT_EQ(c.daemon.http, "127.0.0.1:9187");
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
      {"budget without role", kServer + "[[budget]]\nmax_connections = 3\n", "budget[0].role", 4},
      {"budget dup role", kServer + "[[budget]]\nrole = \"a\"\n[[budget]]\nrole = \"a\"\n",
       "budget[1].role", 7},
      {"budget max_connections string",
       kServer + "[[budget]]\nrole = \"a\"\nmax_connections = \"40\"\n",
       "budget[0].max_connections", 6},
      {"budget max_connections negative",
       kServer + "[[budget]]\nrole = \"a\"\nmax_connections = -1\n", "budget[0].max_connections",
       6},
      {"budget max_idle float", kServer + "[[budget]]\nrole = \"a\"\nmax_idle = 1.5\n",
       "budget[0].max_idle", 6},
      {"budget iit timeout",
       kServer + "[[budget]]\nrole = \"a\"\nidle_in_transaction_timeout = \"30\"\n",
       "budget[0].idle_in_transaction_timeout", 6},
      {"budget priority", kServer + "[[budget]]\nrole = \"a\"\npriority = \"urgent\"\n",
       "budget[0].priority", 6},
      {"budget cooldown", kServer + "[[budget]]\nrole = \"a\"\ncooldown = 5\n",
       "budget[0].cooldown", 6},
      {"budget unknown", kServer + "[[budget]]\nrole = \"a\"\nmax_idel = 5\n", "budget[0].max_idel",
       6},
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

TEST(Config, MissingFileIsAConfigError) {
  EXPECT_THROW(LoadConfig("/nonexistent/wardend.toml"), ConfigError);
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

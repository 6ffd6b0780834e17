// /health, /metrics, /alerts documents and `wardenctl plan` arithmetic.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "wardend/health.hpp"
#include "wardend/http.hpp"
#include "wardend/plan.hpp"

using namespace wardend;

namespace {

ServerStatus Up(const std::string& name, int conns, int max) {
  ServerStatus s;
  s.name = name;
  s.polled = s.last_poll_ok = s.connected = true;
  s.mode = "extension";
  s.connections = conns;
  s.max_connections = max;
  s.reserved = 0;
  s.usage_percent = 100.0 * conns / max;
  s.active = 1;
  s.idle = conns - 1;
  return s;
}

Config Cfg() {
  return ParseConfig(
      "[[server]]\nname = \"p\"\ndsn = \"x\"\n[[role]]\nname = \"api\"\nmax_connections = 2\n",
      "t.toml");
}

}  // namespace

TEST(Health, ShapeAndStatusTransitions) {
  Config cfg = Cfg();
  DaemonStatus st;
  st.servers.push_back(Up("primary", 25, 150));
  int code = 0;
  auto j = HealthJson(cfg.daemon, st, &code);
  EXPECT_EQ(code, 200);
  EXPECT_EQ(j["status"], "Healthy");
  ASSERT_EQ(j["checks"].size(), 1u);
  EXPECT_EQ(j["checks"][0]["name"], "primary");
  EXPECT_EQ(j["checks"][0]["description"], "primary: 25/150 connections in use");
  for (const char* k :
       {"connections", "max_connections", "usage_percent", "active", "idle", "idle_in_transaction",
        "longest_idle_seconds", "longest_idle_in_transaction_seconds", "role", "mode"})
    EXPECT_TRUE(j["checks"][0]["data"].contains(k)) << k;
  EXPECT_EQ(j["checks"][0]["data"]["role"], "primary");

  st.servers[0] = Up("primary", 120, 150);  // 80%
  j = HealthJson(cfg.daemon, st, &code);
  EXPECT_EQ(j["status"], "Degraded");
  EXPECT_EQ(code, 200);
  st.servers[0] = Up("primary", 135, 150);  // 90%
  j = HealthJson(cfg.daemon, st, &code);
  EXPECT_EQ(j["status"], "Unhealthy");
  EXPECT_EQ(code, 503);
}

TEST(Health, AnUnreachableServerIsUnhealthyTheOthersStillReported) {
  Config cfg = Cfg();
  DaemonStatus st;
  st.servers.push_back(Up("a", 10, 100));
  ServerStatus down;
  down.name = "b";
  down.error = "connection refused";
  st.servers.push_back(down);
  int code = 0;
  auto j = HealthJson(cfg.daemon, st, &code);
  EXPECT_EQ(code, 503);
  EXPECT_EQ(j["checks"][0]["status"], "Healthy");
  EXPECT_EQ(j["checks"][1]["status"], "Unhealthy");
  EXPECT_NE(j["checks"][1]["description"].get<std::string>().find("unreachable"),
            std::string::npos);
  auto r = ReadyJson(st, &code);
  EXPECT_EQ(code, 503);
  EXPECT_FALSE(r["ready"]);
}

TEST(Health, DegradedModeAndStandbyAreShown) {
  Config cfg = Cfg();
  DaemonStatus st;
  st.servers.push_back(Up("a", 10, 100));
  st.servers[0].mode = "degraded";
  st.servers[0].in_recovery = true;
  st.servers[0].replay_lag_seconds = 0.5;
  int code = 0;
  auto j = HealthJson(cfg.daemon, st, &code);
  EXPECT_EQ(code, 200);
  EXPECT_EQ(j["checks"][0]["status"], "Degraded");
  EXPECT_EQ(j["checks"][0]["data"]["mode"], "degraded");
  EXPECT_EQ(j["checks"][0]["data"]["role"], "standby");
  EXPECT_DOUBLE_EQ(j["checks"][0]["data"]["replay_lag_seconds"].get<double>(), 0.5);
}

TEST(Alerts, OverLimitUnreachableAndUsage) {
  Config cfg = Cfg();
  ServerStatus s = Up("a", 95, 100);
  s.roles["api"] = RoleCount{5, 5, 0, 0};
  auto a = CurrentAlerts(cfg, s);
  EXPECT_TRUE(a.count("usage_unhealthy"));
  EXPECT_TRUE(a.count("role_over_limit:api"));
  ServerStatus down;
  down.name = "b";
  a = CurrentAlerts(cfg, down);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(a.count("server_unreachable"));
}

TEST(Metrics, StrictExpositionFormatWithEscapedLabels) {
  Config cfg = Cfg();
  DaemonStatus st;
  st.servers.push_back(Up("pri\"mary", 3, 100));
  st.servers[0].apps.push_back(AppUsage{"db", "api", "we\\ird\n\"app\"", 3, 1, 2, 0, 1.5, 0});
  st.servers[0].apps.push_back(AppUsage{"db", "api", "tx", 2, 0, 1, 1, 4, 312.5});
  st.servers[0].longest_idle_in_transaction_seconds = 312.5;
  st.servers[0].actions_total["terminate"] = 4;
  st.servers[0].counters.push_back(AppCounters{"db", "api", "batch", 7, 2});
  st.servers[0].budgets.push_back(BudgetUse{"cap", "batch", "", "", 5, 3});
  std::string text = MetricsText(cfg, st);
  EXPECT_NE(text.find("application_name=\"we\\\\ird\\n\\\"app\\\"\""), std::string::npos);
  EXPECT_NE(text.find("pg_warden_refused_logins_total{server=\"pri\\\"mary\",datname=\"db\","
                      "usename=\"api\",application_name=\"batch\"} 7\n"),
            std::string::npos);
  EXPECT_NE(text.find("pg_warden_terminated_sessions_total{server=\"pri\\\"mary\",datname=\"db\","
                      "usename=\"api\",application_name=\"batch\"} 2\n"),
            std::string::npos);
  EXPECT_NE(
      text.find("pg_warden_budget_max_connections{server=\"pri\\\"mary\",budget=\"cap\"} 5\n"),
      std::string::npos);
  EXPECT_NE(text.find("# TYPE pg_warden_build_info gauge\npg_warden_build_info{version=\""),
            std::string::npos);
  EXPECT_NE(text.find("pg_warden_actions_total{server=\"pri\\\"mary\",kind=\"terminate\"} 4"),
            std::string::npos);
  // The longest idle in transaction: per server, and per application (0 where none is).
  EXPECT_NE(
      text.find("pg_warden_server_longest_idle_in_transaction_seconds{server=\"pri\\\"mary\"} "
                "312.5\n"),
      std::string::npos);
  EXPECT_NE(text.find("pg_warden_longest_idle_in_transaction_seconds{server=\"pri\\\"mary\","
                      "datname=\"db\",usename=\"api\",application_name=\"tx\"} 312.5\n"),
            std::string::npos);
  EXPECT_NE(text.find("pg_warden_longest_idle_in_transaction_seconds{server=\"pri\\\"mary\","
                      "datname=\"db\",usename=\"api\",application_name=\"we"),
            std::string::npos);
  // Every line: a HELP, a TYPE, or a sample of the family announced last.
  std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
  std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter)$)");
  std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*\} (-?[0-9.e+-]+|NaN|[+-]Inf)$)");
  std::istringstream in(text);
  std::string line, family;
  int samples = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      family = m[1];
    } else if (std::regex_match(line, m, type)) {
      EXPECT_EQ(m[1], family) << line;
    } else {
      ASSERT_TRUE(std::regex_match(line, m, sample)) << line;
      EXPECT_EQ(m[1], family) << line;
      ++samples;
    }
  }
  EXPECT_GT(samples, 10);
}

TEST(Http, TokenComparison) {
  EXPECT_TRUE(TokenMatches("s3cret", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3cre", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3cretX", "s3cret"));
  EXPECT_FALSE(TokenMatches("", "s3cret"));
  EXPECT_FALSE(TokenMatches("S3cret", "s3cret"));
}

TEST(Plan, WorkedExample) {
  // 500 max_connections, 3 reserved, 10 kept for admins: 487 usable.
  // api 12 x 10 = 120, worker 30 x 5 = 150, reports 4 x 20 = 80: 350, 137 spare.
  PlanInput in = ParsePlan(R"(
max_connections = 500
reserved = 3
headroom = 10
[[service]]
name = "api"
instances = 12
pool_size = 10
[[service]]
name = "worker"
instances = 30
pool_size = 5
[[service]]
name = "reports"
instances = 4
pool_size = 20
)",
                           "plan.toml");
  PlanResult r = ComputePlan(in);
  EXPECT_EQ(r.usable, 487);
  EXPECT_EQ(r.total, 350);
  EXPECT_EQ(r.headroom_left, 137);
  EXPECT_EQ(r.pooler, "not needed");
  // api: others 230, room 257 -> 25 instances fit (250), the 26th exhausts.
  EXPECT_EQ(r.services[0].exhausts_at_instances, 26);
  EXPECT_EQ(r.services[0].spare_instances, 13);
  // worker: others 200, room 287 -> 57 fit, 58th exhausts.
  EXPECT_EQ(r.services[1].exhausts_at_instances, 58);
  // reports: others 270, room 217 -> 10 fit, 11th exhausts.
  EXPECT_EQ(r.services[2].exhausts_at_instances, 11);

  in.services[1].instances = 80;  // 400 + 200 = 600 > 487
  r = ComputePlan(in);
  EXPECT_EQ(r.pooler, "needed");
  EXPECT_EQ(r.headroom_left, -113);
  EXPECT_LT(r.services[0].spare_instances, 0);
}

TEST(Plan, BadFilesNameTheKey) {
  try {
    ParsePlan("max_connections = 100\n[[service]]\nname = \"a\"\ninstances = 2\n", "p.toml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "service[0].pool_size");
  }
  EXPECT_THROW(ParsePlan("[[service]]\nname = \"a\"\ninstances = 2\npool_size = 1\n", "p.toml"),
               ConfigError);
}

TEST(Health, ThresholdsComeFromTheServerUnlessTheFileSetsThem) {
  Config cfg = Cfg();
  DaemonStatus st;
  st.servers.push_back(Up("a", 50, 100));
  st.servers[0].degraded_percent = 40;
  st.servers[0].unhealthy_percent = 45;
  int code = 0;
  EXPECT_EQ(HealthJson(cfg.daemon, st, &code)["status"], "Unhealthy");
  EXPECT_EQ(code, 503);
  EXPECT_TRUE(CurrentAlerts(cfg, st.servers[0]).count("usage_unhealthy"));
  Config own = ParseConfig(
      "[daemon]\ndegraded_percent = 70\n[[server]]\nname = \"p\"\ndsn = \"x\"\n", "t.toml");
  EXPECT_EQ(HealthJson(own.daemon, st, &code)["status"], "Healthy");
  EXPECT_EQ(code, 200);
}

TEST(Status, RolesNearestTheirLimitFirstAndNewestActionsFirst) {
  Config cfg = Cfg();  // [[role]] api: max_connections 2
  DaemonStatus st;
  st.servers.push_back(Up("p", 12, 100));
  st.servers[0].roles["big"] = RoleCount{10, 0, 10, 0};
  st.servers[0].roles["api"] = RoleCount{2, 0, 2, 0};
  st.servers[0].admission_closed["api"] = 2;
  st.recent.push_back({100, "p", "first"});
  st.recent.push_back({200, "p", "second"});
  auto j = StatusJson(cfg, st, 300);
  ASSERT_EQ(j["roles"].size(), 2u);
  EXPECT_EQ(j["roles"][0]["usename"], "api");  // at its limit: first, although smaller
  EXPECT_EQ(j["roles"][0]["at_limit"], true);
  EXPECT_EQ(j["roles"][0]["max_connections"], 2);
  EXPECT_EQ(j["roles"][0]["admission_cap"], 2);
  EXPECT_EQ(j["roles"][1]["usename"], "big");
  EXPECT_TRUE(j["roles"][1]["max_connections"].is_null());
  EXPECT_EQ(j["roles"][1]["at_limit"], false);
  ASSERT_EQ(j["actions"].size(), 2u);
  EXPECT_EQ(j["actions"][0]["text"], "second");
  EXPECT_EQ(j["health"], HealthJson(cfg.daemon, st, nullptr));  // /health's document, as is
}

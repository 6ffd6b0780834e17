// wardenctl plan's refusals, the log's one-line rule and repeat summaries,
// and /health before the first poll.
#include <gtest/gtest.h>

#include "wardend/config.hpp"
#include "wardend/health.hpp"
#include "wardend/log.hpp"
#include "wardend/plan.hpp"

using namespace wardend;

namespace {

std::string KeyOf(const std::string& text) {
  try {
    ParsePlan(text, "p.toml");
  } catch (const ConfigError& e) {
    return e.key() + ": " + e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Plan, HeadroomThatLeavesNothingIsRefused) {
  const std::string svc = "[[service]]\nname = \"a\"\ninstances = 2\npool_size = 1\n";
  EXPECT_EQ(KeyOf("max_connections = 100\nheadroom = 200\n" + svc).rfind("headroom: ", 0), 0u);
  EXPECT_EQ(
      KeyOf("max_connections = 100\nreserved = 3\nheadroom = 97\n" + svc).rfind("headroom: ", 0),
      0u);
  EXPECT_EQ(KeyOf("max_connections = 3\n" + svc).rfind("reserved: ", 0), 0u);  // default 3
  EXPECT_EQ(KeyOf("max_connections = 100\nheadroom = 96\n" + svc), "(no error)");
}

TEST(Plan, DuplicateServiceNamesAreRefused) {
  std::string k = KeyOf(
      "max_connections = 100\n[[service]]\nname = \"api\"\ninstances = 2\npool_size = 1\n"
      "[[service]]\nname = \"api\"\ninstances = 3\npool_size = 1\n");
  EXPECT_EQ(k.rfind("service[1].name: p.toml:7:", 0), 0u) << k;
  EXPECT_NE(k.find("duplicate service name \"api\""), std::string::npos) << k;
}

TEST(Log, OneLinePerEvent) {
  EXPECT_EQ(OneLine("connection to server failed\nFATAL:  no\r\n"),
            "connection to server failed\\nFATAL:  no\\r\\n");
  EXPECT_EQ(OneLine("a\tb\x01"), "a b\\x01");
  EXPECT_EQ(OneLine("plain"), "plain");
}

TEST(Log, RepeatsAreSummarisedAtMostEveryWindow) {
  RepeatFilter f(60);
  const std::string disk = "[p] state file: write failed: No space left on device";
  EXPECT_EQ(f.Feed(disk, 0), std::vector<std::string>{disk});
  for (int t = 1; t < 60; ++t) EXPECT_TRUE(f.Feed(disk, t).empty()) << t;
  // Another message is logged at once.
  EXPECT_EQ(f.Feed("[p] connected", 30.5), std::vector<std::string>{"[p] connected"});
  // After the window: the summary, in place of the message.
  auto out = f.Feed(disk, 60);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], disk + " (repeated 59 more time(s) in the last 60s)");
  EXPECT_TRUE(f.Feed(disk, 61).empty());
  // The error stops; the next other line after the window carries the summary.
  out = f.Feed("[p] polled", 200);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], disk + " (repeated 1 more time(s) in the last 140s)");
  EXPECT_EQ(out[1], "[p] polled");
  // A message that was not repeated is simply logged again after the window.
  EXPECT_EQ(f.Feed("[p] polled", 300), std::vector<std::string>{"[p] polled"});
}

TEST(Log, RepeatFilterIsBounded) {
  RepeatFilter f(60, 4);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(f.Feed("m" + std::to_string(i), 0).size(), 1u);
  EXPECT_EQ(f.Feed("m99", 1).size(), 0u);  // still tracked
  auto out = f.Feed("m0", 1);  // long evicted: logged (after a summary if one is evicted now)
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), "m0");
}

TEST(Health, ANeverReachedServerHasRoleUnknown) {
  Config cfg = ParseConfig("[[server]]\nname = \"p\"\ndsn = \"host=/nonexistent\"\n", "t.toml");
  DaemonStatus st;
  ServerStatus s;
  s.name = "p";
  s.error = "connection refused";
  st.servers.push_back(s);
  auto j = HealthJson(cfg.daemon, st, nullptr);
  EXPECT_EQ(j["checks"][0]["data"]["role"], "unknown");
  st.servers[0].polled = true;
  st.servers[0].last_poll_ok = true;
  j = HealthJson(cfg.daemon, st, nullptr);
  EXPECT_EQ(j["checks"][0]["data"]["role"], "primary");
}

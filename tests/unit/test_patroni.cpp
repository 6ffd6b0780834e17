// Patroni's GET /cluster document -> members (shapes observed on Patroni 3.0.2,
// docs/fleet.md), and the DSN of one member.
#include <gtest/gtest.h>

#include "wardend/decide.hpp"
#include "wardend/patroni.hpp"

using namespace wardend;

namespace {

const char* kThree = R"({"members": [
  {"name": "pg3", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:41007/patroni",
   "host": "127.0.0.1", "port": 42427, "timeline": 3, "lag": 0},
  {"name": "pg2", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:50755/patroni",
   "host": "127.0.0.1", "port": 52949, "timeline": 3},
  {"name": "pg1", "role": "replica", "state": "stopped", "api_url": "http://127.0.0.1:47159/patroni",
   "host": "127.0.0.1", "port": 38911, "lag": "unknown"}]})";

}  // namespace

TEST(Patroni, ClusterDocumentGivesMembersByName) {
  PatroniCluster c = ParseClusterDocument(kThree);
  ASSERT_EQ(c.members.size(), 3u);
  EXPECT_EQ(c.members[0].name, "pg1");
  EXPECT_EQ(c.members[1].name, "pg2");
  EXPECT_EQ(c.members[2].name, "pg3");
  EXPECT_EQ(c.members[1].role, "leader");
  EXPECT_EQ(c.members[1].port, 52949);
  EXPECT_FALSE(c.members[1].lag_bytes.has_value());  // the leader has no lag
  EXPECT_FALSE(c.members[0].lag_bytes.has_value());  // "unknown" while stopped
  EXPECT_EQ(c.members[2].lag_bytes, 0);
  EXPECT_EQ(c.members[2].timeline, 3);
  EXPECT_FALSE(c.members[0].timeline.has_value());
  ASSERT_NE(c.RunningLeader(), nullptr);
  EXPECT_EQ(c.RunningLeader()->name, "pg2");
  EXPECT_FALSE(c.paused);
}

TEST(Patroni, NoRunningLeaderDuringASwitchover) {
  PatroniCluster c = ParseClusterDocument(R"({"members": [
    {"name": "a", "role": "leader", "state": "stopping", "host": "h", "port": 1},
    {"name": "b", "role": "replica", "state": "running", "host": "h", "port": 2, "lag": 5}]})");
  EXPECT_EQ(c.RunningLeader(), nullptr);
  ASSERT_NE(c.Find("b"), nullptr);
  EXPECT_EQ(c.Find("b")->lag_bytes, 5);
  EXPECT_EQ(c.Find("zz"), nullptr);
}

TEST(Patroni, StandbyLeaderHoldsTheLeaderKeyAndPauseIsRead) {
  PatroniCluster c = ParseClusterDocument(
      R"({"pause": true, "members": [{"name": "s", "role": "standby_leader", "state": "running",
          "host": "h", "port": 5432}]})");
  EXPECT_TRUE(c.paused);
  ASSERT_NE(c.RunningLeader(), nullptr);
  EXPECT_EQ(c.RunningLeader()->name, "s");
}

TEST(Patroni, MembersWithoutAnAddressAreSkipped) {
  PatroniCluster c = ParseClusterDocument(R"({"members": [
    {"name": "a", "role": "replica", "state": "creating replica"},
    {"name": "b", "role": "replica", "state": "running", "host": "h", "port": 70000},
    {"name": "c", "role": "replica", "state": "running", "host": "h", "port": 5432}]})");
  ASSERT_EQ(c.members.size(), 1u);
  EXPECT_EQ(c.members[0].name, "c");
}

TEST(Patroni, DocumentsThatAreNotPatronisAreErrors) {
  EXPECT_THROW(ParseClusterDocument("not json"), PatroniError);
  EXPECT_THROW(ParseClusterDocument("[]"), PatroniError);
  EXPECT_THROW(ParseClusterDocument(R"({"members": {}})"), PatroniError);
  EXPECT_THROW(ParseClusterDocument(R"({"members": [{"role": "leader"}]})"), PatroniError);
  EXPECT_THROW(ParseClusterDocument(R"({"members": [1]})"), PatroniError);
  EXPECT_TRUE(ParseClusterDocument(R"({"members": []})").members.empty());
}

TEST(Patroni, MemberDsnAppendsHostAndPort) {
  PatroniMember m;
  m.host = "10.0.0.7";
  m.port = 5433;
  EXPECT_EQ(MemberDsn("dbname=postgres user=warden", m),
            "dbname=postgres user=warden host='10.0.0.7' port=5433");
  m.host = "we'ird";
  EXPECT_EQ(MemberDsn("", m), " host='we\\'ird' port=5433");
}

TEST(Patroni, FetchNamesEveryUrlThatFailed) {
  try {
    FetchCluster({"http://127.0.0.1:1", "ftp://x"}, 200);
    ADD_FAILURE() << "no error";
  } catch (const PatroniError& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("http://127.0.0.1:1:"), std::string::npos) << w;
    EXPECT_NE(w.find("ftp://x: not an http:// URL"), std::string::npos) << w;
  }
}

TEST(SplitLimit, SharesFollowTheConnectionsAndSumToTheLimit) {
  auto caps = SplitLimit(30, {{"c/pg1", 20}, {"c/pg2", 20}, {"c/pg3", 20}});
  EXPECT_EQ(caps.at("c/pg1") + caps.at("c/pg2") + caps.at("c/pg3"), 30);
  EXPECT_EQ(caps.at("c/pg1"), 10);
  caps = SplitLimit(30, {{"a", 25}, {"b", 10}, {"c", 0}});
  EXPECT_EQ(caps.at("a"), 21);  // 30*25/35 = 21.43
  EXPECT_EQ(caps.at("b"), 9);   // 8.57, the larger remainder
  EXPECT_EQ(caps.at("c"), 0);
  caps = SplitLimit(10, {{"a", 0}, {"b", 0}, {"c", 0}});  // nobody: evenly, ties by name
  EXPECT_EQ(caps.at("a"), 4);
  EXPECT_EQ(caps.at("b"), 3);
  EXPECT_EQ(caps.at("c"), 3);
  EXPECT_TRUE(SplitLimit(5, {}).empty());
  caps = SplitLimit(0, {{"a", 3}});
  EXPECT_EQ(caps.at("a"), 0);
}

// What the fleet changes in the decisions: cluster-scoped limits are not
// counted per server, the fleet's caps are placed and lifted, and Patroni's
// own session is never picked.
namespace {

Config FleetCfg(const std::string& extra) {
  return ParseConfig(
      "[[cluster]]\nname = \"c\"\npatroni = [\"http://h:8008\"]\ndsn = \"dbname=postgres\"\n" +
          extra,
      "t.toml");
}

Snapshot RoleSnap(const std::string& role, int connections, std::vector<Backend> backends = {}) {
  Snapshot s;
  s.max_connections = 100;
  s.usage_percent = connections;
  s.own_pid = 1;
  s.apps.push_back(AppUsage{"db", role, "svc", connections, connections, 0, 0, 0, 0});
  s.backends = std::move(backends);
  s.connections = connections;
  return s;
}

}  // namespace

TEST(FleetDecide, ClusterScopedLimitIsNotCountedOnOneMember) {
  Config cfg = FleetCfg("[[role]]\nname = \"app\"\nscope = \"cluster\"\nmax_connections = 5\n");
  ServerState st;
  auto d = Decide(cfg, RoleSnap("app", 20), st, 0);
  EXPECT_TRUE(d.actions.empty());  // 20 > 5 on this member alone: not its business
  st.cluster_caps["app"] = 3;      // the fleet's share for this member
  d = Decide(cfg, RoleSnap("app", 20), st, 0);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kCloseAdmission);
  EXPECT_EQ(d.actions[0].limit, 3);
  EXPECT_NE(d.actions[0].reason.find("cluster max_connections 5, this member's share 3"),
            std::string::npos)
      << d.actions[0].reason;
  st.applied["app"] = 3;
  st.cluster_caps.clear();  // not the actor any more, or under the limit
  d = Decide(cfg, RoleSnap("app", 20), st, 0);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kOpenAdmission);
}

TEST(FleetDecide, PatronisOwnSessionIsNeverPickedEvenByACatchAll) {
  Config cfg = FleetCfg(
      "[[emergency]]\nat_percent = 1\naction = \"terminate_idle\"\nolder_than = \"0s\"\n"
      "skip_priority = []\n");
  Backend patroni{7, "postgres", "postgres", "Patroni", "idle", 100, "2026-01-01 00:00:00+00"};
  Backend ctl{8, "postgres", "postgres", "Patroni ctl", "idle", 100, "2026-01-01 00:00:00+00"};
  Backend other{9, "postgres", "postgres", "psql", "idle", 100, "2026-01-01 00:00:00+00"};
  ServerState st;
  auto d = Decide(cfg, RoleSnap("postgres", 50, {patroni, ctl, other}), st, 0);
  std::vector<int> pids;
  for (const auto& a : d.actions)
    if (a.kind == Action::Kind::kTerminate) pids.push_back(a.pid);
  EXPECT_EQ(pids, std::vector<int>{9});
}

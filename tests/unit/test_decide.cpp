// The decision functions: ladder order, hysteresis, emergency up/down.
#include <gtest/gtest.h>

#include "wardend/decide.hpp"

using namespace wardend;

namespace {

Config Cfg(const std::string& extra) {
  return ParseConfig(
      "[daemon]\ncooldown = \"10s\"\nhysteresis_percent = 5\nmin_idle_age = \"0s\"\n"
      "[[server]]\nname = \"p\"\ndsn = \"host=/tmp\"\n" +
          extra,
      "t.toml");
}

Backend B(int pid, const std::string& role, const std::string& state, double secs) {
  return Backend{pid, role, "db", "app", state, secs, "2026-01-01 00:00:00+00", ""};
}

// A snapshot with `active` active sessions of `role` plus the given idle ones.
Snapshot Snap(const std::string& role, int active, std::vector<Backend> idle, double usage = 10) {
  Snapshot s;
  s.max_connections = 100;
  s.usage_percent = usage;
  s.own_pid = 1;
  AppUsage a{"db", role, "app", active + static_cast<int>(idle.size()), active, 0, 0, 0};
  for (const auto& b : idle) (b.state == "idle" ? a.idle : a.idle_in_transaction)++;
  s.apps.push_back(a);
  s.backends = std::move(idle);
  s.connections = a.connections;
  return s;
}

std::vector<int> Pids(const Decision& d) {
  std::vector<int> v;
  for (const auto& a : d.actions)
    if (a.kind == Action::Kind::kTerminate) v.push_back(a.pid);
  return v;
}

}  // namespace

TEST(Decide, IdleBeyondMaxIdleOldestFirstKeepsTheNewest) {
  Config cfg = Cfg("[[role]]\nname = \"api\"\nmax_idle = 2\n");
  ServerState st;
  auto d = Decide(cfg,
                  Snap("api", 1,
                       {B(10, "api", "idle", 5), B(11, "api", "idle", 50), B(12, "api", "idle", 1),
                        B(13, "api", "idle", 20)}),
                  st, 0);
  EXPECT_EQ(Pids(d), (std::vector<int>{11, 13}));
  for (const auto& a : d.actions) EXPECT_NE(a.reason.find("max_idle 2"), std::string::npos);
}

TEST(Decide, NothingWithinTheLimits) {
  Config cfg = Cfg("[[role]]\nname = \"api\"\nmax_idle = 2\nmax_connections = 10\n");
  ServerState st;
  auto d = Decide(cfg, Snap("api", 3, {B(10, "api", "idle", 5), B(11, "api", "idle", 50)}), st, 0);
  EXPECT_TRUE(d.actions.empty());
}

TEST(Decide, OwnSessionAndOtherRolesAreNeverPicked) {
  Config cfg = Cfg("[[role]]\nname = \"api\"\nmax_idle = 0\n");
  ServerState st;
  Snapshot s =
      Snap("api", 0, {B(1, "api", "idle", 99), B(10, "api", "idle", 5), B(20, "web", "idle", 500)});
  auto d = Decide(cfg, s, st, 0);
  EXPECT_EQ(Pids(d), (std::vector<int>{10}));
}

TEST(Decide, LadderOrderIdleInTransactionThenIdleThenAdmission) {
  Config cfg =
      Cfg("[[role]]\nname = \"api\"\nmax_connections = 3\nmax_idle = 1\n"
          "idle_in_transaction_timeout = \"30s\"\n");
  ServerState st;
  // 4 active + 2 idle in transaction (one past 30s) + 3 idle = 9 > 3.
  Snapshot s =
      Snap("api", 4,
           {B(20, "api", "idle in transaction", 10), B(21, "api", "idle in transaction", 40),
            B(22, "api", "idle in transaction (aborted)", 90), B(30, "api", "idle", 100),
            B(31, "api", "idle", 200), B(32, "api", "idle", 1)});
  auto d = Decide(cfg, s, st, 0);
  ASSERT_EQ(d.actions.size(), 5u);
  // idle in transaction past the timeout, longest first
  EXPECT_EQ(d.actions[0].pid, 22);
  EXPECT_EQ(d.actions[1].pid, 21);
  EXPECT_DOUBLE_EQ(d.actions[0].min_idle_seconds, 30);
  // then idle beyond max_idle, oldest first (the newest, 32, is kept)
  EXPECT_EQ(d.actions[2].pid, 31);
  EXPECT_EQ(d.actions[3].pid, 30);
  // then admission, since 10 - 4 = 6 > 3
  EXPECT_EQ(d.actions[4].kind, Action::Kind::kCloseAdmission);
  EXPECT_EQ(d.actions[4].role, "api");
  EXPECT_EQ(d.actions[4].limit, 3);
}

TEST(Decide, AdmissionNotClosedWhenTerminationsBringTheRoleUnder) {
  Config cfg = Cfg("[[role]]\nname = \"api\"\nmax_connections = 3\nmax_idle = 0\n");
  ServerState st;
  auto d =
      Decide(cfg, Snap("api", 2, {B(30, "api", "idle", 100), B(31, "api", "idle", 200)}), st, 0);
  EXPECT_EQ(Pids(d).size(), 2u);
  for (const auto& a : d.actions) EXPECT_EQ(a.kind, Action::Kind::kTerminate);
  EXPECT_FALSE(st.roles["api"].over_limit);
}

TEST(Decide, AdmissionReopensOnlyAfterTheCooldownWithoutFlapping) {
  Config cfg = Cfg("[[role]]\nname = \"api\"\nmax_connections = 3\n");
  ServerState st;
  auto d = Decide(cfg, Snap("api", 5, {}), st, 100);
  ASSERT_EQ(d.actions.size(), 1u);
  ASSERT_EQ(d.actions[0].kind, Action::Kind::kCloseAdmission);
  st.applied["api"] = 3;  // the executor applied it
  // Still over: nothing new.
  EXPECT_TRUE(Decide(cfg, Snap("api", 5, {}), st, 101).actions.empty());
  // Under its limit, but the cool-down (10s) has not passed.
  EXPECT_TRUE(Decide(cfg, Snap("api", 2, {}), st, 102).actions.empty());
  EXPECT_TRUE(Decide(cfg, Snap("api", 3, {}), st, 108).actions.empty());
  // Over again: the cool-down restarts.
  EXPECT_TRUE(Decide(cfg, Snap("api", 4, {}), st, 109).actions.empty());
  EXPECT_TRUE(Decide(cfg, Snap("api", 2, {}), st, 110).actions.empty());
  EXPECT_TRUE(Decide(cfg, Snap("api", 2, {}), st, 119.9).actions.empty());
  d = Decide(cfg, Snap("api", 2, {}), st, 120);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kOpenAdmission);
  st.applied.erase("api");
  EXPECT_TRUE(Decide(cfg, Snap("api", 2, {}), st, 121).actions.empty());
}

TEST(Decide, PerRoleCooldownOverridesTheDaemonDefault) {
  Config cfg = Cfg("[[role]]\nname = \"api\"\nmax_connections = 3\ncooldown = \"1s\"\n");
  ServerState st;
  Decide(cfg, Snap("api", 5, {}), st, 0);
  st.applied["api"] = 3;
  EXPECT_TRUE(Decide(cfg, Snap("api", 1, {}), st, 1).actions.empty());
  auto d = Decide(cfg, Snap("api", 1, {}), st, 2);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kOpenAdmission);
}

TEST(Decide, EmergencyTerminateIdleFiresOnTheWayUpAndIsUndoneWithHysteresis) {
  Config cfg =
      Cfg("[[role]]\nname = \"vip\"\npriority = \"critical\"\n"
          "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nolder_than = \"30m\"\n"
          "skip_priority = [\"critical\"]\n");
  ServerState st;
  auto idle =
      std::vector<Backend>{B(10, "api", "idle", 3600), B(11, "api", "idle", 60),
                           B(12, "vip", "idle", 7200), B(13, "web", "idle in transaction", 2000)};
  // Below: nothing.
  EXPECT_TRUE(Decide(cfg, Snap("api", 1, idle, 89), st, 0).actions.empty());
  // Crosses 90: idle > 30 min, except critical roles; oldest first; as many
  // as bring usage under 90 (100 connections: 2 of them).
  Snapshot up = Snap("api", 1, idle, 91);
  up.connections = 100;
  auto d = Decide(cfg, up, st, 1);
  EXPECT_EQ(Pids(d), (std::vector<int>{10, 13}));
  EXPECT_TRUE(st.emergency_active[0]);
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_NE(d.events[0].find("fired"), std::string::npos);
  // In the hysteresis band (85..90): still active.
  Decide(cfg, Snap("api", 1, {}, 86), st, 2);
  EXPECT_TRUE(st.emergency_active[0]);
  // Below 85: undone.
  d = Decide(cfg, Snap("api", 1, {}, 84), st, 3);
  EXPECT_FALSE(st.emergency_active[0]);
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_NE(d.events[0].find("undone"), std::string::npos);
}

TEST(Decide, EmergencyCloseAdmissionCapsLowPriorityRolesAtWhatTheyHold) {
  Config cfg =
      Cfg("[[role]]\nname = \"batch\"\npriority = \"low\"\n"
          "[[role]]\nname = \"api\"\nmax_connections = 50\n"
          "[[emergency]]\nat_percent = 95\naction = \"close_admission\"\n");
  ServerState st;
  Snapshot s = Snap("batch", 7, {}, 96);
  s.apps.push_back(AppUsage{"db", "api", "app", 20, 20, 0, 0, 0, 0});
  auto d = Decide(cfg, s, st, 0);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kCloseAdmission);
  EXPECT_EQ(d.actions[0].role, "batch");
  EXPECT_EQ(d.actions[0].limit, 7);
  st.applied["batch"] = 7;
  // The cap stays what it was when the step fired, even when the role shrinks.
  EXPECT_TRUE(Decide(cfg, Snap("batch", 3, {}, 92), st, 1).actions.empty());
  // Down past 95 - 5: reopened.
  d = Decide(cfg, Snap("batch", 3, {}, 89), st, 2);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kOpenAdmission);
  EXPECT_EQ(d.actions[0].role, "batch");
}

TEST(Decide, TightestLimitWinsWhenRoleLimitAndEmergencyBothClose) {
  Config cfg =
      Cfg("[[role]]\nname = \"batch\"\npriority = \"low\"\nmax_connections = 10\n"
          "[[emergency]]\nat_percent = 95\naction = \"close_admission\"\n");
  ServerState st;
  auto d = Decide(cfg, Snap("batch", 12, {}, 50), st, 0);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].limit, 10);
  st.applied["batch"] = 10;
  // The emergency caps batch at the 12 it holds; the role limit of 10 is tighter.
  d = Decide(cfg, Snap("batch", 12, {}, 97), st, 1);
  EXPECT_TRUE(d.actions.empty());
  EXPECT_EQ(DesiredAdmission(cfg, st).at("batch"), 10);
  EXPECT_EQ(st.emergency_caps.at(0).at("batch"), 12);
}

TEST(Decide, ARoleNoLongerInTheConfigurationIsReopened) {
  Config cfg = Cfg("");
  ServerState st;
  st.applied["gone"] = 4;
  auto d = Decide(cfg, Snap("x", 1, {}), st, 0);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kOpenAdmission);
  EXPECT_EQ(d.actions[0].role, "gone");
}

TEST(Decide, ASessionIsPickedOnceEvenIfSeveralStepsMatch) {
  Config cfg =
      Cfg("[[role]]\nname = \"api\"\nmax_idle = 0\n"
          "[[emergency]]\nat_percent = 50\naction = \"terminate_idle\"\nolder_than = \"1s\"\n");
  ServerState st;
  auto d = Decide(cfg, Snap("api", 0, {B(10, "api", "idle", 100)}, 60), st, 0);
  EXPECT_EQ(Pids(d), (std::vector<int>{10}));
}

#include "wardend/backoff.hpp"

TEST(Backoff, GrowsWithJitterAndIsCapped) {
  // First failure: the base delay.
  EXPECT_DOUBLE_EQ(NextBackoffMs(0, 200, 30'000, 0.0), 200);
  EXPECT_DOUBLE_EQ(NextBackoffMs(0, 200, 30'000, 0.99), 200);
  // Later: random in [base, 3 x previous).
  EXPECT_DOUBLE_EQ(NextBackoffMs(1000, 200, 30'000, 0.0), 200);
  EXPECT_DOUBLE_EQ(NextBackoffMs(1000, 200, 30'000, 0.5), 1600);
  // Capped.
  EXPECT_DOUBLE_EQ(NextBackoffMs(20'000, 200, 30'000, 0.9), 30'000);
  // A run of failures with the worst luck reaches the cap, never exceeds it.
  double d = 0;
  for (int i = 0; i < 20; ++i) {
    d = NextBackoffMs(d, 200, 30'000, 0.999);
    EXPECT_LE(d, 30'000);
    EXPECT_GE(d, 200);
  }
  EXPECT_DOUBLE_EQ(d, 30'000);
}

TEST(Decide, ExemptRolesAreNeverActedOn) {
  Config cfg =
      Cfg("[[role]]\nname = \"ops\"\nmax_idle = 0\nmax_connections = 1\npriority = \"low\"\n"
          "[[emergency]]\nat_percent = 50\naction = \"terminate_idle\"\nolder_than = \"1s\"\n"
          "[[emergency]]\nat_percent = 60\naction = \"close_admission\"\n");
  ServerState st;
  Snapshot s = Snap("ops", 3, {B(10, "ops", "idle", 100), B(11, "api", "idle", 100)}, 70);
  s.exempt_roles = {"ops"};
  auto d = Decide(cfg, s, st, 0);
  EXPECT_EQ(Pids(d), (std::vector<int>{11}));
  for (const auto& a : d.actions) EXPECT_NE(a.kind, Action::Kind::kCloseAdmission);
}

// The two halves alone: each is a pure function of its inputs.

TEST(DecideRoleLimits, TerminatesAndMarksOverTheLimitWithoutClosingItself) {
  Config cfg =
      Cfg("[[role]]\nname = \"api\"\nmax_connections = 2\nmax_idle = 1\n"
          "idle_in_transaction_timeout = \"10s\"\n");
  std::map<std::string, RoleState> roles;
  auto d =
      DecideRoleLimits(cfg,
                       Snap("api", 3,
                            {B(10, "api", "idle in transaction", 11), B(11, "api", "idle", 5),
                             B(12, "api", "idle", 50), B(13, "api", "idle in transaction", 2)}),
                       roles, 0);
  // 10 (idle in transaction past 10s), then 12 (oldest idle beyond max_idle 1).
  EXPECT_EQ(Pids(d), (std::vector<int>{10, 12}));
  EXPECT_NE(d.actions[0].reason.find("role api: idle_in_transaction_timeout 10s"),
            std::string::npos)
      << d.actions[0].reason;
  // 7 held - 2 terminated = 5 > 2: over its limit; closing is Decide's job.
  EXPECT_TRUE(roles["api"].over_limit);
  for (const auto& a : d.actions) EXPECT_EQ(a.kind, Action::Kind::kTerminate);
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_NE(d.events[0].find("over its limit"), std::string::npos);
}

TEST(DecideRoleLimits, ExemptRolesAndOwnSessionAreNeverCandidates) {
  Config cfg =
      Cfg("[[role]]\nname = \"api\"\nmax_idle = 0\nmax_connections = 0\n"
          "[[role]]\nname = \"ops\"\nmax_idle = 0\nmax_connections = 0\n");
  Snapshot s = Snap("api", 0, {B(1, "api", "idle", 99), B(2, "api", "idle", 9)});
  s.apps.push_back(AppUsage{"db", "ops", "app", 1, 0, 1, 0, 0, 0});
  s.backends.push_back(B(3, "ops", "idle", 99));
  s.exempt_roles = {"ops"};
  std::map<std::string, RoleState> roles;
  auto d = DecideRoleLimits(cfg, s, roles, 0);
  EXPECT_EQ(Pids(d), (std::vector<int>{2}));  // pid 1 is wardend's own session (own_pid)
  EXPECT_FALSE(roles["ops"].over_limit);
}

TEST(DecideEmergencies, SkipsSessionsAlreadyChosenAndLeavesRoleStatesAlone) {
  Config cfg =
      Cfg("[[role]]\nname = \"api\"\nmax_connections = 1\n"
          "[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\n"
          "older_than = \"1m\"\n");
  ServerState st;
  auto idle = std::vector<Backend>{B(10, "api", "idle", 600), B(11, "api", "idle", 300),
                                   B(12, "api", "idle", 30)};
  Snapshot snap = Snap("api", 5, idle, 95);
  snap.connections = 100;
  auto d = DecideEmergencies(cfg, snap, st, {10});
  EXPECT_EQ(Pids(d), (std::vector<int>{11}));  // 10 already chosen, 12 too young
  EXPECT_EQ(d.actions[0].rule, "emergency 90%");
  EXPECT_TRUE(st.emergency_active.at(0));
  EXPECT_TRUE(st.roles.empty());  // the role half's state is not touched
  // Not yet below 90 - 5: still active, no new event.
  d = DecideEmergencies(cfg, Snap("api", 5, {}, 86), st, {});
  EXPECT_TRUE(d.events.empty());
  EXPECT_TRUE(st.emergency_active.at(0));
}

TEST(DecideEmergencies, TerminateIdleStopsOnceUsageIsBackUnderTheThreshold) {
  Config cfg =
      Cfg("[[emergency]]\nat_percent = 90\naction = \"terminate_idle\"\nolder_than = \"1s\"\n");
  ServerState st;
  std::vector<Backend> idle;
  for (int i = 0; i < 10; ++i) idle.push_back(B(100 + i, "api", "idle", 100 + i));
  // 20 connections at 96.5%: 4.825% each; 2 bring it to 86.85% (< 90).
  Snapshot snap = Snap("api", 10, idle, 96.5);
  ASSERT_EQ(snap.connections, 20);
  auto d = DecideEmergencies(cfg, snap, st, {});
  EXPECT_EQ(Pids(d), (std::vector<int>{109, 108}));  // the oldest idle
  // This poll's other terminations count: one already chosen, one more needed.
  ServerState st2;
  d = DecideEmergencies(cfg, snap, st2, {100});
  EXPECT_EQ(Pids(d), (std::vector<int>{109}));
}

TEST(DecideEmergencies, TerminateIdleKeepsKeepMinPerGroup) {
  Config cfg =
      Cfg("[[emergency]]\nat_percent = 50\naction = \"terminate_idle\"\nolder_than = \"1s\"\n"
          "keep_min = 2\n");
  ServerState st;
  std::vector<Backend> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(B(10 + i, "api", "idle", 10 + i));
  Backend other = B(20, "api", "idle", 500);
  other.application_name = "worker";  // another group, alone: kept
  idle.push_back(other);
  Snapshot snap = Snap("api", 0, idle, 99);
  auto d = DecideEmergencies(cfg, snap, st, {});
  // Usage would allow all of them; each group keeps its 2 most recently used.
  EXPECT_EQ(Pids(d), (std::vector<int>{13, 12}));
}

TEST(Decide, MaxIdleSparesSessionsYoungerThanMinIdleAge) {
  Config cfg = Cfg("[[role]]\nname = \"api\"\nmax_idle = 1\nmin_idle_age = \"10s\"\n");
  ServerState st;
  auto d =
      Decide(cfg,
             Snap("api", 0,
                  {B(10, "api", "idle", 0.8), B(11, "api", "idle", 0.5), B(12, "api", "idle", 40)}),
             st, 0);
  // Excess: 12 and 10 (oldest first); 10 has been idle 0.8 s only: spared.
  EXPECT_EQ(Pids(d), (std::vector<int>{12}));
  EXPECT_DOUBLE_EQ(d.actions[0].min_idle_seconds, 10.0);  // re-checked by the executor
  // The default minimum age is 30 s.
  Config dflt = ParseConfig(
      "[[server]]\nname = \"p\"\ndsn = \"host=/tmp\"\n[[role]]\nname = \"api\"\nmax_idle = 0\n",
      "t.toml");
  ServerState st2;
  d = Decide(dflt, Snap("api", 0, {B(10, "api", "idle", 29), B(11, "api", "idle", 31)}), st2, 0);
  EXPECT_EQ(Pids(d), (std::vector<int>{11}));
}

TEST(Decide, EmergencyCloseAdmissionNeverCapsARoleAtZero) {
  Config cfg =
      Cfg("[[role]]\nname = \"batch\"\npriority = \"low\"\n"
          "[[emergency]]\nat_percent = 95\naction = \"close_admission\"\n");
  ServerState st;
  auto d = Decide(cfg, Snap("api", 50, {}, 96), st, 0);  // batch holds nothing
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].role, "batch");
  EXPECT_EQ(d.actions[0].limit, 1);
}

// Folding small applications and roles into "<other>" for the status board.
#include <gtest/gtest.h>

#include "wardend/fold.hpp"

using namespace wardend;

namespace {

AppUsage App(const std::string& app, int n, double longest = 0) {
  return AppUsage{"db", "r", app, n, 1, n - 1, 0, longest, 0};
}

}  // namespace

TEST(FoldApplications, AtTheCapNothingFoldsButRowsAreSortedByConnections) {
  auto out = FoldApplications({App("b", 1), App("a", 1), App("c", 5)}, 3);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].application_name, "c");
  EXPECT_EQ(out[1].application_name, "a");  // ties: by name
  EXPECT_EQ(out[2].application_name, "b");
}

TEST(FoldApplications, BeyondTheCapTheSmallestFoldIntoOneOtherRow) {
  auto out = FoldApplications({App("a", 10), App("b", 2, 7.5), App("c", 3, 1), App("d", 9)}, 3);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].application_name, "a");
  EXPECT_EQ(out[1].application_name, "d");
  const AppUsage& o = out[2];
  EXPECT_EQ(o.database, "<other>");
  EXPECT_EQ(o.role, "<other>");
  EXPECT_EQ(o.application_name, "<other>");
  EXPECT_EQ(o.connections, 5);
  EXPECT_EQ(o.active, 2);
  EXPECT_EQ(o.idle, 3);
  EXPECT_DOUBLE_EQ(o.longest_idle_seconds, 7.5);
}

TEST(FoldApplications, ACapOfOneKeepsOnlyTheOtherRow) {
  auto out = FoldApplications({App("a", 10), App("b", 2)}, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].application_name, "<other>");
  EXPECT_EQ(out[0].connections, 12);
}

TEST(FoldRoles, RolesWithALimitKeepTheirRowPastTheCap) {
  std::map<std::string, RoleCount> roles{
      {"a", {1, 1, 0, 0}}, {"b", {2, 0, 2, 0}}, {"c", {3, 0, 0, 3}}, {"d", {4, 4, 0, 0}}};
  auto keep = [](const std::string& r) { return r == "c"; };
  auto out = FoldRoles(roles, 2, keep);
  // "a" gets the one row before the cap; "b" and "d" fold; "c" has a [[role]] limit.
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out.at("a").connections, 1);
  EXPECT_EQ(out.at("c").connections, 3);
  EXPECT_EQ(out.at("<other>").connections, 6);
  EXPECT_EQ(out.at("<other>").active, 4);
  EXPECT_EQ(out.at("<other>").idle, 2);
  EXPECT_EQ(FoldRoles(roles, 100, keep).size(), roles.size());
}

TEST(FoldApplications, TheOtherRowKeepsTheLongestIdleInTransaction) {
  std::vector<AppUsage> apps = {App("a", 10), App("b", 2), App("c", 3)};
  apps[1].longest_idle_in_transaction_seconds = 42.5;
  apps[2].longest_idle_in_transaction_seconds = 3;
  auto out = FoldApplications(apps, 2);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_DOUBLE_EQ(out[0].longest_idle_in_transaction_seconds, 0);
  EXPECT_DOUBLE_EQ(out[1].longest_idle_in_transaction_seconds, 42.5);
}

TEST(LongestIdleInTransaction, FromTheBackendsOfTheSameApplicationOnly) {
  Snapshot s;
  s.apps = {App("a", 3), App("b", 1), App("c", 1)};
  s.apps[2].longest_idle_in_transaction_seconds = 9;  // stale: recomputed
  auto backend = [](const std::string& app, const std::string& state, double seconds) {
    Backend b;
    b.database = "db";
    b.role = "r";
    b.application_name = app;
    b.state = state;
    b.state_seconds = seconds;
    return b;
  };
  s.backends = {backend("a", "idle", 100),  // idle, not in a transaction: not counted
                backend("a", "idle in transaction", 2.5),
                backend("a", "idle in transaction (aborted)", 7.25),
                backend("b", "idle in transaction", 1), backend("zz", "idle in transaction", 50)};
  LongestIdleInTransactionFromBackends(s);
  EXPECT_DOUBLE_EQ(s.apps[0].longest_idle_in_transaction_seconds, 7.25);
  EXPECT_DOUBLE_EQ(s.apps[1].longest_idle_in_transaction_seconds, 1);
  EXPECT_DOUBLE_EQ(s.apps[2].longest_idle_in_transaction_seconds, 0);
  EXPECT_DOUBLE_EQ(s.LongestIdleInTransactionSeconds(), 7.25);
}

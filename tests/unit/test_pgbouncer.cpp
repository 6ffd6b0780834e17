// SHOW POOLS / SHOW STATS rows into the status board's values.
#include <gtest/gtest.h>

#include "wardend/pgbouncer.hpp"

using namespace wardend;

TEST(PgBouncer, PoolRowsWithEitherMaxwaitColumn) {
  auto pools = PoolsFromRows({{{"database", "app"},
                               {"user", "u"},
                               {"cl_active", "3"},
                               {"cl_waiting", "2"},
                               {"sv_active", "1"},
                               {"sv_idle", "4"},
                               {"sv_used", "5"},
                               {"maxwait", "1"},
                               {"maxwait_us", "500000"}},
                              {{"database", "pgbouncer"}}});
  ASSERT_EQ(pools.size(), 2u);
  EXPECT_EQ(pools[0].database, "app");
  EXPECT_EQ(pools[0].cl_waiting, 2);
  EXPECT_EQ(pools[0].sv_used, 5);
  EXPECT_DOUBLE_EQ(pools[0].maxwait_seconds, 1.5);
  EXPECT_EQ(pools[1].user, "");  // a missing column reads as empty / 0
  EXPECT_EQ(pools[1].cl_active, 0);
}

TEST(PgBouncer, StatRowsWaitTimeInSeconds) {
  auto stats = StatsFromRows({{{"database", "app"},
                               {"total_xact_count", "10"},
                               {"total_query_count", "20"},
                               {"total_wait_time", "2500000"}}});
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_DOUBLE_EQ(stats[0].xact_count, 10);
  EXPECT_DOUBLE_EQ(stats[0].query_count, 20);
  EXPECT_DOUBLE_EQ(stats[0].wait_seconds, 2.5);
}

TEST(PgBouncer, ClientRowsCountedPerApplication) {
  auto clients = ClientsFromRows({{{"database", "app"}, {"user", "u"}, {"application_name", "a"}},
                                  {{"database", "app"}, {"user", "u"}, {"application_name", "b"}},
                                  {{"database", "app"}, {"user", "u"}, {"application_name", "a"}},
                                  {{"database", "pgbouncer"}, {"user", "admin"}}});
  ASSERT_EQ(clients.size(), 3u);
  EXPECT_EQ(clients[0].application_name, "a");
  EXPECT_EQ(clients[0].clients, 2);
  EXPECT_EQ(clients[1].application_name, "b");
  EXPECT_EQ(clients[1].clients, 1);
  EXPECT_EQ(clients[2].database, "pgbouncer");
  EXPECT_EQ(clients[2].application_name, "");
}

TEST(PgBouncer, ClientGroupsBoundedSumExact) {
  std::vector<std::map<std::string, std::string>> rows;
  for (size_t i = 0; i < kMaxClientGroups + 50; ++i)
    rows.push_back(
        {{"database", "app"}, {"user", "u"}, {"application_name", "a" + std::to_string(i)}});
  auto clients = ClientsFromRows(rows);
  EXPECT_EQ(clients.size(), kMaxClientGroups + 1);
  int sum = 0;
  for (const auto& c : clients) sum += c.clients;
  EXPECT_EQ(sum, static_cast<int>(kMaxClientGroups + 50));
}

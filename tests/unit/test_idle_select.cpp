// Unit tests of the idle-policy selection rule (no server needed).
#include <gtest/gtest.h>

#include <vector>

#include "pg_warden/idle_select.hpp"

using warden::IdleCandidate;
using warden::SelectIdleVictims;

namespace {

constexpr int64_t kSec = 1000000;

struct Result {
  std::vector<int32_t> victims; /* indexes, in termination order */
  int64_t deadline;
};

Result Select(std::vector<IdleCandidate> c, int32_t keep_min, int64_t timeout, int64_t now) {
  Result r{{}, 0};
  const int n =
      SelectIdleVictims(c.data(), static_cast<int>(c.size()), keep_min, timeout, now, &r.deadline);
  for (int i = 0; i < n; i++) r.victims.push_back(c[i].index);
  return r;
}

}  // namespace

TEST(IdleSelect, OldestFirstAllPastTheTimeout) {
  // idle since 0, 5, 2 s; at 20 s with a 10 s timeout all three go, oldest first
  auto r = Select({{0, 1, 0}, {1, 1, 5 * kSec}, {2, 1, 2 * kSec}}, 0, 10 * kSec, 20 * kSec);
  EXPECT_EQ(r.victims, (std::vector<int32_t>{0, 2, 1}));
  EXPECT_EQ(r.deadline, 0);
}

TEST(IdleSelect, KeepMinKeepsTheMostRecentlyIdlePerGroup) {
  // group 1: five sessions; group 2: two sessions; keep 3 per group
  std::vector<IdleCandidate> c = {{0, 1, 0},        {1, 1, 1 * kSec}, {2, 1, 2 * kSec},
                                  {3, 1, 3 * kSec}, {4, 1, 4 * kSec}, {5, 2, 0},
                                  {6, 2, 1 * kSec}};
  auto r = Select(c, 3, 5 * kSec, 100 * kSec);
  EXPECT_EQ(r.victims, (std::vector<int32_t>{0, 1}));  // the two oldest of group 1 only
}

TEST(IdleSelect, DeadlineIsTheEarliestWaitingCandidateBeyondKeepMin) {
  // keep 1; the newest (idle since 9 s) is kept; the others reach 10 s at 17 and 18 s
  auto r = Select({{0, 7, 7 * kSec}, {1, 7, 8 * kSec}, {2, 7, 9 * kSec}}, 1, 10 * kSec, 12 * kSec);
  EXPECT_TRUE(r.victims.empty());
  EXPECT_EQ(r.deadline, 17 * kSec);
  // exactly at the deadline it is due (never early, never a tick late)
  r = Select({{0, 7, 7 * kSec}, {1, 7, 8 * kSec}, {2, 7, 9 * kSec}}, 1, 10 * kSec, 17 * kSec);
  EXPECT_EQ(r.victims, (std::vector<int32_t>{0}));
  EXPECT_EQ(r.deadline, 18 * kSec);
  // one microsecond earlier it is not
  r = Select({{0, 7, 7 * kSec}}, 0, 10 * kSec, 17 * kSec - 1);
  EXPECT_TRUE(r.victims.empty());
}

TEST(IdleSelect, KeptSessionsGiveNoDeadline) {
  auto r = Select({{0, 1, 0}, {1, 1, kSec}}, 2, 10 * kSec, 5 * kSec);
  EXPECT_TRUE(r.victims.empty());
  EXPECT_EQ(r.deadline, 0);
}

TEST(IdleSelect, ExistingDeadlineOnlyMovesEarlier) {
  std::vector<IdleCandidate> c = {{0, 1, 0}};
  int64_t deadline = 3 * kSec;
  EXPECT_EQ(SelectIdleVictims(c.data(), 1, 0, 10 * kSec, kSec, &deadline), 0);
  EXPECT_EQ(deadline, 3 * kSec);
  deadline = 30 * kSec;
  EXPECT_EQ(SelectIdleVictims(c.data(), 1, 0, 10 * kSec, kSec, &deadline), 0);
  EXPECT_EQ(deadline, 10 * kSec);
}

TEST(IdleSelect, Empty) {
  int64_t deadline = 0;
  EXPECT_EQ(SelectIdleVictims(nullptr, 0, 0, kSec, kSec, &deadline), 0);
  EXPECT_EQ(deadline, 0);
}

// PollMonitor (daemon/src/notify.cpp): when wardend is ready and when a poll
// loop counts as stuck, which decide READY=1 and the watchdog pings. The
// protocol itself is tested end to end in tests/e2e/test_notify.py.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "wardend/notify.hpp"

using namespace std::chrono_literals;
using wardend::PollMonitor;

TEST(PollMonitor, ReadyCountsLoopsThatFinishedAPoll) {
  PollMonitor m;
  int a = 0, b = 0;
  EXPECT_EQ(m.Polled(), 0u);
  m.Begin(&a);
  m.Begin(&b);
  EXPECT_EQ(m.Polled(), 0u);  // polls under way do not count
  m.End(&a);
  EXPECT_EQ(m.Polled(), 1u);
  m.Begin(&a);  // a second poll of the same loop does not undo the first
  EXPECT_EQ(m.Polled(), 1u);
  m.End(&b);
  EXPECT_EQ(m.Polled(), 2u);
}

TEST(PollMonitor, StuckOnlyWhileInsideOnePollForLongerThanTheLimit) {
  PollMonitor m;
  int a = 0;
  EXPECT_FALSE(m.AnyStuck(1ms));  // no loop yet
  m.Begin(&a);
  std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(m.AnyStuck(5ms));
  EXPECT_FALSE(m.AnyStuck(10s));
  m.End(&a);
  EXPECT_FALSE(m.AnyStuck(5ms));  // waiting between polls is not stuck
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(m.AnyStuck(5ms));
  m.Begin(&a);  // a new poll starts its own clock
  EXPECT_FALSE(m.AnyStuck(5s));
}

TEST(ServiceNotifier, DoesNothingWithoutNotifySocket) {
  unsetenv("NOTIFY_SOCKET");
  setenv("WATCHDOG_USEC", "1000000", 1);
  wardend::ServiceNotifier n;
  EXPECT_FALSE(n.enabled());
  EXPECT_EQ(n.watchdog_timeout().count(), 0);
  n.Ready("x");  // must not fail or send anything
  n.FeedWatchdog(true);
  unsetenv("WATCHDOG_USEC");
}

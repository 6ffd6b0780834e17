// Durations as written in wardend.toml.
#include <gtest/gtest.h>

#include "wardend/duration.hpp"

using wardend::FormatDuration;
using wardend::Millis;
using wardend::ParseDuration;

TEST(Duration, ParsesEveryUnit) {
  EXPECT_EQ(ParseDuration("200ms"), Millis(200));
  EXPECT_EQ(ParseDuration("30s"), Millis(30'000));
  EXPECT_EQ(ParseDuration("10m"), Millis(600'000));
  EXPECT_EQ(ParseDuration("10min"), Millis(600'000));
  EXPECT_EQ(ParseDuration("1h"), Millis(3'600'000));
  EXPECT_EQ(ParseDuration("1.5s"), Millis(1500));
  EXPECT_EQ(ParseDuration("0s"), Millis(0));
}

TEST(Duration, RejectsWhatIsNotADuration) {
  for (const char* bad : {"", "30", "s", "ms", "-1s", "1 s", "1.s", ".5s", "1..5s", "1d", "1S",
                          "abc", "10sec", "1e3s", "99999999999h"})
    EXPECT_FALSE(ParseDuration(bad).has_value()) << bad;
}

TEST(Duration, FormatsTheShortestExactSpelling) {
  EXPECT_EQ(FormatDuration(Millis(200)), "200ms");
  EXPECT_EQ(FormatDuration(Millis(1500)), "1500ms");
  EXPECT_EQ(FormatDuration(Millis(30'000)), "30s");
  EXPECT_EQ(FormatDuration(Millis(600'000)), "10m");
  EXPECT_EQ(FormatDuration(Millis(7'200'000)), "2h");
  EXPECT_EQ(FormatDuration(Millis(0)), "0s");
}

// Unit tests of the idle-policy cron parser and LIKE matcher (no server needed).
#include <gtest/gtest.h>

#include "pg_warden/cron.hpp"

using warden::CronMatches;
using warden::LikeMatch;
using warden::ParseCron;

namespace {

std::string ErrorOf(const std::string &expr) {
  try {
    ParseCron(expr);
  } catch (const warden::Error &e) {
    EXPECT_EQ(e.sqlstate(), warden::SqlState("22023"));
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Cron, StarMatchesEverything) {
  auto s = ParseCron("* * * * *");
  EXPECT_TRUE(CronMatches(s, 0, 0, 1, 1, 0));
  EXPECT_TRUE(CronMatches(s, 59, 23, 31, 12, 6));
}

TEST(Cron, NumbersRangesListsSteps) {
  auto s = ParseCron("*/15 0-5 * * *");
  EXPECT_TRUE(CronMatches(s, 0, 0, 10, 3, 2));
  EXPECT_TRUE(CronMatches(s, 45, 5, 10, 3, 2));
  EXPECT_FALSE(CronMatches(s, 44, 5, 10, 3, 2));
  EXPECT_FALSE(CronMatches(s, 0, 6, 10, 3, 2));

  s = ParseCron("5,10-12,30-40/5 * * 1,6-7 *");
  for (int m : {5, 10, 11, 12, 30, 35, 40}) EXPECT_TRUE(CronMatches(s, m, 1, 1, 1, 1)) << m;
  for (int m : {4, 13, 31, 41}) EXPECT_FALSE(CronMatches(s, m, 1, 1, 1, 1)) << m;
  EXPECT_TRUE(CronMatches(s, 5, 1, 1, 7, 1));
  EXPECT_FALSE(CronMatches(s, 5, 1, 1, 2, 1));

  s = ParseCron("10/20 * * * *"); /* 10, 30, 50 */
  EXPECT_TRUE(CronMatches(s, 50, 0, 1, 1, 0));
  EXPECT_FALSE(CronMatches(s, 0, 0, 1, 1, 0));
}

TEST(Cron, DayOfWeekSevenIsSunday) {
  auto s = ParseCron("* * * * 7");
  EXPECT_TRUE(CronMatches(s, 0, 0, 1, 1, 0));
  EXPECT_FALSE(CronMatches(s, 0, 0, 1, 1, 1));
  s = ParseCron("* * * * 1-5");
  EXPECT_FALSE(CronMatches(s, 0, 0, 1, 1, 0));
  EXPECT_TRUE(CronMatches(s, 0, 0, 1, 1, 3));
}

TEST(Cron, BothDayFieldsRestrictedMeansEither) {
  auto s = ParseCron("0 0 13 * 5"); /* the 13th, or any Friday */
  EXPECT_TRUE(CronMatches(s, 0, 0, 13, 1, 2));
  EXPECT_TRUE(CronMatches(s, 0, 0, 2, 1, 5));
  EXPECT_FALSE(CronMatches(s, 0, 0, 2, 1, 4));
  s = ParseCron("0 0 13 * *"); /* only the 13th */
  EXPECT_FALSE(CronMatches(s, 0, 0, 2, 1, 5));
}

TEST(Cron, WhitespaceIsFlexible) { EXPECT_NO_THROW(ParseCron("  0   0-5\t* *  * ")); }

TEST(Cron, BadInputNamesTheField) {
  EXPECT_EQ(ErrorOf(""), "expected 5 fields (minute hour day-of-month month day-of-week), got 0");
  EXPECT_EQ(ErrorOf("* * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 4");
  EXPECT_EQ(ErrorOf("* * * * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 6");
  EXPECT_EQ(ErrorOf("60 * * * *"), "field 1 (minute) value 60 is out of range 0-59");
  EXPECT_EQ(ErrorOf("* 24 * * *"), "field 2 (hour) value 24 is out of range 0-23");
  EXPECT_EQ(ErrorOf("* * 0 * *"), "field 3 (day of month) value 0 is out of range 1-31");
  EXPECT_EQ(ErrorOf("* * * 13 *"), "field 4 (month) value 13 is out of range 1-12");
  EXPECT_EQ(ErrorOf("* * * * 8"), "field 5 (day of week) value 8 is out of range 0-7");
  EXPECT_EQ(ErrorOf("5-1 * * * *"), "field 1 (minute) range 5-1 is backwards");
  EXPECT_EQ(ErrorOf("*/0 * * * *"), "field 1 (minute) step 0 is out of range");
  EXPECT_EQ(ErrorOf("*/ * * * *"), "field 1 (minute) has an empty step");
  EXPECT_EQ(ErrorOf("1,,2 * * * *"), "field 1 (minute) has an empty list item");
  EXPECT_EQ(ErrorOf("* * * jan *"), "field 4 (month) has an invalid value \"jan\"");
  EXPECT_EQ(ErrorOf("* -1 * * *"), "field 2 (hour) has an empty value");
  EXPECT_EQ(ErrorOf("99999 * * * *"), "field 1 (minute) value \"99999\" is out of range");
}

TEST(Like, Patterns) {
  EXPECT_TRUE(LikeMatch("reports-1", "reports%"));
  EXPECT_TRUE(LikeMatch("reports", "reports%"));
  EXPECT_FALSE(LikeMatch("report", "reports%"));
  EXPECT_TRUE(LikeMatch("abc", "a_c"));
  EXPECT_FALSE(LikeMatch("abbc", "a_c"));
  EXPECT_TRUE(LikeMatch("x-api-y", "%api%"));
  EXPECT_TRUE(LikeMatch("", "%"));
  EXPECT_FALSE(LikeMatch("", "_"));
  EXPECT_TRUE(LikeMatch("50%", "50\\%"));
  EXPECT_FALSE(LikeMatch("500", "50\\%"));
  EXPECT_FALSE(LikeMatch("API", "api"));
  EXPECT_TRUE(LikeMatch("a_b", "a\\_b"));
  EXPECT_FALSE(LikeMatch("axb", "a\\_b"));
}

TEST(LikeMatch, BacktracksWithoutBlowingUp) {
  // many wildcards against a long non-matching text: linear backtracking
  const std::string text(63, 'a');
  EXPECT_FALSE(LikeMatch(text.c_str(), "%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%b"));
  EXPECT_TRUE(LikeMatch(text.c_str(), "%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%"));
  EXPECT_TRUE(LikeMatch("worker-12", "worker-%"));
  EXPECT_TRUE(LikeMatch("abcbcd", "%bcd"));
  EXPECT_TRUE(LikeMatch("ab%cd", "ab\\%%"));
  EXPECT_FALSE(LikeMatch("abxcd", "ab\\%%"));
}

// The semantics the fuzz target (tests/fuzz/fuzz_cron.cpp) checks against its
// reference matcher, at the edges: backslashes at the end and escaped.
TEST(LikeMatch, EscapesAtTheEdges) {
  EXPECT_TRUE(LikeMatch("back\\", "back\\"));  // a trailing backslash is a literal one
  EXPECT_FALSE(LikeMatch("back", "back\\"));
  EXPECT_TRUE(LikeMatch("a\\b", "a\\\\b"));  // an escaped backslash
  EXPECT_FALSE(LikeMatch("ab", "a\\\\b"));
  EXPECT_TRUE(LikeMatch("x%y%z", "%\\%%\\%z"));
  EXPECT_FALSE(LikeMatch("x%yz", "%\\%%\\%z"));
  EXPECT_TRUE(LikeMatch("a", "%%%a%%%"));
  EXPECT_FALSE(LikeMatch("", "\\%"));
}

// The fuzzer's timeout input (tests/fuzz/corpus/cron/timeout-refmatcher): many
// '%' and '_' against a long text. It was the fuzz target's first reference
// matcher that took exponential time; LikeMatch itself (on the login path)
// must answer at once.
TEST(LikeMatch, ManyWildcardsAnswerAtOnce) {
  const std::string text = "* \xff" + std::string(54, '%') + "\x1f* \xff\x01";
  EXPECT_FALSE(LikeMatch(text.c_str(), "%_%__%%_%_%_%_%\x1e"));
  EXPECT_TRUE(LikeMatch(text.c_str(), "%_%__%%_%_%_%_%\x01"));
  const std::string as(200, 'a');
  EXPECT_FALSE(LikeMatch(as.c_str(), "%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%b"));
}

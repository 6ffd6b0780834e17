// Unit tests of the idle-policy cron parser (no server needed).
#include <gtest/gtest.h>

#include "pg_warden/cron.hpp"

using warden::CronMatches;
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

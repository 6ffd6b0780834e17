/*
 * cron.hpp — 5-field cron expressions (minute hour day-of-month month
 * day-of-week) for idle-policy schedules. Pure C++ (no PostgreSQL headers): unit-tested
 * without a server (tests/unit/test_cron.cpp).
 *
 * Syntax per field: `*`, a number, a range `a-b`, a step `*\/n`, `a-b/n` or
 * `a/n` (a to the field's maximum), and comma lists of those. Ranges:
 * minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-7
 * (0 and 7 are Sunday). Names (jan, mon) and `@hourly` macros are not
 * accepted. As in Vixie cron, when both day fields are restricted a day
 * matches if either matches. Bad input throws warden::Error (SQLSTATE 22023)
 * with a message that names the field.
 */
#pragma once

#include <cstdint>
#include <string>

#include "pg_warden/cpp_only.hpp"
#include "pg_warden/error.hpp"

namespace warden {

/* A parsed schedule: one bit per allowed value. Plain data (lives in shared memory). */
struct CronSchedule {
  uint64_t minutes;       /* bits 0-59 */
  uint32_t hours;         /* bits 0-23 */
  uint32_t days_of_month; /* bits 1-31 */
  uint16_t months;        /* bits 1-12 */
  uint8_t days_of_week;   /* bits 0-6, Sunday = 0 */
  bool dom_restricted;    /* day-of-month field was not `*` */
  bool dow_restricted;    /* day-of-week field was not `*` */
};

/* Parses a 5-field expression; throws warden::Error(22023) on bad input. */
CronSchedule ParseCron(const std::string &expr);

/* Does the schedule match this local time? (month 1-12, wday 0-6 Sunday = 0) */
bool CronMatches(const CronSchedule &s, int minute, int hour, int mday, int month, int wday);

}  // namespace warden

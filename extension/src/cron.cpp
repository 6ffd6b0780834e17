/*
 * cron.cpp — the cron expression parser and matcher of idle-policy
 * schedules. C++ regime, no PostgreSQL headers, no locks (see cron.hpp).
 */
#include "pg_warden/cron.hpp"

#include <cctype>
#include <vector>

namespace warden {
namespace {

struct FieldSpec {
  const char *name;
  int min, max;
};
constexpr FieldSpec kFields[5] = {{"minute", 0, 59},
                                  {"hour", 0, 23},
                                  {"day of month", 1, 31},
                                  {"month", 1, 12},
                                  {"day of week", 0, 7}};

[[noreturn]] void Fail(int field, const std::string &why) {
  std::string msg = "field ";
  msg += std::to_string(field + 1);
  msg += " (";
  msg += kFields[field].name;
  msg += ") ";
  msg += why;
  throw Error(kInvalidParameterValue, msg);
}

int ParseNumber(int field, const std::string &s) {
  if (s.empty()) Fail(field, "has an empty value");
  if (s.size() > 4) Fail(field, "value \"" + s + "\" is out of range");
  int v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c)))
      Fail(field, "has an invalid value \"" + s + "\"");
    v = v * 10 + (c - '0');
  }
  const FieldSpec &f = kFields[field];
  if (v < f.min || v > f.max)
    Fail(field, "value " + std::to_string(v) + " is out of range " + std::to_string(f.min) + "-" +
                    std::to_string(f.max));
  return v;
}

/* Bits for one field; *restricted = false when the field is a bare `*`. */
uint64_t ParseField(int field, const std::string &text, bool *restricted) {
  const FieldSpec &f = kFields[field];
  uint64_t bits = 0;
  *restricted = (text != "*");
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string item =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) Fail(field, "has an empty list item");
    std::string range = item;
    int step = 1;
    const size_t slash = item.find('/');
    if (slash != std::string::npos) {
      range = item.substr(0, slash);
      const std::string step_text = item.substr(slash + 1);
      if (step_text.empty()) Fail(field, "has an empty step");
      for (char c : step_text)
        if (!std::isdigit(static_cast<unsigned char>(c)))
          Fail(field, "has an invalid step \"" + step_text + "\"");
      if (step_text.size() > 4) Fail(field, "step " + step_text + " is out of range");
      step = std::stoi(step_text);
      if (step < 1 || step > f.max) Fail(field, "step " + step_text + " is out of range");
    }
    int lo, hi;
    if (range == "*") {
      lo = f.min;
      hi = f.max;
    } else {
      const size_t dash = range.find('-');
      if (dash == std::string::npos) {
        lo = ParseNumber(field, range);
        hi = (slash != std::string::npos) ? f.max : lo; /* `a/n`: a to the maximum */
      } else {
        lo = ParseNumber(field, range.substr(0, dash));
        hi = ParseNumber(field, range.substr(dash + 1));
        if (lo > hi) Fail(field, "range " + range + " is backwards");
      }
    }
    for (int v = lo; v <= hi; v += step) bits |= (uint64_t{1} << v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return bits;
}

}  // namespace

CronSchedule ParseCron(const std::string &expr) {
  std::vector<std::string> fields;
  size_t i = 0;
  while (i < expr.size()) {
    while (i < expr.size() && std::isspace(static_cast<unsigned char>(expr[i]))) i++;
    if (i >= expr.size()) break;
    size_t j = i;
    while (j < expr.size() && !std::isspace(static_cast<unsigned char>(expr[j]))) j++;
    fields.push_back(expr.substr(i, j - i));
    i = j;
  }
  if (fields.size() != 5)
    throw Error(kInvalidParameterValue,
                "expected 5 fields (minute hour day-of-month month day-of-week), got " +
                    std::to_string(fields.size()));
  CronSchedule s{};
  bool restricted = false;
  s.minutes = ParseField(0, fields[0], &restricted);
  s.hours = static_cast<uint32_t>(ParseField(1, fields[1], &restricted));
  s.days_of_month = static_cast<uint32_t>(ParseField(2, fields[2], &s.dom_restricted));
  s.months = static_cast<uint16_t>(ParseField(3, fields[3], &restricted));
  uint64_t dow = ParseField(4, fields[4], &s.dow_restricted);
  if (dow & (uint64_t{1} << 7)) dow = (dow | 1u) & 0x7Fu; /* 7 is Sunday too */
  s.days_of_week = static_cast<uint8_t>(dow);
  return s;
}

bool CronMatches(const CronSchedule &s, int minute, int hour, int mday, int month, int wday) {
  if (!(s.minutes >> minute & 1) || !(s.hours >> hour & 1) || !(s.months >> month & 1))
    return false;
  const bool dom = s.days_of_month >> mday & 1;
  const bool dow = s.days_of_week >> wday & 1;
  if (s.dom_restricted && s.dow_restricted) return dom || dow;
  return dom && dow;
}

}  // namespace warden

// libFuzzer target for the idle-policy schedule parser and the LIKE matcher
// (extension/src/cron.cpp). Input: "<cron expression>\n<text>\n<pattern>".
//  - ParseCron either throws warden::Error with SQLSTATE 22023 or returns a
//    schedule whose bits all lie in their field's range; CronMatches is then
//    called on every hour/minute of one day and on the days of a year.
//  - LikeMatch is compared with a plain recursive reference matcher.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "pg_warden/cron.hpp"

namespace {

/* Reference semantics of LikeMatch: % any sequence, _ one byte, backslash
   escapes the next byte (a trailing backslash is a literal backslash). */
bool RefLike(const char *t, const char *p, int depth = 0) {
  if (*p == '\0') return *t == '\0';
  if (*p == '%') {
    while (*p == '%') p++;
    if (*p == '\0') return true;
    for (const char *s = t;; s++) {
      if (RefLike(s, p, depth + 1)) return true;
      if (*s == '\0') return false;
    }
  }
  if (*t == '\0') return false;
  if (*p == '\\' && p[1] != '\0') return p[1] == *t && RefLike(t + 1, p + 2, depth + 1);
  if (*p == '_' || *p == *t) return RefLike(t + 1, p + 1, depth + 1);
  return false;
}

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string in(reinterpret_cast<const char *>(data), size);
  const size_t nl1 = in.find('\n');
  const std::string expr = in.substr(0, nl1);
  std::string text, pattern;
  if (nl1 != std::string::npos) {
    const size_t nl2 = in.find('\n', nl1 + 1);
    text = in.substr(nl1 + 1, nl2 == std::string::npos ? std::string::npos : nl2 - nl1 - 1);
    if (nl2 != std::string::npos) pattern = in.substr(nl2 + 1);
  }

  try {
    const warden::CronSchedule s = warden::ParseCron(expr);
    Check(s.minutes != 0 && (s.minutes >> 60) == 0);
    Check(s.hours != 0 && (s.hours >> 24) == 0);
    Check(s.days_of_month != 0 && (s.days_of_month & 1u) == 0);
    Check(s.months != 0 && (s.months & 1u) == 0 && (s.months >> 13) == 0);
    Check(s.days_of_week != 0 && (s.days_of_week >> 7) == 0);
    for (int h = 0; h < 24; h++)
      for (int m = 0; m < 60; m++) (void)warden::CronMatches(s, m, h, 1, 1, 0);
    for (int mon = 1; mon <= 12; mon++)
      for (int d = 1; d <= 31; d++) (void)warden::CronMatches(s, 0, 0, d, mon, (d + mon) % 7);
  } catch (const warden::Error &e) {
    Check(e.sqlstate() == warden::kInvalidParameterValue);
    Check(e.what()[0] != '\0');
  }

  /* C strings: the matcher sees what a NUL-terminated name would hold. */
  const std::string t = text.substr(0, text.find('\0'));
  const std::string p = pattern.substr(0, pattern.find('\0'));
  if (t.size() <= 64 && p.size() <= 64)
    Check(warden::LikeMatch(t.c_str(), p.c_str()) == RefLike(t.c_str(), p.c_str()));
  else
    (void)warden::LikeMatch(t.c_str(), p.c_str());
  return 0;
}

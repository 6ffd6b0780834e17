// libFuzzer target for the idle-policy schedule parser (extension/src/cron.cpp)
// and the key matcher of every rule (extension/src/match.cpp). Input: "<cron
// expression>\n<text>\n<pattern>".
//  - ParseCron either throws warden::Error with SQLSTATE 22023 or returns a
//    schedule whose bits all lie in their field's range; CronMatches is then
//    called on every hour/minute of one day and on the days of a year.
//  - LikeMatch is compared with a reference matcher; KeyMatches with a filter
//    of the pattern alone agrees with LikeMatch.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "pg_warden/cron.hpp"
#include "pg_warden/match.hpp"

namespace {

/* Reference semantics of LikeMatch: % any sequence, _ one byte, backslash
   escapes the next byte (a trailing backslash is a literal backslash).
   Dynamic programming over (text position, pattern position), so that it
   stays polynomial (a plain recursive matcher is exponential on inputs like
   "%_%__%%_%_%" and made the fuzzer time out). */
bool RefLike(const std::string &t, const std::string &p) {
  /* tokens: kind 0 = literal byte, 1 = '_', 2 = '%' */
  std::vector<std::pair<int, char>> tok;
  for (size_t i = 0; i < p.size(); i++) {
    if (p[i] == '%')
      tok.push_back({2, 0});
    else if (p[i] == '_')
      tok.push_back({1, 0});
    else if (p[i] == '\\' && i + 1 < p.size())
      tok.push_back({0, p[++i]});
    else
      tok.push_back({0, p[i]});
  }
  const size_t n = t.size(), m = tok.size();
  /* ok[i][j]: t[i..] matches tok[j..] */
  std::vector<std::vector<char>> ok(n + 1, std::vector<char>(m + 1, 0));
  ok[n][m] = 1;
  for (size_t j = m; j-- > 0;) ok[n][j] = tok[j].first == 2 && ok[n][j + 1];
  for (size_t i = n; i-- > 0;)
    for (size_t j = m; j-- > 0;) {
      if (tok[j].first == 2)
        ok[i][j] = ok[i][j + 1] || ok[i + 1][j];
      else
        ok[i][j] = (tok[j].first == 1 || tok[j].second == t[i]) && ok[i + 1][j + 1];
    }
  return ok[0][0];
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
  const bool like = warden::LikeMatch(t.c_str(), p.c_str());
  if (t.size() <= 64 && p.size() <= 64) Check(like == RefLike(t, p));
  const warden::KeyFilter app_only{nullptr, nullptr, p.c_str()};
  Check(warden::KeyMatches(app_only, "db", "role", t.c_str()) == like);
  const warden::KeyFilter exact{t.c_str(), t.c_str(), nullptr};
  Check(warden::KeyMatches(exact, t.c_str(), t.c_str(), p.c_str()));
  Check(warden::IsPrintableAscii(t.c_str()) ==
        (t.find_first_not_of(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                             "abcdefghijklmnopqrstuvwxyz{|}~") == std::string::npos));
  return 0;
}

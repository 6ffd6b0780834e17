// Unit tests of the one key matcher of budgets, overrides and idle policies
// (extension/src/match.cpp; no server needed).
#include <gtest/gtest.h>

#include <string>

#include "pg_warden/match.hpp"

using warden::IsPrintableAscii;
using warden::KeyFilter;
using warden::KeyMatches;
using warden::LikeMatch;

TEST(LikeMatch, Patterns) {
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

TEST(KeyMatches, OpenPartsMatchAnything) {
  const KeyFilter any{nullptr, nullptr, nullptr};
  EXPECT_TRUE(KeyMatches(any, "db", "alice", "app"));
  EXPECT_TRUE(KeyMatches(any, "", "", ""));
}

TEST(KeyMatches, DatabaseAndRoleByEquality) {
  const KeyFilter f{"shop", "alice", nullptr};
  EXPECT_TRUE(KeyMatches(f, "shop", "alice", "anything"));
  EXPECT_FALSE(KeyMatches(f, "shop2", "alice", "anything"));
  EXPECT_FALSE(KeyMatches(f, "shop", "Alice", "anything"));
  // no pattern semantics for role and database: '%' and '_' are literal there
  const KeyFilter literal{"sh_p", "a%", nullptr};
  EXPECT_FALSE(KeyMatches(literal, "shop", "alice", "x"));
  EXPECT_TRUE(KeyMatches(literal, "sh_p", "a%", "x"));
}

TEST(KeyMatches, ApplicationByLike) {
  const KeyFilter f{nullptr, nullptr, "worker-%"};
  EXPECT_TRUE(KeyMatches(f, "db", "r", "worker-1"));
  EXPECT_FALSE(KeyMatches(f, "db", "r", "reports"));
  const KeyFilter all{"db", "r", "w\\_%"};
  EXPECT_TRUE(KeyMatches(all, "db", "r", "w_1"));
  EXPECT_FALSE(KeyMatches(all, "db", "r", "wx1"));
  EXPECT_FALSE(KeyMatches(all, "db", "other", "w_1"));
}

TEST(IsPrintableAscii, Bounds) {
  EXPECT_TRUE(IsPrintableAscii(""));
  EXPECT_TRUE(IsPrintableAscii(" ~abc%_\\"));
  EXPECT_FALSE(IsPrintableAscii("tab\there"));
  EXPECT_FALSE(IsPrintableAscii("del\x7f"));
  EXPECT_FALSE(IsPrintableAscii("caf\xc3\xa9"));
}

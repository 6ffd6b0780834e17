// Bad input found by the fault and fuzz tests: NUL characters in strings and
// role names longer than PostgreSQL keeps. Odd but valid role names pass as they are.
#include <gtest/gtest.h>

#include <string>

#include "wardend/config.hpp"

using namespace wardend;

namespace {

std::string WithRole(const std::string& role_toml) {
  return "[[server]]\nname = \"p\"\ndsn = \"host=/tmp\"\n[[role]]\nname = " + role_toml +
         "\nmax_connections = 1\n";
}

std::string ErrorOf(const std::string& text) {
  try {
    ParseConfig(text, "w.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ConfigBadInput, NulInAStringIsRefused) {
  EXPECT_EQ(ErrorOf(WithRole("\"bad\\u0000role\"")),
            "w.toml:5: key 'role[0].name': must not contain a NUL character (\\u0000)");
  EXPECT_EQ(ErrorOf("[daemon]\nstate_file = \"/tmp/a\\u0000b\"\n" + WithRole("\"r\"")),
            "w.toml:2: key 'daemon.state_file': must not contain a NUL character (\\u0000)");
  EXPECT_NE(ErrorOf("[[server]]\nname = \"p\"\ndsn = \"host=/tmp\\u0000x\"\n")
                .find("key 'server[0].dsn'"),
            std::string::npos);
}

TEST(ConfigBadInput, RoleLongerThan63BytesIsRefused) {
  EXPECT_EQ(ErrorOf(WithRole("\"" + std::string(64, 'r') + "\"")),
            "w.toml:5: key 'role[0].name': must be at most 63 bytes");
  // 63 bytes is fine; so is a multi-byte name within 63 bytes.
  EXPECT_EQ(ErrorOf(WithRole("\"" + std::string(63, 'r') + "\"")), "");
  EXPECT_EQ(ErrorOf(WithRole("\"r\u00f4le-\u00fcn\u00efcode\"")), "");
}

TEST(ConfigBadInput, QuotesAndSemicolonsInRoleNamesAreKeptVerbatim) {
  Config c = ParseConfig(WithRole(R"("app\"k9; x")"), "w.toml");
  ASSERT_EQ(c.role_limits.size(), 1u);
  EXPECT_EQ(c.role_limits[0].role, "app\"k9; x");
  c = ParseConfig(WithRole(R"('x; DROP ROLE postgres; --')"), "w.toml");
  EXPECT_EQ(c.role_limits[0].role, "x; DROP ROLE postgres; --");
}

/*
 * error.hpp — warden::Error, the C++-regime error with a SQLSTATE. Free of
 * PostgreSQL headers so that pure C++ code (the cron parser) and its unit
 * tests can throw and catch it without a server.
 */
#pragma once

#include <exception>
#include <string>
#include <utility>

namespace warden {

/* A SQLSTATE as PostgreSQL encodes it (MAKE_SQLSTATE), from its 5 characters. */
constexpr int SqlState(const char (&s)[6]) {
  return ((s[0] - '0') & 0x3F) + (((s[1] - '0') & 0x3F) << 6) + (((s[2] - '0') & 0x3F) << 12) +
         (((s[3] - '0') & 0x3F) << 18) + (((s[4] - '0') & 0x3F) << 24);
}
constexpr int kInvalidParameterValue = SqlState("22023");

/* A C++-regime error with a SQLSTATE (built with MAKE_SQLSTATE or SqlState). */
class Error : public std::exception {
 public:
  Error(int sqlstate, std::string message, std::string detail = {}, std::string hint = {})
      : sqlstate_(sqlstate),
        message_(std::move(message)),
        detail_(std::move(detail)),
        hint_(std::move(hint)) {}
  const char *what() const noexcept override { return message_.c_str(); }
  int sqlstate() const noexcept { return sqlstate_; }
  const std::string &detail() const noexcept { return detail_; }
  const std::string &hint() const noexcept { return hint_; }

 private:
  int sqlstate_;
  std::string message_, detail_, hint_;
};

}  // namespace warden

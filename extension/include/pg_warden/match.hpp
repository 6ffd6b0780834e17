/*
 * match.hpp — which sessions a rule names: the one matcher of budgets,
 * admission overrides, idle policies and terminate_idle. Pure C++ (no
 * PostgreSQL headers): unit-tested without a server (tests/unit/test_match.cpp)
 * and fuzzed (tests/fuzz/fuzz_cron.cpp).
 *
 * A key is (database, role, application_name). A filter names each part or
 * leaves it open (nullptr): database and role by equality, the application
 * by a LIKE pattern.
 */
#pragma once

#include "pg_warden/cpp_only.hpp"

namespace warden {

/*
 * SQL LIKE on bytes: `%` any sequence, `_` one byte, backslash escapes the
 * next character. Case-sensitive, like PostgreSQL's LIKE in the C locale.
 * Iterative, O(len(text) * len(pattern)): it runs on the login path.
 */
bool LikeMatch(const char *text, const char *pattern);

/* What a rule matches; nullptr = any. */
struct KeyFilter {
  const char *database;
  const char *role;
  const char *application; /* LIKE pattern */
};

bool KeyMatches(const KeyFilter &filter, const char *database, const char *role,
                const char *application);

/*
 * Printable ASCII only (0x20-0x7E)? PostgreSQL keeps only those in
 * application_name (any other byte becomes '?'), so a pattern with other
 * bytes could never match.
 */
bool IsPrintableAscii(const char *text);

}  // namespace warden

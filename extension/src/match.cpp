/*
 * match.cpp — the key matcher of every rule (see match.hpp). Pure C++, no
 * PostgreSQL headers, no locks.
 */
#include "pg_warden/match.hpp"

#include <cstring>

namespace warden {

bool LikeMatch(const char *t, const char *p) {
  /* Backtracks only to the last '%': no recursion, polynomial time. */
  const char *star_p = nullptr;
  const char *star_t = nullptr;
  while (*t) {
    if (*p == '%') {
      while (*p == '%') p++;
      if (*p == '\0') return true;
      star_p = p;
      star_t = t;
      continue;
    }
    if (*p == '\\' && p[1] != '\0') {
      if (p[1] == *t) {
        p += 2;
        t++;
        continue;
      }
    } else if (*p != '\0' && (*p == '_' || *p == *t)) {
      p++;
      t++;
      continue;
    }
    if (star_p == nullptr) return false;
    p = star_p;
    t = ++star_t;
  }
  while (*p == '%') p++;
  return *p == '\0';
}

bool KeyMatches(const KeyFilter &f, const char *database, const char *role,
                const char *application) {
  if (f.database != nullptr && std::strcmp(f.database, database) != 0) return false;
  if (f.role != nullptr && std::strcmp(f.role, role) != 0) return false;
  if (f.application != nullptr && !LikeMatch(application, f.application)) return false;
  return true;
}

bool IsPrintableAscii(const char *s) {
  for (; *s; s++)
    if (static_cast<unsigned char>(*s) < 0x20 || static_cast<unsigned char>(*s) > 0x7E)
      return false;
  return true;
}

}  // namespace warden

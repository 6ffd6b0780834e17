/*
 * idle_select.cpp — the selection rule of idle policies (see idle_select.hpp).
 * Pure C++, no allocation, no exceptions.
 */
#include "pg_warden/idle_select.hpp"

#include <algorithm>

namespace warden {

int SelectIdleVictims(IdleCandidate *c, int n, int32_t keep_min, int64_t timeout, int64_t now,
                      int64_t *deadline) noexcept {
  if (n <= 0) return 0;
  /* group ascending, then most recently idle first */
  std::sort(c, c + n, [](const IdleCandidate &a, const IdleCandidate &b) {
    if (a.group != b.group) return a.group < b.group;
    if (a.idle_since != b.idle_since) return a.idle_since > b.idle_since;
    return a.index < b.index;
  });
  int victims = 0;
  int rank = 0;
  for (int i = 0; i < n; i++) {
    rank = (i > 0 && c[i].group == c[i - 1].group) ? rank + 1 : 0;
    if (rank < keep_min) continue;
    const int64_t due = c[i].idle_since + timeout;
    if (now >= due)
      c[victims++] = c[i]; /* victims <= i: only overwrites visited slots */
    else if (*deadline == 0 || due < *deadline)
      *deadline = due;
  }
  std::sort(c, c + victims, [](const IdleCandidate &a, const IdleCandidate &b) {
    if (a.idle_since != b.idle_since) return a.idle_since < b.idle_since;
    return a.index < b.index;
  });
  return victims;
}

}  // namespace warden

// The two clocks wardend reads: monotonic seconds for intervals, deadlines
// and backoff; wall-clock seconds (Unix time) for what is shown or journaled.
// No state, no locks.
#pragma once

#include <chrono>

namespace wardend {

inline double Mono() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double Wall() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace wardend

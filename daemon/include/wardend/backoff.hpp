// Reconnection delays: capped exponential backoff with decorrelated jitter
// (next = min(cap, random(base, 3 * previous))), as pure arithmetic.
#pragma once

#include <algorithm>

namespace wardend {

// `uniform01` is a random number in [0, 1); `prev_ms` is 0 before the first failure.
inline double NextBackoffMs(double prev_ms, double base_ms, double cap_ms, double uniform01) {
  double hi = std::max(base_ms, prev_ms * 3);
  double next = base_ms + (hi - base_ms) * uniform01;
  return std::min(cap_ms, std::max(base_ms, next));
}

}  // namespace wardend

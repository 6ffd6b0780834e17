// libFuzzer target for the daemon's duration parser (daemon/src/duration.cpp).
// Input: any bytes, parsed as a configuration duration ("200ms", "1.5s", "10min").
//  - ParseDuration returns nullopt or a duration in [0, 1e12 ms];
//  - a parsed duration printed by FormatDuration parses back to the same value;
//  - the input is accepted only if it is digits/dots followed by a known unit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "wardend/duration.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto d = wardend::ParseDuration(text);
  if (!d) return 0;
  long long ms = d->count();
  if (ms < 0 || ms > 1'000'000'000'000LL) std::abort();
  auto again = wardend::ParseDuration(wardend::FormatDuration(*d));
  if (!again || *again != *d) std::abort();
  size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
  std::string_view unit = text.substr(i);
  if (unit != "ms" && unit != "s" && unit != "m" && unit != "min" && unit != "h") std::abort();
  return 0;
}

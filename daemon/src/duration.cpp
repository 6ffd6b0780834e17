// Parsing and printing of configuration durations. Pure: no locks.
#include "wardend/duration.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>

namespace wardend {

std::optional<Millis> ParseDuration(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0 || i == text.size()) return std::nullopt;
  std::string number(text.substr(0, i));
  if (number.front() == '.' || number.back() == '.' || number.find('.') != number.rfind('.'))
    return std::nullopt;
  std::string_view unit = text.substr(i);
  double factor;
  if (unit == "ms")
    factor = 1;
  else if (unit == "s")
    factor = 1000;
  else if (unit == "m" || unit == "min")
    factor = 60'000;
  else if (unit == "h")
    factor = 3'600'000;
  else
    return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(v)) return std::nullopt;
  double ms = v * factor;
  if (ms > 1e12) return std::nullopt;  // ~31 years: a typo, not a duration
  return Millis(static_cast<long long>(std::llround(ms)));
}

std::string FormatDuration(Millis d) {
  long long ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace wardend

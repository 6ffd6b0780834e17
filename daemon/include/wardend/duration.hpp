// Durations as written in the configuration: "200ms", "30s", "10m", "1h".
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace wardend {

using Millis = std::chrono::milliseconds;

// Parses "<number><unit>" with unit ms, s, m (or min), h; the number may have
// a fraction ("1.5s"). Returns nullopt for anything else, including a bare
// number (a duration without a unit is ambiguous) and negative values.
std::optional<Millis> ParseDuration(std::string_view text);

// "1.5s", "200ms", "10m" — the shortest exact spelling, for logs and docs.
std::string FormatDuration(Millis d);

}  // namespace wardend

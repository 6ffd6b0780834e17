// Logging setup: spdlog to stderr, plain lines or JSON lines. One event is
// one line (newlines in messages, e.g. libpq's multi-line errors, are
// escaped), and a message repeated within a minute is summarised.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "wardend/config.hpp"

namespace wardend {

void SetupLogging(LogFormat format, const std::string& level);

// "a\nb" -> "a\\nb" (also \r and other control characters as \xNN): one line.
std::string OneLine(const std::string& text);

// Repeated-message summary (pure; the sink calls it under its own mutex).
// A message is logged the first time; the same text again within `window`
// seconds of its last logging is counted, not logged. Once the window has
// passed, a summary "... (repeated N more time(s) in the last Xs)" is emitted
// with the next line logged; a changed text is another message, logged at
// once. Bounded
// (`max_keys` distinct messages are tracked; older ones are flushed).
class RepeatFilter {
 public:
  explicit RepeatFilter(double window = 60, size_t max_keys = 256)
      : window_(window), max_keys_(max_keys) {}
  // The lines to write for `text` arriving at `now`: summaries first, then
  // `text` itself unless it is suppressed.
  std::vector<std::string> Feed(const std::string& text, double now);

 private:
  struct Entry {
    double logged_at = 0;
    long suppressed = 0;
  };
  static std::string Summary(const std::string& text, const Entry& e, double now);
  double window_;
  size_t max_keys_;
  std::map<std::string, Entry> seen_;
};

}  // namespace wardend

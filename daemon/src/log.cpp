// spdlog sinks for wardend: plain text or one JSON object per line on
// stderr, both through the repeat filter (see log.hpp). Lock: the sink's own
// mutex (spdlog's base_sink), a leaf.
#include "wardend/log.hpp"

#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>

namespace wardend {

std::string OneLine(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += ' ';
    else if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

std::string RepeatFilter::Summary(const std::string& text, const Entry& e, double now) {
  return fmt::format("{} (repeated {} more time(s) in the last {:.0f}s)", text, e.suppressed,
                     now - e.logged_at);
}

std::vector<std::string> RepeatFilter::Feed(const std::string& text, double now) {
  std::vector<std::string> out;
  // Summaries due: other messages whose window has passed.
  for (auto it = seen_.begin(); it != seen_.end();) {
    if (it->first != text && now - it->second.logged_at >= window_) {
      if (it->second.suppressed > 0) out.push_back(Summary(it->first, it->second, now));
      it = seen_.erase(it);
    } else {
      ++it;
    }
  }
  auto it = seen_.find(text);
  if (it != seen_.end()) {
    if (now - it->second.logged_at < window_) {
      it->second.suppressed++;
      return out;
    }
    // Again after the window: the summary of the window, then a fresh start.
    if (it->second.suppressed > 0) {
      out.push_back(Summary(text, it->second, now));
      it->second = Entry{now, 0};
      return out;
    }
    it->second = Entry{now, 0};
    out.push_back(text);
    return out;
  }
  while (seen_.size() >= max_keys_) {
    auto oldest = seen_.begin();
    for (auto j = seen_.begin(); j != seen_.end(); ++j)
      if (j->second.logged_at < oldest->second.logged_at) oldest = j;
    if (oldest->second.suppressed > 0) out.push_back(Summary(oldest->first, oldest->second, now));
    seen_.erase(oldest);
  }
  seen_[text] = Entry{now, 0};
  out.push_back(text);
  return out;
}

namespace {

class Sink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit Sink(LogFormat format) : format_(format) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    using namespace std::chrono;
    double now = duration<double>(msg.time.time_since_epoch()).count();
    std::string text = OneLine(std::string(msg.payload.data(), msg.payload.size()));
    for (const std::string& line : repeats_.Feed(text, now)) Write(msg, line);
  }
  void flush_() override { std::fflush(stderr); }

 private:
  void Write(const spdlog::details::log_msg& msg, const std::string& text) {
    std::string line;
    if (format_ == LogFormat::kJson) {
      using namespace std::chrono;
      double ts = duration<double>(msg.time.time_since_epoch()).count();
      auto secs = system_clock::to_time_t(msg.time);
      std::tm tm{};
      gmtime_r(&secs, &tm);
      char buf[40];
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
      int ms = static_cast<int>((ts - static_cast<double>(secs)) * 1000);
      char stamp[64];
      std::snprintf(stamp, sizeof stamp, "%s.%03dZ", buf, ms < 0 ? 0 : ms);
      auto level = spdlog::level::to_string_view(msg.level);
      nlohmann::json j = {
          {"time", stamp}, {"level", std::string(level.data(), level.size())}, {"msg", text}};
      line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    } else {
      spdlog::details::log_msg copy(msg.time, msg.source, msg.logger_name, msg.level, text);
      spdlog::memory_buf_t buf;
      formatter_->format(copy, buf);
      line.assign(buf.data(), buf.size());
    }
    std::fwrite(line.data(), 1, line.size(), stderr);
  }

  LogFormat format_;
  RepeatFilter repeats_;
};

}  // namespace

void SetupLogging(LogFormat format, const std::string& level) {
  auto sink = std::make_shared<Sink>(format);
  auto logger = std::make_shared<spdlog::logger>("wardend", sink);
  if (format == LogFormat::kPlain) logger->set_pattern("%Y-%m-%d %H:%M:%S.%e [%l] %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace wardend

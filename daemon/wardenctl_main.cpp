// wardenctl: the command-line companion of wardend. See docs/daemon.md.
//   wardenctl status [--config FILE | --state-file FILE] [--json]
//   wardenctl top    [--config FILE | --state-file FILE] [--interval 1s] [--count N]
//   wardenctl check-config FILE
//   wardenctl plan FILE [--json]
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "wardend/config.hpp"
#include "wardend/plan.hpp"
#include "wardend/status_shm.hpp"

using namespace wardend;

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Ago(double t) {
  if (t <= 0) return "never";
  double d = Now() - t;
  if (d < 0) d = 0;
  if (d < 120) return fmt::format("{:.1f}s ago", d);
  if (d < 7200) return fmt::format("{:.0f}m ago", d / 60);
  return fmt::format("{:.1f}h ago", d / 3600);
}

std::string Clip(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(0, n - 1) + "~";
}

// The segment name from --state-file, or from the state_file of --config.
std::string SegmentFor(const std::string& config, const std::string& state_file, int* rc) {
  if (!state_file.empty()) return SegmentName(state_file);
  try {
    return SegmentName(LoadConfig(config).daemon.state_file);
  } catch (const ConfigError& e) {
    std::cerr << "wardenctl: " << e.what() << "\n";
    *rc = 2;
    return "";
  }
}

nlohmann::json StatusJson(const StatusCopy& s) {
  nlohmann::json servers = nlohmann::json::array();
  for (const auto& x : s.servers) {
    nlohmann::json apps = nlohmann::json::array();
    for (int i = 0; i < x.napps && i < kShmApps; ++i) {
      apps.push_back({{"database", x.apps[i].database},
                      {"role", x.apps[i].role},
                      {"application_name", x.apps[i].application},
                      {"connections", x.apps[i].connections},
                      {"active", x.apps[i].active},
                      {"idle", x.apps[i].idle},
                      {"idle_in_transaction", x.apps[i].idle_in_transaction},
                      {"longest_idle_seconds", x.apps[i].longest_idle_seconds}});
      apps.back()["longest_idle_in_transaction_seconds"] =
          x.apps[i].longest_idle_in_transaction_seconds;
    }
    nlohmann::json closed = nlohmann::json::array();
    for (int i = 0; i < x.nclosed && i < kShmClosed; ++i)
      closed.push_back({{"role", x.closed[i].role}, {"limit", x.closed[i].limit}});
    nlohmann::json alerts = nlohmann::json::array();
    for (int i = 0; i < x.nalerts && i < kShmAlerts; ++i)
      alerts.push_back({{"alert", x.alert_list[i].key},
                        {"severity", x.alert_list[i].severity},
                        {"message", x.alert_list[i].message}});
    servers.push_back(
        {{"name", x.name},
         {"reachable", x.last_poll_ok != 0},
         {"mode", x.mode},
         {"role", x.in_recovery ? "standby" : "primary"},
         {"patroni_role",
          x.patroni_role[0] ? nlohmann::json(x.patroni_role) : nlohmann::json(nullptr)},
         {"lag_bytes", x.lag_bytes >= 0 ? nlohmann::json(x.lag_bytes) : nlohmann::json(nullptr)},
         {"connections", x.connections},
         {"max_connections", x.max_connections},
         {"usage_percent", x.usage_percent},
         {"active", x.active},
         {"idle", x.idle},
         {"idle_in_transaction", x.idle_in_transaction},
         {"longest_idle_in_transaction_seconds", x.longest_idle_in_transaction_seconds},
         {"last_poll", x.last_ok_unix},
         {"error", x.error},
         {"admission_closed", x.admission_closed},
         {"emergencies_active", x.emergencies_active},
         {"alerts", x.alerts},
         {"closed_roles", closed},
         {"alert_list", alerts},
         {"actions_total", x.actions_total},
         {"applications", apps}});
  }
  nlohmann::json actions = nlohmann::json::array();
  for (const auto& a : s.actions)
    actions.push_back({{"at", a.at}, {"server", a.server}, {"action", a.text}});
  return {{"pid", s.pid},
          {"started", s.started},
          {"updated", s.updated},
          {"dry_run", s.dry_run},
          {"config", s.config_path},
          {"servers", servers},
          {"recent_actions", actions}};
}

void PrintStatus(const StatusCopy& s) {
  std::cout << fmt::format("wardend pid {}, up {}, status updated {}{}\n", s.pid,
                           Ago(s.started).substr(0, Ago(s.started).size() - 4), Ago(s.updated),
                           s.dry_run ? " (DRY RUN)" : "");
  std::cout << fmt::format("config {}\n\n", s.config_path);
  std::cout << fmt::format("{:<16} {:<8} {:<9} {:>11} {:>6} {:>6} {:>5} {:>4} {:<12}\n", "server",
                           "state", "mode", "conns/max", "usage", "active", "idle", "iit",
                           "last poll");
  for (const auto& x : s.servers) {
    std::string state = !x.last_poll_ok ? "DOWN" : x.in_recovery ? "standby" : "primary";
    std::cout << fmt::format(
        "{:<16} {:<8} {:<9} {:>11} {:>5.1f}% {:>6} {:>5} {:>4} {:<12}\n", Clip(x.name, 16), state,
        x.mode, fmt::format("{}/{}", x.connections, x.max_connections), x.usage_percent, x.active,
        x.idle, x.idle_in_transaction, Ago(x.last_ok_unix));
    if (!x.last_poll_ok && x.error[0]) std::cout << "  error: " << x.error << "\n";
    if (x.last_poll_ok && x.idle_in_transaction > 0)
      std::cout << fmt::format("  longest idle in transaction: {:.1f}s\n",
                               x.longest_idle_in_transaction_seconds);
    if (x.patroni_role[0])
      std::cout << fmt::format("  patroni: {}{}\n", x.patroni_role,
                               x.lag_bytes >= 0 ? fmt::format(", lag {} bytes", x.lag_bytes) : "");
    if (x.admission_closed || x.emergencies_active || x.alerts)
      std::cout << fmt::format(
          "  admission closed for {} role(s), {} emergency step(s), {} alert(s)\n",
          x.admission_closed, x.emergencies_active, x.alerts);
    for (int i = 0; i < x.nclosed && i < kShmClosed; ++i)
      std::cout << fmt::format("  admission closed: role {} at {} connection(s)\n",
                               x.closed[i].role, x.closed[i].limit);
    if (x.admission_closed > x.nclosed)
      std::cout << fmt::format("  ... and {} more role(s) (see /health)\n",
                               x.admission_closed - x.nclosed);
    for (int i = 0; i < x.nalerts && i < kShmAlerts; ++i)
      std::cout << fmt::format("  alert {} ({}): {}\n", x.alert_list[i].key,
                               x.alert_list[i].severity, x.alert_list[i].message);
    if (x.alerts > x.nalerts)
      std::cout << fmt::format("  ... and {} more alert(s) (see /alerts)\n", x.alerts - x.nalerts);
  }
  if (!s.actions.empty()) {
    std::cout << "\nrecent actions:\n";
    size_t from = s.actions.size() > 10 ? s.actions.size() - 10 : 0;
    for (size_t i = from; i < s.actions.size(); ++i) {
      std::time_t t = static_cast<std::time_t>(s.actions[i].at);
      std::tm tm{};
      localtime_r(&t, &tm);
      char b[16];
      std::strftime(b, sizeof b, "%H:%M:%S", &tm);
      // In full: the reason is what the operator needs (no cut at a width).
      std::cout << fmt::format("  {} {:<10} {}\n", b, Clip(s.actions[i].server, 10),
                               s.actions[i].text);
    }
  }
}

// One screen of `top`, at most `width` columns.
std::string TopScreen(const StatusCopy& s, int width, int height) {
  std::ostringstream o;
  o << Clip(fmt::format("wardenctl top - wardend pid {}{} - updated {}", s.pid,
                        s.dry_run ? " DRY RUN" : "", Ago(s.updated)),
            static_cast<size_t>(width))
    << "\n";
  int lines = 1;
  for (const auto& x : s.servers) {
    std::string head =
        !x.last_poll_ok ? fmt::format("{}: DOWN {}", x.name, x.error)
                        : fmt::format("{} ({}, {}): {}/{} conns {:.1f}%  active {} idle {} iit {}",
                                      x.name, x.in_recovery ? "standby" : "primary", x.mode,
                                      x.connections, x.max_connections, x.usage_percent, x.active,
                                      x.idle, x.idle_in_transaction);
    if (x.last_poll_ok && x.idle_in_transaction > 0)
      head += fmt::format(" ({:.0f}s)", x.longest_idle_in_transaction_seconds);
    o << "\n" << Clip(head, static_cast<size_t>(width)) << "\n";
    // "idle s": the longest idle; "iit s": the longest idle in a transaction
    // (the one that holds locks and a snapshot).
    o << fmt::format("{:<12} {:<10} {:<16} {:>5} {:>6} {:>5} {:>4} {:>7} {:>7}\n", "database",
                     "role", "application", "conns", "active", "idle", "iit", "idle s", "iit s");
    lines += 3;
    for (int i = 0; i < x.napps && lines < height - 1; ++i, ++lines) {
      const ShmApp& a = x.apps[i];
      o << fmt::format("{:<12} {:<10} {:<16} {:>5} {:>6} {:>5} {:>4} {:>7.0f} {:>7.0f}\n",
                       Clip(a.database, 12), Clip(a.role, 10), Clip(a.application, 16),
                       a.connections, a.active, a.idle, a.idle_in_transaction,
                       a.longest_idle_seconds, a.longest_idle_in_transaction_seconds);
    }
  }
  return o.str();
}

int Top(const std::string& segment, double interval, int count) {
  bool tty = isatty(STDOUT_FILENO);
  struct termios old {};
  bool raw = tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
  if (raw) {
    struct termios t = old;
    t.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
    tcsetattr(STDIN_FILENO, TCSANOW, &t);
  }
  int rc = 0;
  for (int n = 0; count <= 0 || n < count; ++n) {
    int width = 80, height = 24;
    struct winsize ws {};
    if (tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
      width = ws.ws_col;
      height = ws.ws_row;
    }
    std::string err;
    auto s = ReadStatusSegment(segment, &err);
    std::string screen = s ? TopScreen(*s, width, height) : "wardenctl top: " + err + "\n";
    if (tty) std::cout << "\x1b[H\x1b[2J";
    std::cout << screen << (tty ? "(q to quit)" : "") << std::flush;
    if (!tty) std::cout << "\n";
    if (!s) rc = 1;
    if (count > 0 && n + 1 >= count) break;
    struct pollfd p {
      STDIN_FILENO, POLLIN, 0
    };
    if (raw && ::poll(&p, 1, static_cast<int>(interval * 1000)) > 0) {
      char c = 0;
      if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) break;
    } else if (!raw) {
      std::this_thread::sleep_for(std::chrono::duration<double>(interval));
    }
  }
  if (raw) tcsetattr(STDIN_FILENO, TCSANOW, &old);
  if (tty) std::cout << "\n";
  return rc;
}

}  // namespace

namespace {

int Main(int argc, char** argv) {
  CLI::App app{"wardenctl: the command-line companion of wardend"};
  app.require_subcommand(1);
  std::string config = "/etc/pg_warden/wardend.toml", state_file, file, interval = "1s";
  bool json = false;
  int count = 0;

  auto* status =
      app.add_subcommand("status", "the running daemon's status (shared memory, no network)");
  status->add_option("-c,--config", config, "wardend's configuration (to find its state_file)");
  status->add_option("--state-file", state_file, "wardend's state_file (instead of --config)");
  status->add_flag("--json", json, "JSON output");

  auto* top = app.add_subcommand("top", "a live per-application view (q to quit)");
  top->add_option("-c,--config", config, "wardend's configuration (to find its state_file)");
  top->add_option("--state-file", state_file, "wardend's state_file (instead of --config)");
  top->add_option("-i,--interval", interval, "refresh interval, e.g. 1s");
  top->add_option("-n,--count", count, "number of refreshes, then exit (0: until q)");

  auto* check = app.add_subcommand("check-config", "validate a wardend configuration file");
  check->add_option("file", file, "the file")->required();

  auto* plan = app.add_subcommand("plan", "capacity arithmetic: services x instances x pool size");
  plan->add_option("file", file,
                   "the plan (TOML: max_connections, [[service]] name, instances, pool_size)")
      ->required();
  plan->add_flag("--json", json, "JSON output");

  CLI11_PARSE(app, argc, argv);

  if (check->parsed()) {
    try {
      Config cfg = LoadConfig(file);
      for (const auto& w : cfg.warnings) std::cerr << "wardenctl: warning: " << w << "\n";
      std::cout << fmt::format("{}: ok: {} server(s), {} role limit(s), {} emergency step(s)\n",
                               file, cfg.servers.size(), cfg.role_limits.size(),
                               cfg.emergencies.size());
      return 0;
    } catch (const ConfigError& e) {
      std::cerr << "wardenctl: invalid configuration: " << e.what() << "\n";
      return 2;
    }
  }
  if (plan->parsed()) {
    try {
      std::ifstream in(file);
      if (!in) throw ConfigError(file, 0, "(file)", "cannot read the file");
      std::stringstream ss;
      ss << in.rdbuf();
      PlanInput pin = ParsePlan(ss.str(), file);
      PlanResult r = ComputePlan(pin);
      if (json) {
        nlohmann::json services = nlohmann::json::array();
        for (const auto& s : r.services)
          services.push_back({{"name", s.service.name},
                              {"instances", s.service.instances},
                              {"pool_size", s.service.pool_size},
                              {"total", s.total},
                              {"share_percent", s.share_percent},
                              {"exhausts_at_instances", s.exhausts_at_instances},
                              {"spare_instances", s.spare_instances}});
        std::cout << nlohmann::json{{"max_connections", pin.max_connections},
                                    {"reserved", pin.reserved},
                                    {"headroom", pin.headroom},
                                    {"usable", r.usable},
                                    {"total", r.total},
                                    {"headroom_left", r.headroom_left},
                                    {"usage_percent", r.usage_percent},
                                    {"pooler", r.pooler},
                                    {"verdict", r.verdict},
                                    {"services", services}}
                         .dump(2)
                  << "\n";
      } else {
        std::cout << FormatPlan(pin, r);
      }
      return r.pooler == "needed" ? 3 : 0;
    } catch (const ConfigError& e) {
      std::cerr << "wardenctl: invalid plan: " << e.what() << "\n";
      return 2;
    }
  }
  int rc = 0;
  std::string seg = SegmentFor(config, state_file, &rc);
  if (rc) return rc;
  if (status->parsed()) {
    std::string err;
    auto s = ReadStatusSegment(seg, &err);
    if (!s) {
      std::cerr << "wardenctl: " << err << "\n";
      return 1;
    }
    if (kill(s->pid, 0) != 0 && errno == ESRCH) {
      std::cerr << "wardenctl: the status segment belongs to pid " << s->pid
                << ", which is not running\n";
      return 1;
    }
    if (json)
      std::cout << StatusJson(*s).dump(2) << "\n";
    else
      PrintStatus(*s);
    return 0;
  }
  if (top->parsed()) {
    // A bare number is seconds, as for top(1) and watch(1): "5" is 5 s.
    std::optional<Millis> d;
    char* end = nullptr;
    double secs = std::strtod(interval.c_str(), &end);
    if (!interval.empty() && end && *end == '\0' && secs >= 0)
      d = Millis(std::llround(secs * 1000));
    else
      d = ParseDuration(interval);
    if (!d) {
      std::cerr << "wardenctl: invalid --interval \"" << interval
                << "\": a duration like \"500ms\", \"2s\", or a number of seconds\n";
      return 2;
    }
    if (d->count() < 100) {
      std::cerr << "wardenctl: --interval must be at least 100 ms (got \"" << interval
                << "\" = " << d->count() << " ms)\n";
      return 2;
    }
    return Top(seg, d->count() / 1000.0, count);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "wardenctl: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "wardenctl: unexpected error\n";
  }
  return 1;
}

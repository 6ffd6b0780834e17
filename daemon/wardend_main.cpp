// wardend: the pg_warden daemon. See docs/daemon.md.
//   wardend --config /etc/pg_warden/wardend.toml [--dry-run] [--once]
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "wardend/config.hpp"
#include "wardend/daemon.hpp"
#include "wardend/log.hpp"

namespace {

int Main(int argc, char** argv) {
  CLI::App app{
      "wardend: enforces per-role connection limits and the emergency runbook with pg_warden"};
  wardend::Options opts;
  opts.config_path = "/etc/pg_warden/wardend.toml";
  app.add_option("-c,--config", opts.config_path, "configuration file (TOML)");
  app.add_flag("--dry-run", opts.dry_run, "decide and log, change nothing");
  app.add_flag("--once", opts.once, "one poll of every server, act, exit");
  CLI11_PARSE(app, argc, argv);

  wardend::Config cfg;
  try {
    cfg = wardend::LoadConfig(opts.config_path);
  } catch (const wardend::ConfigError& e) {
    std::cerr << "wardend: invalid configuration: " << e.what() << "\n";
    return 2;
  }
  wardend::SetupLogging(cfg.daemon.log_format, cfg.daemon.log_level);
  for (const auto& w : cfg.warnings) spdlog::warn("{}", w);
  wardend::InstallSignalHandlers();
  int rc;
  {
    wardend::Daemon daemon(opts, std::move(cfg));
    rc = daemon.Run();
  }
  spdlog::shutdown();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "wardend: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "wardend: unexpected error\n";
  }
  return 1;
}

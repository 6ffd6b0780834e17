// libFuzzer target for the daemon's configuration loader (daemon/src/config.cpp).
// Input: any bytes, parsed as the TOML text of a wardend configuration.
//  - ParseConfig either returns a configuration or throws ConfigError, whose
//    message names the file and a line ("fuzz.toml:<line>: ..."), never any
//    other exception (toml++, std::out_of_range, ...) and never crashes;
//  - an accepted configuration satisfies what the daemon relies on: at least
//    one server, unique server names and [[role]] names, sane limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "wardend/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  wardend::Config cfg;
  try {
    cfg = wardend::ParseConfig(text, "fuzz.toml");
  } catch (const wardend::ConfigError& e) {
    std::string m = e.what();
    if (m.rfind("fuzz.toml:", 0) != 0) std::abort();
    return 0;
  }
  // Any other exception escapes and libFuzzer reports it as a crash.
  if (cfg.servers.empty()) std::abort();
  std::set<std::string> names, roles;
  for (const auto& s : cfg.servers)
    if (s.name.empty() || !names.insert(s.name).second) std::abort();
  for (const auto& b : cfg.role_limits) {
    if (b.role.empty() || !roles.insert(b.role).second) std::abort();
    if (b.max_connections && *b.max_connections < 0) std::abort();
    if (b.max_idle && *b.max_idle < 0) std::abort();
  }
  if (cfg.daemon.interval.count() < 10) std::abort();
  return 0;
}

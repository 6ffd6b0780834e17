// Capacity arithmetic for `wardenctl plan` (see docs/daemon.md, "wardenctl plan"). No locks.
#include "wardend/plan.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include "wardend/config.hpp"

namespace wardend {

PlanInput ParsePlan(const std::string& text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(path, static_cast<int>(e.source().begin.line), "(syntax)",
                      std::string(e.description()));
  }
  auto line = [](const toml::node* n) { return n ? static_cast<int>(n->source().begin.line) : 1; };
  auto integer = [&](const toml::table& t, const std::string& prefix, const char* key,
                     bool required, long long lo, long long hi, long long dflt) -> long long {
    const toml::node* n = t.get(key);
    if (!n) {
      if (required) throw ConfigError(path, line(&t), prefix + key, "is required");
      return dflt;
    }
    if (!n->is_integer()) throw ConfigError(path, line(n), prefix + key, "must be an integer");
    long long v = *n->value<long long>();
    if (v < lo || v > hi)
      throw ConfigError(path, line(n), prefix + key,
                        fmt::format("must be between {} and {}", lo, hi));
    return v;
  };
  for (auto&& [k, v] : root)
    if (k.str() != "max_connections" && k.str() != "reserved" && k.str() != "headroom" &&
        k.str() != "service")
      throw ConfigError(path, static_cast<int>(k.source().begin.line), std::string(k.str()),
                        "unknown key");
  PlanInput in;
  in.max_connections = static_cast<int>(integer(root, "", "max_connections", true, 1, 262143, 0));
  in.reserved = static_cast<int>(integer(root, "", "reserved", false, 0, 262143, 3));
  in.headroom = static_cast<int>(integer(root, "", "headroom", false, 0, 262143, 0));
  if (in.reserved + in.headroom >= in.max_connections)
    throw ConfigError(
        path, line(root.get("headroom") ? root.get("headroom") : root.get("reserved")),
        root.get("headroom") ? "headroom" : "reserved",
        fmt::format("reserved ({}) + headroom ({}) leave no connection of max_connections ({}) "
                    "for the services",
                    in.reserved, in.headroom, in.max_connections));
  const toml::array* arr = root.get_as<toml::array>("service");
  if (!arr || arr->empty())
    throw ConfigError(path, 1, "service", "at least one [[service]] is required");
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table* t = arr->get(i)->as_table();
    std::string p = fmt::format("service[{}].", i);
    if (!t) throw ConfigError(path, line(arr->get(i)), p, "must be a table: write [[service]]");
    for (auto&& [k, v] : *t)
      if (k.str() != "name" && k.str() != "instances" && k.str() != "pool_size")
        throw ConfigError(path, static_cast<int>(k.source().begin.line), p + std::string(k.str()),
                          "unknown key");
    PlanService s;
    const toml::node* n = t->get("name");
    if (!n || !n->is_string())
      throw ConfigError(path, line(n ? n : t), p + "name", "is required (a string)");
    s.name = *n->value<std::string>();
    for (size_t j = 0; j < in.services.size(); ++j)
      if (in.services[j].name == s.name)
        throw ConfigError(
            path, line(n), p + "name",
            fmt::format("duplicate service name \"{}\" (also service[{}])", s.name, j));
    s.instances = static_cast<int>(integer(*t, p, "instances", true, 0, 1000000, 0));
    s.pool_size = static_cast<int>(integer(*t, p, "pool_size", true, 1, 1000000, 0));
    in.services.push_back(s);
  }
  return in;
}

PlanResult ComputePlan(const PlanInput& in) {
  PlanResult r;
  r.usable = std::max(0, in.max_connections - in.reserved - in.headroom);
  for (const auto& s : in.services) r.total += s.total();
  r.headroom_left = r.usable - r.total;
  r.usage_percent = r.usable > 0 ? 100.0 * static_cast<double>(r.total) / r.usable : 100.0;
  for (const auto& s : in.services) {
    PlanServiceResult x;
    x.service = s;
    x.total = s.total();
    x.share_percent = r.usable > 0 ? 100.0 * static_cast<double>(x.total) / r.usable : 0;
    long long others = r.total - x.total;
    long long room = r.usable - others;  // connections this service may hold
    x.exhausts_at_instances = room < 0 ? 0 : room / s.pool_size + 1;
    x.spare_instances = x.exhausts_at_instances - 1 - s.instances;
    r.services.push_back(x);
  }
  if (r.total > r.usable) {
    r.pooler = "needed";
    r.verdict = fmt::format(
        "over capacity by {} connections: a pooler (pgbouncer, transaction mode) "
        "or smaller pools are needed",
        r.total - r.usable);
  } else if (r.usage_percent >= 80) {
    r.pooler = "advised";
    r.verdict = fmt::format(
        "fits, but at {:.0f}% of the usable connections: little room to scale out; "
        "a pooler is advised",
        r.usage_percent);
  } else {
    r.pooler = "not needed";
    r.verdict = fmt::format("fits with {} connections to spare", r.headroom_left);
  }
  return r;
}

std::string FormatPlan(const PlanInput& in, const PlanResult& r) {
  std::string out;
  out += fmt::format("max_connections {} - reserved {} - headroom {} = {} usable\n\n",
                     in.max_connections, in.reserved, in.headroom, r.usable);
  out += fmt::format("{:<24} {:>9} {:>6} {:>8} {:>7} {:>12}\n", "service", "instances", "pool",
                     "total", "share", "exhausts at");
  for (const auto& s : r.services)
    out += fmt::format("{:<24} {:>9} {:>6} {:>8} {:>6.1f}% {:>12}\n", s.service.name.substr(0, 24),
                       s.service.instances, s.service.pool_size, s.total, s.share_percent,
                       s.exhausts_at_instances);
  out += fmt::format("{:<24} {:>9} {:>6} {:>8} {:>6.1f}%\n\n", "total", "", "", r.total,
                     r.usage_percent);
  out += fmt::format("headroom: {} connections\n", r.headroom_left);
  out += fmt::format("pooler: {}\n", r.pooler);
  out += r.verdict + "\n";
  return out;
}

}  // namespace wardend

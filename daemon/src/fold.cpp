// Folding small applications and roles into "<other>" (see fold.hpp). Pure.
#include "wardend/fold.hpp"

#include <algorithm>
#include <map>
#include <tuple>

namespace wardend {

std::vector<AppUsage> FoldApplications(std::vector<AppUsage> apps, size_t cap) {
  cap = std::max<size_t>(cap, 1);
  std::sort(apps.begin(), apps.end(), [](const AppUsage& x, const AppUsage& y) {
    if (x.connections != y.connections) return x.connections > y.connections;
    return std::tie(x.database, x.role, x.application_name) <
           std::tie(y.database, y.role, y.application_name);
  });
  if (apps.size() <= cap) return apps;
  AppUsage other{"<other>", "<other>", "<other>", 0, 0, 0, 0, 0, 0};
  for (size_t i = cap - 1; i < apps.size(); ++i) {
    other.connections += apps[i].connections;
    other.active += apps[i].active;
    other.idle += apps[i].idle;
    other.idle_in_transaction += apps[i].idle_in_transaction;
    other.longest_idle_seconds = std::max(other.longest_idle_seconds, apps[i].longest_idle_seconds);
    other.longest_idle_in_transaction_seconds = std::max(
        other.longest_idle_in_transaction_seconds, apps[i].longest_idle_in_transaction_seconds);
  }
  apps.resize(cap - 1);
  apps.push_back(other);
  return apps;
}

void LongestIdleInTransactionFromBackends(Snapshot& s) {
  std::map<std::tuple<std::string, std::string, std::string>, double> longest;
  for (const auto& b : s.backends) {
    if (b.state.rfind("idle in transaction", 0) != 0) continue;
    double& m = longest[{b.database, b.role, b.application_name}];
    m = std::max(m, b.state_seconds);
  }
  for (auto& a : s.apps) {
    auto it = longest.find({a.database, a.role, a.application_name});
    a.longest_idle_in_transaction_seconds = it == longest.end() ? 0 : it->second;
  }
}

std::map<std::string, RoleCount> FoldRoles(const std::map<std::string, RoleCount>& roles,
                                           size_t cap,
                                           const std::function<bool(const std::string&)>& keep) {
  std::map<std::string, RoleCount> out;
  for (const auto& [role, rc] : roles) {
    if (out.size() + 1 >= cap && !keep(role)) {
      RoleCount& o = out["<other>"];
      o.connections += rc.connections;
      o.active += rc.active;
      o.idle += rc.idle;
      o.idle_in_transaction += rc.idle_in_transaction;
    } else {
      out[role] = rc;
    }
  }
  return out;
}

}  // namespace wardend

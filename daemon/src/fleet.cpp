// The loop's side of [[cluster]]s (see daemon.hpp, docs/fleet.md): members
// from Patroni's REST API every interval, each a server named
// <cluster>/<member>; the caps of cluster-scoped role limits, summed over the
// members and placed only by the cluster's actor (the wardend beside the
// member that holds Patroni's leader key, or the only one).
//
// Threads: RefreshFleet and Effective run on the main thread; ClusterCaps on
// each member's thread. Locks: fleet_mu_ (the members' pooled counts), the
// StatusBoard's mutex through its calls; never two at once.
#include "wardend/daemon.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "wardend/admission.hpp"
#include "wardend/backoff.hpp"
#include "wardend/clock.hpp"
#include "wardend/patroni.hpp"

namespace wardend {

Config Daemon::Effective(const Config& file) const {
  Config c = file;
  for (const auto& cl : file.clusters) {
    auto it = fleet_.find(cl.name);
    if (it == fleet_.end()) continue;
    for (const auto& m : it->second.members) {
      ServerConfig sc;
      sc.name = cl.name + "/" + m.name;
      sc.dsn = MemberDsn(cl.dsn, m);
      sc.cluster = cl.name;
      sc.member = m.name;
      sc.acts_local = cl.member.empty() || cl.member == m.name;
      c.servers.push_back(std::move(sc));
    }
  }
  return c;
}

void Daemon::RefreshFleet(const Config& file) {
  int timeout_ms = static_cast<int>(
      std::clamp<long long>(static_cast<long long>(file.daemon.interval.count()), 200, 2000));
  for (const auto& cl : file.clusters) {
    PatroniCluster pc;
    try {
      pc = FetchCluster(cl.patroni, timeout_ms);
    } catch (const PatroniError& e) {
      // Keep the last members known: Patroni's API down is not the members gone.
      if (fleet_error_[cl.name] != e.what()) spdlog::warn("[{}] {}", cl.name, e.what());
      fleet_error_[cl.name] = e.what();
      continue;
    }
    if (fleet_error_.erase(cl.name)) spdlog::info("[{}] Patroni answers again", cl.name);
    auto it = fleet_.find(cl.name);
    const PatroniCluster* before = it == fleet_.end() ? nullptr : &it->second;
    for (const auto& m : pc.members) {
      const PatroniMember* was = before ? before->Find(m.name) : nullptr;
      if (!was)
        spdlog::info("[{}/{}] member found: {} {} at {}:{}", cl.name, m.name, m.role, m.state,
                     m.host, m.port);
      else if (was->role != m.role || was->state != m.state)
        spdlog::info("[{}/{}] now {} {} (was {} {})", cl.name, m.name, m.role, m.state, was->role,
                     was->state);
      board_.Member(cl.name + "/" + m.name, cl.name, m.role, m.state, m.lag_bytes);
    }
    if (before)
      for (const auto& m : before->members)
        if (!pc.Find(m.name)) spdlog::info("[{}/{}] member gone from Patroni", cl.name, m.name);
    if (!cl.member.empty() && !pc.Find(cl.member))
      WarnOnceFleet(cl.name, "member \"" + cl.member + "\" is not in Patroni's member list");
    const PatroniMember* leader = pc.RunningLeader();
    // The cluster's actor for cluster-scoped limits: the wardend beside the
    // member holding Patroni's leader key (or the one wardend watching the
    // whole cluster). While no leader runs (the seconds of a switchover) or
    // Patroni is paused, the actor does not change.
    {
      std::lock_guard<std::mutex> g(fleet_mu_);
      FleetShared& f = shared_[cl.name];
      bool actor = leader && !pc.paused ? cl.member.empty() || leader->name == cl.member : f.actor;
      if (f.actor != actor)
        spdlog::info("[{}] {} cluster-scoped limits (leader: {})", cl.name,
                     actor ? "acting on" : "not acting on", leader ? leader->name : "none");
      if (actor && !f.actor) f.actor_since = Mono();
      f.actor = actor;
    }
    fleet_[cl.name] = std::move(pc);
  }
}

void Daemon::ClusterCaps(Slot& s, const Config& cfg, const Snapshot& snap) {
  const double now = Mono();
  const double fresh_for = 3.0 * static_cast<double>(cfg.daemon.interval.count()) / 1000.0 + 1.0;
  const auto roles = snap.Roles();
  std::map<std::string, int> mine;
  for (const auto& lim : cfg.role_limits) {
    if (lim.scope != RoleScope::kCluster || !lim.max_connections) continue;
    auto rc = roles.find(lim.role);
    mine[lim.role] = rc == roles.end() ? 0 : rc->second.connections;
  }
  s.state.cluster_caps.clear();
  if (mine.empty()) return;
  std::lock_guard<std::mutex> g(fleet_mu_);
  FleetShared& f = shared_[s.server.cluster];
  f.counts[s.server.name] = {now, mine};
  for (const auto& lim : cfg.role_limits) {
    if (lim.scope != RoleScope::kCluster || !lim.max_connections) continue;
    if (std::find(snap.exempt_roles.begin(), snap.exempt_roles.end(), lim.role) !=
        snap.exempt_roles.end())
      continue;
    std::map<std::string, int> counts;  // members polled lately -> connections
    int sum = 0;
    for (const auto& [server, tc] : f.counts) {
      if (now - tc.first > fresh_for) continue;
      auto n = tc.second.find(lim.role);
      counts[server] = n == tc.second.end() ? 0 : n->second;
      sum += counts[server];
    }
    ClusterRoleState& rs = f.roles[lim.role];
    const int limit = *lim.max_connections;
    Millis cooldown = lim.cooldown ? *lim.cooldown : cfg.daemon.cooldown;
    // Caps go on at 80% of the limit, sized to sum to the limit: logins that
    // race between two polls then meet a member's cap, not an open door.
    if (sum * 5 >= limit * 4) {
      if (!rs.over)
        spdlog::warn(
            "[{}] role {} near its cluster limit: {} connections over {} member(s), "
            "max_connections {}: capping each member at its share",
            s.server.cluster, lim.role, sum, counts.size(), limit);
      rs.over = true;
      rs.under_since.reset();
      bool same_members =
          rs.caps.size() == counts.size() &&
          std::equal(rs.caps.begin(), rs.caps.end(), counts.begin(),
                     [](const auto& a, const auto& b) { return a.first == b.first; });
      if (!same_members) rs.caps = SplitLimit(limit, counts);
    } else if (rs.over) {
      if (!rs.under_since) rs.under_since = now;
      if (now - *rs.under_since >= static_cast<double>(cooldown.count()) / 1000.0) {
        spdlog::info("[{}] role {} below 80% of its cluster limit for {}: caps lifted",
                     s.server.cluster, lim.role, FormatDuration(cooldown));
        rs.over = false;
        rs.caps.clear();
      }
    }
    // A new actor waits two intervals: the previous one (beside the old
    // leader) lifts its caps at its next interval, and reopening the same
    // role on the same member must not undo the new actor's caps.
    const double grace = 2.0 * static_cast<double>(cfg.daemon.interval.count()) / 1000.0;
    if (f.actor && now - f.actor_since >= grace && rs.over) {
      auto c = rs.caps.find(s.server.name);
      if (c != rs.caps.end()) s.state.cluster_caps[lim.role] = c->second;
    }
  }
}

void Daemon::WarnOnceFleet(const std::string& cluster, const std::string& msg) {
  if (fleet_warned_.insert(cluster + "\n" + msg).second) spdlog::warn("[{}] {}", cluster, msg);
}

}  // namespace wardend

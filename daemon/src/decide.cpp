// The [[role]] ladder and the emergency steps (see decide.hpp and
// docs/daemon.md, "Decisions"). Pure functions: no I/O, no locks.
#include "wardend/decide.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>

namespace wardend {

std::map<std::string, RoleCount> Snapshot::Roles() const {
  std::map<std::string, RoleCount> out;
  for (const auto& a : apps) {
    RoleCount& r = out[a.role];
    r.connections += a.connections;
    r.active += a.active;
    r.idle += a.idle;
    r.idle_in_transaction += a.idle_in_transaction;
  }
  return out;
}

int Snapshot::Active() const {
  int n = 0;
  for (const auto& a : apps) n += a.active;
  return n;
}
int Snapshot::Idle() const {
  int n = 0;
  for (const auto& a : apps) n += a.idle;
  return n;
}
int Snapshot::IdleInTransaction() const {
  int n = 0;
  for (const auto& a : apps) n += a.idle_in_transaction;
  return n;
}
double Snapshot::LongestIdleSeconds() const {
  double m = 0;
  for (const auto& a : apps) m = std::max(m, a.longest_idle_seconds);
  return m;
}
double Snapshot::LongestIdleInTransactionSeconds() const {
  double m = 0;
  for (const auto& a : apps) m = std::max(m, a.longest_idle_in_transaction_seconds);
  return m;
}

const char* ToString(Action::Kind k) {
  switch (k) {
    case Action::Kind::kTerminate:
      return "terminate";
    case Action::Kind::kCloseAdmission:
      return "close_admission";
    case Action::Kind::kOpenAdmission:
      return "open_admission";
    case Action::Kind::kPausePool:
      return "pause_pool";
    case Action::Kind::kResumePool:
      return "resume_pool";
  }
  return "?";
}

std::string Describe(const Action& a) {
  switch (a.kind) {
    case Action::Kind::kTerminate:
      return fmt::format(
          "terminate pid {} (role {}, database {}, application \"{}\", {} for {:.1f}s): {}", a.pid,
          a.role, a.database, a.application_name, a.state, a.idle_seconds, a.reason);
    case Action::Kind::kCloseAdmission:
      return fmt::format("close admission of role {} at {} connections: {}", a.role, a.limit,
                         a.reason);
    case Action::Kind::kOpenAdmission:
      return fmt::format("reopen admission of role {}: {}", a.role, a.reason);
    case Action::Kind::kPausePool:
      return fmt::format("pause pgbouncer pool {}: {}", a.pool, a.reason);
    case Action::Kind::kResumePool:
      return fmt::format("resume pgbouncer pool {}: {}", a.pool, a.reason);
  }
  return "?";
}

namespace {

bool IsIdleInTransaction(const std::string& state) {
  return state.rfind("idle in transaction", 0) == 0;
}
bool IsIdleState(const std::string& state) { return state.rfind("idle", 0) == 0; }

Action Terminate(const Backend& b, double min_idle, std::string rule, std::string reason) {
  Action a;
  a.kind = Action::Kind::kTerminate;
  a.pid = b.pid;
  a.backend_start = b.backend_start;
  a.sampled_at = b.sampled_at;
  a.role = b.role;
  a.database = b.database;
  a.application_name = b.application_name;
  a.state = b.state;
  a.idle_seconds = b.state_seconds;
  a.min_idle_seconds = min_idle;
  // Only a [[role]] that names the role may end a superuser's session.
  a.superuser_ok = rule == "max_idle" || rule == "idle_in_transaction_timeout";
  a.reason = std::move(reason);
  a.rule = std::move(rule);
  return a;
}

// Longest idle first; pid breaks ties so the order is deterministic.
void SortOldestFirst(std::vector<const Backend*>& v) {
  std::sort(v.begin(), v.end(), [](const Backend* x, const Backend* y) {
    if (x->state_seconds != y->state_seconds) return x->state_seconds > y->state_seconds;
    return x->pid < y->pid;
  });
}

bool IsExempt(const Snapshot& snap, const std::string& role) {
  return std::find(snap.exempt_roles.begin(), snap.exempt_roles.end(), role) !=
         snap.exempt_roles.end();
}

// Patroni's own connection to its server (application_name "Patroni",
// "Patroni ctl" for patronictl): idle between two HA loops, never terminated
// (docs/fleet.md). Walsenders (replication, pg_basebackup) are not in the
// snapshot at all.
bool IsPatroniSession(const Backend& b) {
  return b.application_name == "Patroni" || b.application_name == "Patroni ctl";
}

// Idle sessions per role that wardend may act on: never its own session,
// never one of warden.exempt_roles, never Patroni's.
std::map<std::string, std::vector<const Backend*>> IdleCandidates(const Snapshot& snap) {
  std::map<std::string, std::vector<const Backend*>> by_role;
  for (const auto& b : snap.backends)
    if (b.pid != snap.own_pid && IsIdleState(b.state) && !IsExempt(snap, b.role) &&
        !IsPatroniSession(b))
      by_role[b.role].push_back(&b);
  return by_role;
}

}  // namespace

std::map<std::string, int> DesiredAdmission(const Config& cfg, const ServerState& state) {
  std::map<std::string, int> want;
  for (const auto& b : cfg.role_limits) {
    auto it = state.roles.find(b.role);
    if (b.max_connections && it != state.roles.end() && it->second.over_limit)
      want[b.role] = *b.max_connections;
  }
  for (const auto& [role, cap] : state.cluster_caps) {
    auto it = want.find(role);
    want[role] = it == want.end() ? cap : std::min(it->second, cap);
  }
  for (const auto& [step, caps] : state.emergency_caps) {
    if (step >= state.emergency_active.size() || !state.emergency_active[step]) continue;
    for (const auto& [role, cap] : caps) {
      auto it = want.find(role);
      want[role] = it == want.end() ? cap : std::min(it->second, cap);
    }
  }
  return want;
}

std::set<std::string> DesiredPauses(const Config& cfg, const ServerState& state) {
  std::set<std::string> want;
  for (size_t i = 0; i < cfg.emergencies.size() && i < state.emergency_active.size(); ++i)
    if (state.emergency_active[i] && cfg.emergencies[i].action == EmergencyAction::kPausePool)
      want.insert(cfg.emergencies[i].pool);
  return want;
}

Decision DecideRoleLimits(const Config& cfg, const Snapshot& snap,
                          std::map<std::string, RoleState>& role_states, double now) {
  Decision d;
  std::set<int> chosen;  // a session is terminated once, by the first step that picks it
  const auto roles = snap.Roles();
  auto by_role = IdleCandidates(snap);

  for (const auto& limit : cfg.role_limits) {
    auto rc = roles.find(limit.role);
    int held = rc == roles.end() ? 0 : rc->second.connections;
    int terminated = 0;
    std::vector<const Backend*>& mine = by_role[limit.role];

    // a. idle in transaction past its timeout, longest first.
    if (limit.idle_in_transaction_timeout) {
      double timeout = limit.idle_in_transaction_timeout->count() / 1000.0;
      std::vector<const Backend*> c;
      for (const Backend* b : mine)
        if (IsIdleInTransaction(b->state) && b->state_seconds >= timeout) c.push_back(b);
      SortOldestFirst(c);
      for (const Backend* b : c) {
        if (!chosen.insert(b->pid).second) continue;
        d.actions.push_back(
            Terminate(*b, timeout, "idle_in_transaction_timeout",
                      fmt::format("role {}: idle_in_transaction_timeout {}", limit.role,
                                  FormatDuration(*limit.idle_in_transaction_timeout))));
        ++terminated;
      }
    }
    // b. idle beyond max_idle, oldest idle first.
    if (limit.max_idle) {
      std::vector<const Backend*> idle;
      for (const Backend* b : mine)
        if (b->state == "idle" && !chosen.count(b->pid)) idle.push_back(b);
      if (static_cast<int>(idle.size()) > *limit.max_idle) {
        SortOldestFirst(idle);
        size_t excess = idle.size() - static_cast<size_t>(*limit.max_idle);
        // Sessions idle for less than min_idle_age are spared: a pool whose
        // minimum is above max_idle would otherwise reconnect forever.
        const double min_age =
            (limit.min_idle_age ? *limit.min_idle_age : cfg.daemon.min_idle_age).count() / 1000.0;
        for (size_t i = 0; i < excess; ++i) {
          if (idle[i]->state_seconds < min_age) continue;
          chosen.insert(idle[i]->pid);
          d.actions.push_back(
              Terminate(*idle[i], min_age, "max_idle",
                        fmt::format("role {}: max_idle {}", limit.role, *limit.max_idle)));
          ++terminated;
        }
      }
    }
    // c. still above max_connections: close admission; reopen after the cool-down.
    // (scope "cluster": counted over the members by the daemon, see cluster_caps)
    if (limit.max_connections && limit.scope == RoleScope::kServer && !IsExempt(snap, limit.role)) {
      RoleState& rs = role_states[limit.role];
      int remaining = held - terminated;
      Millis cooldown = limit.cooldown ? *limit.cooldown : cfg.daemon.cooldown;
      if (remaining > *limit.max_connections) {
        if (!rs.over_limit)
          d.events.push_back(
              fmt::format("role {} over its limit: {} connections > max_connections {}", limit.role,
                          remaining, *limit.max_connections));
        rs.over_limit = true;
        rs.under_since.reset();
      } else if (rs.over_limit) {
        if (!rs.under_since) rs.under_since = now;
        if (now - *rs.under_since >= cooldown.count() / 1000.0) {
          rs.over_limit = false;
          rs.under_since.reset();
          d.events.push_back(fmt::format("role {} back under its limit for {}", limit.role,
                                         FormatDuration(cooldown)));
        }
      }
    }
  }
  return d;
}

Decision DecideEmergencies(const Config& cfg, const Snapshot& snap, ServerState& state,
                           const std::set<int>& already_chosen) {
  Decision d;
  std::set<int> chosen = already_chosen;
  const auto roles = snap.Roles();
  auto by_role = IdleCandidates(snap);

  state.emergency_active.resize(cfg.emergencies.size(), false);
  for (size_t i = 0; i < cfg.emergencies.size(); ++i) {
    const EmergencyConfig& e = cfg.emergencies[i];
    bool active = state.emergency_active[i];
    if (!active && snap.usage_percent >= e.at_percent) {
      active = true;
      d.events.push_back(fmt::format("emergency {}% ({}) fired: server usage {:.1f}%", e.at_percent,
                                     ToString(e.action), snap.usage_percent));
      if (e.action == EmergencyAction::kCloseAdmission) {
        auto& caps = state.emergency_caps[i];
        caps.clear();
        for (const auto& b : cfg.role_limits)
          if (std::find(e.priorities.begin(), e.priorities.end(), b.priority) !=
                  e.priorities.end() &&
              !IsExempt(snap, b.role)) {
            // A role holding nothing is capped at 1, never at 0 (that would
            // lock it out entirely, which no emergency step asks for).
            auto rc = roles.find(b.role);
            caps[b.role] = std::max(1, rc == roles.end() ? 0 : rc->second.connections);
          }
      }
    } else if (active && snap.usage_percent < e.at_percent - cfg.daemon.hysteresis_percent) {
      active = false;
      state.emergency_caps.erase(i);
      d.events.push_back(fmt::format("emergency {}% ({}) undone: server usage {:.1f}%",
                                     e.at_percent, ToString(e.action), snap.usage_percent));
    }
    state.emergency_active[i] = active;

    if (active && e.action == EmergencyAction::kTerminateIdle) {
      double older = e.older_than.count() / 1000.0;
      // As many as bring usage back under at_percent, counting this poll's
      // other terminations (each connection weighs usage / connections).
      const double per_conn = snap.connections > 0 ? snap.usage_percent / snap.connections : 0.0;
      double usage = snap.usage_percent - per_conn * static_cast<double>(chosen.size());
      size_t needed = 0;
      while (per_conn > 0 && usage - per_conn * static_cast<double>(needed) >= e.at_percent)
        ++needed;
      // keep_min per (database, role, application_name): its most recently
      // used idle sessions are never picked.
      std::map<std::tuple<std::string, std::string, std::string>, std::vector<const Backend*>>
          groups;
      for (auto& [role, list] : by_role) {
        Priority p = cfg.PriorityOf(role);
        if (std::find(e.skip_priority.begin(), e.skip_priority.end(), p) != e.skip_priority.end())
          continue;
        for (const Backend* b : list)
          groups[{b->database, b->role, b->application_name}].push_back(b);
      }
      std::vector<const Backend*> c;
      for (auto& [key, list] : groups) {
        SortOldestFirst(list);
        size_t keep = std::min(list.size(), static_cast<size_t>(e.keep_min));
        for (size_t k = 0; k + keep < list.size(); ++k) {
          const Backend* b = list[k];
          if (b->state_seconds >= older && !chosen.count(b->pid)) c.push_back(b);
        }
      }
      SortOldestFirst(c);
      if (c.size() > needed) c.resize(needed);
      for (const Backend* b : c) {
        chosen.insert(b->pid);
        d.actions.push_back(Terminate(*b, older, fmt::format("emergency {}%", e.at_percent),
                                      fmt::format("emergency {}%: terminate_idle older_than {}",
                                                  e.at_percent, FormatDuration(e.older_than))));
      }
    }
  }
  return d;
}

Decision Decide(const Config& cfg, const Snapshot& snap, ServerState& state, double now) {
  Decision d = DecideRoleLimits(cfg, snap, state.roles, now);
  std::set<int> chosen;
  for (const auto& a : d.actions)
    if (a.kind == Action::Kind::kTerminate) chosen.insert(a.pid);
  Decision e = DecideEmergencies(cfg, snap, state, chosen);
  d.actions.insert(d.actions.end(), e.actions.begin(), e.actions.end());
  d.events.insert(d.events.end(), e.events.begin(), e.events.end());

  // Admission: bring what is in force to what should be.
  const auto want = DesiredAdmission(cfg, state);
  for (const auto& [role, limit] : want) {
    auto it = state.applied.find(role);
    if (it != state.applied.end() && it->second == limit) continue;
    Action a;
    a.kind = Action::Kind::kCloseAdmission;
    a.role = role;
    a.limit = limit;
    const RoleLimitConfig* b = cfg.RoleLimitFor(role);
    auto rs = state.roles.find(role);
    if (b && b->max_connections && rs != state.roles.end() && rs->second.over_limit &&
        limit == *b->max_connections)
      a.reason = fmt::format("role {}: over max_connections {}", role, *b->max_connections);
    else if (auto cc = state.cluster_caps.find(role);
             cc != state.cluster_caps.end() && cc->second == limit && b && b->max_connections)
      a.reason = fmt::format("role {}: cluster max_connections {}, this member's share {}", role,
                             *b->max_connections, limit);
    else
      a.reason = fmt::format("emergency: role {} (priority {}) capped at {}", role,
                             ToString(cfg.PriorityOf(role)), limit);
    d.actions.push_back(std::move(a));
  }
  for (const auto& [role, limit] : state.applied) {
    if (want.count(role)) continue;
    Action a;
    a.kind = Action::Kind::kOpenAdmission;
    a.role = role;
    a.limit = limit;
    a.reason = "reason gone";
    d.actions.push_back(std::move(a));
  }

  // PgBouncer pools: PAUSE what a step in force names, RESUME what none does.
  const auto pauses = DesiredPauses(cfg, state);
  for (const auto& pool : pauses) {
    if (state.paused.count(pool)) continue;
    Action a;
    a.kind = Action::Kind::kPausePool;
    a.pool = pool;
    for (const auto& e : cfg.emergencies)
      if (e.action == EmergencyAction::kPausePool && e.pool == pool &&
          snap.usage_percent >= e.at_percent - cfg.daemon.hysteresis_percent) {
        a.reason =
            fmt::format("emergency {}%: server usage {:.1f}%", e.at_percent, snap.usage_percent);
        break;
      }
    d.actions.push_back(std::move(a));
  }
  for (const auto& pool : state.paused) {
    if (pauses.count(pool)) continue;
    Action a;
    a.kind = Action::Kind::kResumePool;
    a.pool = pool;
    a.reason = "reason gone";
    d.actions.push_back(std::move(a));
  }
  return d;
}

}  // namespace wardend

// The decisions of wardend as pure functions: (config, snapshot, state of the
// daemon for that server, now) -> actions. Two halves, each testable alone:
// the per-role limits ([[role]]: the ladder) and the emergency steps
// ([[emergency]]); Decide() runs both and then reconciles admission. No I/O,
// no threads, no locks; the executor applies the actions and records what it
// applied in ServerState::applied.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "wardend/config.hpp"
#include "wardend/snapshot.hpp"

namespace wardend {

struct Action {
  enum class Kind { kTerminate, kCloseAdmission, kOpenAdmission, kPausePool, kResumePool };
  Kind kind = Kind::kTerminate;
  std::string role;
  // kTerminate: the session, re-checked by the executor before terminating.
  int pid = 0;
  std::string backend_start;
  std::string sampled_at;  // when its state was read: a session used since then is spared
  std::string database;
  std::string application_name;
  std::string state;
  double idle_seconds = 0;
  double min_idle_seconds = 0;  // the session must still be idle at least this long
  bool superuser_ok = false;    // a [[role]] names the role: its superuser sessions too
  // kCloseAdmission: the cap on the role's connections.
  int limit = 0;
  std::string pool;    // kPausePool, kResumePool: the pgbouncer database
  std::string reason;  // "role app_api: max_idle 10", "emergency 90%: ..."
  std::string rule;    // short: "max_idle", "idle_in_transaction_timeout", "emergency 90%", ...
};

const char* ToString(Action::Kind k);
std::string Describe(const Action& a);

struct RoleState {
  bool over_limit = false;            // closed because over its max_connections
  std::optional<double> under_since;  // when it went back under its limit
};

struct ServerState {
  std::map<std::string, RoleState> roles;
  std::vector<bool> emergency_active;                           // one per [[emergency]]
  std::map<size_t, std::map<std::string, int>> emergency_caps;  // step -> role -> cap
  // Admission changes in force on this server (role -> limit), as applied by
  // the executor (and journaled). decide() only reads it.
  std::map<std::string, int> applied;
  // Caps on this member set by the fleet for [[role]] scope = "cluster"
  // (role -> this member's share of the cluster's limit); set by the daemon
  // before Decide(), empty when this wardend is not the cluster's actor.
  std::map<std::string, int> cluster_caps;
  // PgBouncer pools paused by wardend on this server's pgbouncer_dsn, as
  // applied by the executor (and journaled). decide() only reads it.
  std::set<std::string> paused;
};

struct Decision {
  std::vector<Action> actions;
  std::vector<std::string> events;  // "emergency 90% fired", for the log
};

// One poll's decisions: DecideRoleLimits, then DecideEmergencies (skipping the
// sessions the first chose), then the admission changes that bring
// state.applied to DesiredAdmission, and the PAUSE/RESUME that bring
// state.paused to DesiredPauses. Updates state's hysteresis fields (not
// `applied`).
Decision Decide(const Config& cfg, const Snapshot& snap, ServerState& state, double now);

// The [[role]] ladder: idle in transaction past its timeout, idle beyond
// max_idle (terminations), and whether each role is over its max_connections
// (roles[..].over_limit, with the cool-down before it is reopened).
Decision DecideRoleLimits(const Config& cfg, const Snapshot& snap,
                          std::map<std::string, RoleState>& roles, double now);

// The [[emergency]] steps: fire on the way up, undone below at_percent minus
// the hysteresis; terminate_idle picks sessions not in `already_chosen`,
// close_admission records the caps in state.emergency_caps.
Decision DecideEmergencies(const Config& cfg, const Snapshot& snap, ServerState& state,
                           const std::set<int>& already_chosen);

// The admission limits that should be in force (role -> limit).
std::map<std::string, int> DesiredAdmission(const Config& cfg, const ServerState& state);

// The pgbouncer pools that should be paused: those of the pause_pool steps in force.
std::set<std::string> DesiredPauses(const Config& cfg, const ServerState& state);

}  // namespace wardend

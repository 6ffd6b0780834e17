// Executing wardend's decisions (see executor.hpp). Runs on one server's
// thread; the Journal takes its own mutex, the Events callbacks the status
// board's.
#include "wardend/executor.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "wardend/clock.hpp"

namespace wardend {

bool ConnectionTarget::TerminateIfStill(const Action& a) {
  return c_.TerminateIfStill(a.pid, a.backend_start, a.state, a.sampled_at, a.min_idle_seconds,
                             a.superuser_ok);
}

std::map<std::string, int> ConnectionTarget::RoleOverrides() {
  if (!c_.caps().close_admission) return {};  // confirmed absent: its overrides went with it
  return c_.RoleOverrides();
}

void ConnectionTarget::Record(const std::string& what, const Action& a, bool dry_run) {
  c_.RecordAction(what, a.pid, a.database, a.role, a.application_name, a.state, a.idle_seconds,
                  a.reason, dry_run);
}

bool ActionTarget::PausePool(const std::string& pool) {
  throw PgError("cannot pause pool " + pool + ": this server has no pgbouncer_dsn", "", false);
}

void ActionTarget::ResumePool(const std::string& pool) {
  throw PgError("cannot resume pool " + pool + ": this server has no pgbouncer_dsn", "", false);
}

std::string ConnectionTarget::Bouncer() const {
  return bouncer_dsn_.empty() ? "" : DsnHostPort(bouncer_dsn_);
}

bool ConnectionTarget::PausePool(const std::string& pool) {
  if (bouncer_dsn_.empty()) return ActionTarget::PausePool(pool);
  auto console = ConsoleConnection::Open(bouncer_dsn_, 2);
  // Dropped when this returns: a PAUSE still under way stays so in pgbouncer.
  return console->Command("PAUSE " + pool, bouncer_timeout_ms_);
}

void ConnectionTarget::ResumePool(const std::string& pool) {
  if (bouncer_dsn_.empty()) return ActionTarget::ResumePool(pool);
  auto console = ConsoleConnection::Open(bouncer_dsn_, 2);
  try {
    if (!console->Command("RESUME " + pool, bouncer_timeout_ms_))
      throw PgError("RESUME " + pool + ": no answer from pgbouncer", "", true);
  } catch (const PgError& e) {
    // Nothing paused there (pgbouncer restarted, or the PAUSE never took):
    // nothing left to undo.
    const std::string msg = e.what();
    if (msg.find("is not paused") != std::string::npos ||
        msg.find("no such database") != std::string::npos)
      return;
    throw;
  }
}

AdmissionMechanism& ConnectionTarget::Mechanism(AdmissionKind kind) {
  auto& m = kind == AdmissionKind::kOverride ? override_ : connection_limit_;
  if (!m) m = MakeMechanism(kind, c_);
  return *m;
}

Executor::Executor(std::string server, Journal& journal, Events events)
    : server_(std::move(server)), journal_(journal), events_(std::move(events)) {}

void Executor::WarnOnce(const std::string& key, const std::string& message) {
  if (warned_.insert(key).second) spdlog::warn("[{}] {}", server_, message);
}

void Executor::Apply(ActionTarget& t, ServerState& state, bool in_recovery,
                     const std::vector<Action>& actions, bool dry_run,
                     const std::function<bool()>& stop) {
  std::set<std::string> dry_now;
  for (const auto& a : actions) {
    if (stop() || !t.ok()) break;
    try {
      if (dry_run) {
        std::string key = a.kind == Action::Kind::kTerminate ? fmt::format("t{}", a.pid)
                          : a.pool.empty() ? fmt::format("a{}:{}", a.role, a.limit)
                                           : fmt::format("p{}:{}", ToString(a.kind), a.pool);
        dry_now.insert(key);
        if (!dry_logged_.count(key)) {
          spdlog::info("[{}] dry-run: would {}", server_, Describe(a));
          if (a.kind == Action::Kind::kTerminate) Record(t, a, true);
        }
        continue;
      }
      Execute(t, state, in_recovery, a);
    } catch (const PgError& e) {
      spdlog::error("[{}] {} failed: {}", server_, Describe(a), e.what());
      if (e.connection_lost()) break;
    } catch (const std::exception& e) {
      spdlog::error("[{}] {} failed: {}", server_, Describe(a), e.what());
    }
  }
  dry_logged_ = std::move(dry_now);
}

void Executor::Execute(ActionTarget& t, ServerState& state, bool in_recovery, const Action& a) {
  switch (a.kind) {
    case Action::Kind::kTerminate:
      if (t.TerminateIfStill(a)) {
        if (events_.action) events_.action("terminate", Describe(a));
        spdlog::info("[{}] terminated pid {} (role {}, application \"{}\", {} for {:.1f}s): {}",
                     server_, a.pid, a.role, a.application_name, a.state, a.idle_seconds, a.reason);
        Record(t, a, false);
      } else {
        spdlog::debug("[{}] pid {} no longer qualifies: left alone", server_, a.pid);
      }
      break;
    case Action::Kind::kCloseAdmission:
      Close(t, state, in_recovery, a);
      break;
    case Action::Kind::kOpenAdmission: {
      auto e = journal_.Find(server_, a.role, identity_);
      if (!e) {
        state.applied.erase(a.role);
        spdlog::info("[{}] admission of role {}: nothing to reopen ({})", server_, a.role,
                     a.reason);
        break;
      }
      if (Undo(t, *e, in_recovery, a.reason)) state.applied.erase(a.role);
      break;
    }
    case Action::Kind::kPausePool:
      Pause(t, state, a);
      break;
    case Action::Kind::kResumePool: {
      auto e = journal_.FindPool(server_, a.pool, identity_);
      if (!e) {
        state.paused.erase(a.pool);
        spdlog::info("[{}] pgbouncer pool {}: nothing to resume ({})", server_, a.pool, a.reason);
        break;
      }
      if (Resume(t, *e, a.reason)) state.paused.erase(a.pool);
      break;
    }
  }
}

void Executor::Pause(ActionTarget& t, ServerState& state, const Action& a) {
  const std::string where = t.Bouncer();
  if (where.empty()) {
    WarnOnce(
        "nobouncer:" + a.pool,
        fmt::format("cannot pause pgbouncer pool {}: this server has no pgbouncer_dsn", a.pool));
    return;
  }
  auto existing = journal_.FindPool(server_, a.pool, identity_);
  JournalEntry e;
  e.server = server_;
  e.identity = identity_;
  e.mechanism = AdmissionKind::kPausePool;
  e.pool = a.pool;
  e.pgbouncer = where;
  e.since = existing ? existing->since : Wall();
  try {
    journal_.Upsert(e);  // before the PAUSE: a kill -9 right after still knows what to resume
  } catch (const std::exception& ex) {
    std::string msg = fmt::format("state file {}: {}", journal_.path(), ex.what());
    spdlog::error("[{}] pgbouncer pool {} NOT paused: {}", server_, a.pool, msg);
    if (events_.journal_error) events_.journal_error(msg);
    return;
  }
  if (events_.journal_error) events_.journal_error("");
  bool done = false;
  try {
    done = t.PausePool(a.pool);
  } catch (const PgError& ex) {
    if (ex.connection_lost()) {
      // The PAUSE may have reached pgbouncer: known as paused, so that it is
      // resumed (a RESUME of a pool not paused counts as done).
      state.paused.insert(a.pool);
    } else if (!existing) {
      try {
        journal_.RemovePool(server_, a.pool, identity_);
      } catch (const std::exception& ex2) {
        spdlog::error("[{}] state file {}: {}", server_, journal_.path(), ex2.what());
      }
    }
    throw;
  }
  state.paused.insert(a.pool);
  if (events_.action) events_.action("pause_pool", Describe(a));
  if (done)
    spdlog::warn("[{}] paused pgbouncer pool {} on {}: {}", server_, a.pool, where, a.reason);
  else
    spdlog::warn(
        "[{}] pausing pgbouncer pool {} on {}: {} (new clients wait; its server connections "
        "still in use are released as their clients finish)",
        server_, a.pool, where, a.reason);
  Action rec = a;
  rec.database = a.pool;
  Record(t, rec, false);
}

bool Executor::Resume(ActionTarget& t, const JournalEntry& e, const std::string& why) {
  try {
    t.ResumePool(e.pool);
  } catch (const PgError& ex) {
    spdlog::error(
        "[{}] cannot resume pgbouncer pool {} on {}: {} (kept in the state file, tried "
        "again at the next poll)",
        server_, e.pool, e.pgbouncer, ex.what());
    return false;
  }
  try {
    journal_.RemovePool(server_, e.pool, identity_);
  } catch (const std::exception& ex) {
    spdlog::error("[{}] pgbouncer pool {}: state file {}: {} (resumed; entry kept)", server_,
                  e.pool, journal_.path(), ex.what());
    return false;
  }
  Action rec;
  rec.kind = Action::Kind::kResumePool;
  rec.pool = e.pool;
  rec.database = e.pool;
  rec.reason = why;
  if (events_.action) events_.action("resume_pool", Describe(rec));
  spdlog::warn("[{}] resumed pgbouncer pool {} on {} ({})", server_, e.pool, e.pgbouncer, why);
  Record(t, rec, false);
  return true;
}

void Executor::AdoptPaused(ServerState& state) {
  for (const auto& e : journal_.EntriesFor(server_, identity_))
    if (e.mechanism == AdmissionKind::kPausePool) state.paused.insert(e.pool);
}

void Executor::Close(ActionTarget& t, ServerState& state, bool in_recovery, const Action& a) {
  auto existing = journal_.Find(server_, a.role, identity_);
  AdmissionMechanism& mech = t.Mechanism(existing ? existing->mechanism : t.Preferred());
  if (!mech.Usable(in_recovery)) {
    WarnOnce("standby-close:" + a.role,
             fmt::format("cannot close admission of role {}: this server is a standby and "
                         "warden.close_admission is absent (ALTER ROLE is impossible here)",
                         a.role));
    return;
  }
  int original;
  if (existing) {
    original = existing->original_limit;
  } else {
    auto cur = mech.CurrentLimit(a.role);
    if (!cur) {
      WarnOnce("norole:" + a.role,
               fmt::format("role {} does not exist: admission not closed", a.role));
      return;
    }
    original = *cur;
    // After a failover, the limit on the new primary may be wardend's own cap
    // replicated from the old one: the original is the one journaled there.
    if (mech.kind() == AdmissionKind::kConnectionLimit && !identity_.empty()) {
      auto other = journal_.FindSameSystem(identity_, a.role);
      if (other && other->identity != identity_ &&
          (original == other->applied_limit ||
           (other->previous_limit >= 0 && original == other->previous_limit)))
        original = other->original_limit;
    }
  }
  if (mech.kind() == AdmissionKind::kConnectionLimit && original >= 0 && original <= a.limit) {
    // Its own CONNECTION LIMIT is already as tight: nothing to lower.
    if (existing)
      Undo(t, *existing, in_recovery,
           fmt::format("its own CONNECTION LIMIT {} is tight enough", original));
    state.applied[a.role] = a.limit;
    WarnOnce(fmt::format("tight:{}:{}", a.role, a.limit),
             fmt::format("role {} already has CONNECTION LIMIT {} <= {}: left as is", a.role,
                         original, a.limit));
    return;
  }
  JournalEntry e;
  e.server = server_;
  e.identity = identity_;
  e.role = a.role;
  e.mechanism = mech.kind();
  e.original_limit = original;
  e.applied_limit = a.limit;
  e.since = existing ? existing->since : Wall();
  // A retry of the same limit keeps what was known to be in force before it.
  if (existing)
    e.previous_limit =
        existing->applied_limit == a.limit ? existing->previous_limit : existing->applied_limit;
  try {
    journal_.Upsert(e);  // before the change: a crash right after still knows what to undo
  } catch (const std::exception& ex) {
    // Never change what could not be journaled: it might never be undone.
    std::string msg = fmt::format("state file {}: {}", journal_.path(), ex.what());
    spdlog::error("[{}] admission of role {} NOT closed: {}", server_, a.role, msg);
    if (events_.journal_error) events_.journal_error(msg);
    return;
  }
  if (events_.journal_error) events_.journal_error("");
  try {
    mech.Close(a.role, a.limit, a.reason);
  } catch (...) {
    // Never applied: the journal goes back to what is in force, so that no
    // later start calls this change "left in force".
    try {
      if (existing)
        journal_.Upsert(*existing);
      else
        journal_.Remove(server_, a.role, identity_);
    } catch (const std::exception& ex) {
      spdlog::error("[{}] state file {}: {}", server_, journal_.path(), ex.what());
    }
    throw;
  }
  state.applied[a.role] = a.limit;
  renewed_[a.role] = Mono();
  reason_[a.role] = a.reason;
  if (events_.action) events_.action("close_admission", Describe(a));
  spdlog::warn("[{}] closed admission of role {}: {}: {}", server_, a.role,
               mech.DescribeClose(a.limit, original), a.reason);
  Action rec = a;
  rec.state = "";
  Record(t, rec, false);
}

bool Executor::Undo(ActionTarget& t, const JournalEntry& e, bool in_recovery,
                    const std::string& why) {
  if (e.mechanism == AdmissionKind::kPausePool) return Resume(t, e, why);
  if (!t.ok()) return false;
  try {
    AdmissionMechanism& mech = t.Mechanism(e.mechanism);
    if (!mech.Usable(in_recovery)) {
      WarnOnce("standby-undo:" + e.role,
               fmt::format("cannot restore CONNECTION LIMIT of role {} on a standby; kept in the "
                           "state file",
                           e.role));
      return false;
    }
    std::string note = mech.Reopen(e.role, e.original_limit, e.applied_limit, e.previous_limit);
    journal_.Remove(server_, e.role, identity_);
    renewed_.erase(e.role);
    reason_.erase(e.role);
    if (events_.action)
      events_.action("open_admission", fmt::format("reopen admission of role {}: {}", e.role, why));
    spdlog::warn("[{}] reopened admission of role {} ({}): {}", server_, e.role, why, note);
    Action rec;
    rec.kind = Action::Kind::kOpenAdmission;
    rec.role = e.role;
    rec.limit = e.original_limit;
    rec.reason = why + ": " + note;
    Record(t, rec, false);
    return true;
  } catch (const PgError& ex) {
    spdlog::error("[{}] cannot reopen admission of role {}: {}", server_, e.role, ex.what());
    return false;
  } catch (const std::exception& ex) {  // the state file: undone, but still journaled
    spdlog::error("[{}] admission of role {}: state file {}: {} (undone; entry kept)", server_,
                  e.role, journal_.path(), ex.what());
    return false;
  }
}

void Executor::UndoAll(ActionTarget& t, bool in_recovery, const std::string& why,
                       bool keep_paused) {
  for (const auto& e : journal_.EntriesFor(server_, identity_))
    if (!keep_paused || e.mechanism != AdmissionKind::kPausePool) Undo(t, e, in_recovery, why);
}

void Executor::SetIdentity(const std::string& identity) {
  if (identity.empty()) return;
  journal_.Adopt(server_, identity);
  identity_ = identity;
}

void Executor::Reconcile(ActionTarget& t, ServerState& state) {
  std::optional<std::map<std::string, int>> in_force;
  for (const auto& e : journal_.EntriesFor(server_, identity_)) {
    // A paused pool lives in pgbouncer, not in the server: state.paused knows it.
    if (e.mechanism == AdmissionKind::kPausePool) continue;
    if (!t.Mechanism(e.mechanism).LostAtRestart()) continue;
    if (!in_force) in_force = t.RoleOverrides();  // throws when it cannot tell
    auto it = in_force->find(e.role);
    if (it != in_force->end()) {
      state.applied[e.role] = e.applied_limit;  // still ours, still in force: known
      continue;
    }
    // Gone with the server's memory (a restart) or its lease: nothing left to
    // undo; the next decision puts it back if the reason still holds.
    spdlog::warn("[{}] admission override of role {} is no longer in force on the server", server_,
                 e.role);
    try {
      journal_.Remove(server_, e.role, identity_);
    } catch (const std::exception& ex) {
      spdlog::error("[{}] state file {}: {}", server_, journal_.path(), ex.what());
    }
    state.applied.erase(e.role);
    renewed_.erase(e.role);
  }
}

void Executor::Renew(ActionTarget& t, const ServerState& state, double now) {
  if (lease_ <= 0 || !t.ok()) return;
  for (const auto& e : journal_.EntriesFor(server_, identity_)) {
    if (e.mechanism != AdmissionKind::kOverride) continue;
    auto applied = state.applied.find(e.role);
    if (applied == state.applied.end() || applied->second != e.applied_limit) continue;
    auto last = renewed_.find(e.role);
    if (last != renewed_.end() && now - last->second < lease_ / 3) continue;
    auto why = reason_.find(e.role);
    try {
      t.Mechanism(e.mechanism)
          .Close(e.role, e.applied_limit,
                 why != reason_.end() ? why->second : "still over its limit (lease renewed)");
      renewed_[e.role] = now;
    } catch (const PgError& ex) {
      spdlog::error("[{}] cannot renew the admission override of role {}: {}", server_, e.role,
                    ex.what());
      if (ex.connection_lost()) return;
    }
  }
}

void Executor::Record(ActionTarget& t, const Action& a, bool dry_run) {
  if (!t.ok() || !t.CanRecord()) return;
  try {
    // The extension keeps the action in its 63-byte policy column: keep it short.
    std::string what = a.kind == Action::Kind::kTerminate ? "wardend " + a.rule
                       : a.pool.empty() ? fmt::format("wardend {} {}", ToString(a.kind), a.limit)
                                        : fmt::format("wardend {}", ToString(a.kind));
    t.Record(what, a, dry_run);
  } catch (const PgError& e) {
    WarnOnce("record_action",
             fmt::format("warden.record_action failed, not used again on this connection: {}",
                         e.what()));
  }
}

}  // namespace wardend

// Executing wardend's decisions on one server: terminate (re-checked on the
// server), close and reopen admission (through an AdmissionMechanism), record
// in warden.terminations, and the journal-before-change rule: a change is in
// the state file before it is applied, and leaves it only once its undo is
// confirmed on the server.
// Threads: an Executor belongs to one server's thread (the Journal it shares
// with the other servers has its own mutex; the Events callbacks take the
// status board's). No other locks.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "wardend/admission.hpp"
#include "wardend/decide.hpp"
#include "wardend/journal.hpp"
#include "wardend/pg.hpp"

namespace wardend {

// What the executor needs of one server: ConnectionTarget over a libpq
// Connection here, a fake in the unit tests.
class ActionTarget {
 public:
  virtual ~ActionTarget() = default;
  virtual bool ok() const = 0;  // connected
  // Terminates the session if it is still the one decided on and still idle.
  virtual bool TerminateIfStill(const Action& a) = 0;
  virtual bool CanRecord() const = 0;  // warden.record_action exists (and works)
  virtual void Record(const std::string& what, const Action& a, bool dry_run) = 0;
  virtual AdmissionKind Preferred() const = 0;  // the mechanism this server offers
  virtual AdmissionMechanism& Mechanism(AdmissionKind kind) = 0;
  // The server's identity (Capabilities::identity); "" when unknown.
  virtual std::string Identity() const { return ""; }
  // The overrides in force there for roles (role -> cap); empty where the
  // extension is confirmed absent. Throws PgError when it cannot tell.
  virtual std::map<std::string, int> RoleOverrides() { return {}; }
  // The server's PgBouncer (pgbouncer_dsn): "host:port", "" when it has none.
  virtual std::string Bouncer() const { return ""; }
  // PAUSE of a pool on its admin console: true once paused, false when the
  // PAUSE is still under way (it waits for the pool's server connections to
  // be released) after the timeout. Throws PgError.
  virtual bool PausePool(const std::string& pool);
  // RESUME of a pool; a pool pgbouncer says is not paused (or no longer has)
  // counts as resumed. Throws PgError.
  virtual void ResumePool(const std::string& pool);
};

class ConnectionTarget final : public ActionTarget {
 public:
  // bouncer_dsn: the server's pgbouncer_dsn ("" none); PAUSE and RESUME wait
  // for pgbouncer's answer at most bouncer_timeout_ms.
  explicit ConnectionTarget(Connection& c, std::string bouncer_dsn = "",
                            int bouncer_timeout_ms = 5000)
      : c_(c), bouncer_dsn_(std::move(bouncer_dsn)), bouncer_timeout_ms_(bouncer_timeout_ms) {}
  bool ok() const override { return c_.ok(); }
  bool TerminateIfStill(const Action& a) override;
  bool CanRecord() const override { return c_.caps().record_action; }
  void Record(const std::string& what, const Action& a, bool dry_run) override;
  AdmissionKind Preferred() const override { return ChooseMechanism(c_.caps()); }
  AdmissionMechanism& Mechanism(AdmissionKind kind) override;
  std::string Identity() const override { return c_.caps().identity; }
  std::map<std::string, int> RoleOverrides() override;
  std::string Bouncer() const override;
  bool PausePool(const std::string& pool) override;
  void ResumePool(const std::string& pool) override;

 private:
  Connection& c_;
  std::string bouncer_dsn_;
  int bouncer_timeout_ms_;
  std::unique_ptr<AdmissionMechanism> override_, connection_limit_;
};

class Executor {
 public:
  // The loop's status board, called on this server's thread.
  struct Events {
    std::function<void(const std::string& kind, const std::string& text)> action;
    std::function<void(const std::string& error)> journal_error;  // "": writable again
  };
  Executor(std::string server, Journal& journal, Events events);

  // One poll's actions, in order. Dry run: each decision is logged once while
  // it holds, terminations are recorded as dry runs, nothing is changed.
  // Stops early when stop() says so or the target lost its connection.
  void Apply(ActionTarget& t, ServerState& state, bool in_recovery,
             const std::vector<Action>& actions, bool dry_run, const std::function<bool()>& stop);
  // One action; a failed statement throws PgError.
  void Execute(ActionTarget& t, ServerState& state, bool in_recovery, const Action& a);
  // Undoes a journaled change; true once it is undone and out of the journal.
  bool Undo(ActionTarget& t, const JournalEntry& e, bool in_recovery, const std::string& why);
  // Undoes every change journaled for this server; keep_paused: not its
  // paused pgbouncer pools (see AdoptPaused).
  void UndoAll(ActionTarget& t, bool in_recovery, const std::string& why, bool keep_paused = false);
  // At the first connection: the pools a previous run paused (kill -9) are
  // known as paused (state.paused), so that the decisions resume them once
  // no emergency step needs them, rather than RESUME and PAUSE again.
  void AdoptPaused(ServerState& state);
  // Once connected: the server's identity keys this server's journal entries
  // (entries written under another [[server]] name are adopted). Throws if
  // the state file cannot be written.
  void SetIdentity(const std::string& identity);
  // After a reconnect: an override it placed that is still in force on the
  // server is known (state.applied), one the server no longer has (a restart,
  // an expired lease) leaves the journal. Throws PgError when it cannot tell.
  void Reconcile(ActionTarget& t, ServerState& state);
  // Overrides carry a lease of this many seconds (0: none), renewed by Renew.
  void set_lease(double seconds) { lease_ = seconds; }
  // Renews the lease of each override in force whose reason still holds
  // (still in state.applied at the journaled cap), a third of a lease at most
  // after the last time. `now`: monotonic seconds.
  void Renew(ActionTarget& t, const ServerState& state, double now);

 private:
  void Close(ActionTarget& t, ServerState& state, bool in_recovery, const Action& a);
  void Pause(ActionTarget& t, ServerState& state, const Action& a);
  bool Resume(ActionTarget& t, const JournalEntry& e, const std::string& why);
  void Record(ActionTarget& t, const Action& a, bool dry_run);
  void WarnOnce(const std::string& key, const std::string& message);

  std::string server_;
  std::string identity_;  // "" until known
  Journal& journal_;
  double lease_ = 0;
  std::map<std::string, double> renewed_;      // role -> monotonic time of the last close/renew
  std::map<std::string, std::string> reason_;  // role -> the reason of the override in force
  Events events_;
  std::set<std::string> warned_;      // one-time warnings
  std::set<std::string> dry_logged_;  // dry-run decisions already logged
};

}  // namespace wardend

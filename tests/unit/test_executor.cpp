// The executor with a fake server: the journal-before-change rule, undo only
// once confirmed, the two mechanisms chosen by kind, dry runs, recording.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <stdexcept>

#include "wardend/executor.hpp"

using namespace wardend;

namespace {

std::string TempPath(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("wardend-unit-executor-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / name);
  return (dir / name).string();
}

// A role's limit as the fake server holds it; what the journal held when the
// change was applied is remembered, to check the journal came first.
struct FakeServer {
  std::map<std::string, int> connlimit;  // ALTER ROLE's rolconnlimit (-1: none)
  std::map<std::string, int> overrides;  // warden.close_admission
  bool connected = true;
  bool fail_statements = false;
  bool cannot_tell = false;  // reading warden.admission_overrides fails (a lock, a timeout)
  std::string identity;
  std::vector<std::string> log;  // "close r 3", "reopen r", "terminate 7", "record ..."
};

class FakeMechanism : public AdmissionMechanism {
 public:
  FakeMechanism(FakeServer& s, AdmissionKind k, Journal& j) : s_(s), kind_(k), journal_(j) {}
  AdmissionKind kind() const override { return kind_; }
  bool Usable(bool in_recovery) const override {
    return kind_ == AdmissionKind::kOverride || !in_recovery;
  }
  std::optional<int> CurrentLimit(const std::string& role) override {
    auto it = s_.connlimit.find(role);
    if (it == s_.connlimit.end()) return std::nullopt;
    return kind_ == AdmissionKind::kOverride ? -1 : it->second;
  }
  void Close(const std::string& role, int limit, const std::string&) override {
    if (s_.fail_statements) throw PgError("statement failed", "XX000", false);
    // The rule under test: the change is journaled before it is applied.
    auto e = journal_.Find("p", role);
    if (!e || e->applied_limit != limit) throw std::logic_error("applied before it was journaled");
    (kind_ == AdmissionKind::kOverride ? s_.overrides : s_.connlimit)[role] = limit;
    s_.log.push_back("close " + role + " " + std::to_string(limit));
  }
  std::string Reopen(const std::string& role, int original, int, int) override {
    if (s_.fail_statements) throw PgError("statement failed", "XX000", false);
    if (kind_ == AdmissionKind::kOverride)
      s_.overrides.erase(role);
    else
      s_.connlimit[role] = original;
    s_.log.push_back("reopen " + role);
    return "reopened";
  }
  std::string DescribeClose(int limit, int) const override { return std::to_string(limit); }
  bool LostAtRestart() const override { return kind_ == AdmissionKind::kOverride; }

 private:
  FakeServer& s_;
  AdmissionKind kind_;
  Journal& journal_;
};

class FakeTarget : public ActionTarget {
 public:
  FakeTarget(FakeServer& s, Journal& j, AdmissionKind preferred)
      : s_(s),
        preferred_(preferred),
        override_(s, AdmissionKind::kOverride, j),
        limit_(s, AdmissionKind::kConnectionLimit, j) {}
  bool ok() const override { return s_.connected; }
  bool TerminateIfStill(const Action& a) override {
    s_.log.push_back("terminate " + std::to_string(a.pid));
    return true;
  }
  bool CanRecord() const override { return true; }
  void Record(const std::string& what, const Action&, bool dry_run) override {
    s_.log.push_back("record " + what + (dry_run ? " (dry)" : ""));
  }
  AdmissionKind Preferred() const override { return preferred_; }
  AdmissionMechanism& Mechanism(AdmissionKind k) override {
    return k == AdmissionKind::kOverride ? static_cast<AdmissionMechanism&>(override_) : limit_;
  }
  std::string Identity() const override { return s_.identity; }
  std::map<std::string, int> RoleOverrides() override {
    if (s_.cannot_tell)
      throw PgError("canceling statement due to statement timeout", "57014", false);
    return s_.overrides;
  }

 private:
  FakeServer& s_;
  AdmissionKind preferred_;
  FakeMechanism override_, limit_;
};

Action Close(const std::string& role, int limit) {
  Action a;
  a.kind = Action::Kind::kCloseAdmission;
  a.role = role;
  a.limit = limit;
  a.reason = "test";
  return a;
}

Action Open(const std::string& role) {
  Action a;
  a.kind = Action::Kind::kOpenAdmission;
  a.role = role;
  a.reason = "reason gone";
  return a;
}

Action Kill(int pid) {
  Action a;
  a.kind = Action::Kind::kTerminate;
  a.pid = pid;
  a.role = "api";
  a.rule = "max_idle";
  return a;
}

struct Fixture {
  explicit Fixture(AdmissionKind preferred, const std::string& file = "j.state")
      : journal(TempPath(file)), target(server, journal, preferred) {
    Executor::Events ev;
    ev.action = [this](const std::string& kind, const std::string&) { actions.push_back(kind); };
    ev.journal_error = [this](const std::string& e) { journal_error = e; };
    executor = std::make_unique<Executor>("p", journal, ev);
  }
  FakeServer server;
  Journal journal;
  FakeTarget target;
  std::unique_ptr<Executor> executor;
  ServerState state;
  std::vector<std::string> actions;
  std::string journal_error = "unset";
};

auto Never = [] { return false; };

}  // namespace

TEST(Executor, CloseIsJournaledFirstThenAppliedAndUndoneByReopen) {
  Fixture f(AdmissionKind::kConnectionLimit);
  f.server.connlimit["app"] = 7;
  f.executor->Apply(f.target, f.state, false, {Close("app", 3)}, false, Never);
  EXPECT_EQ(f.server.connlimit["app"], 3);
  EXPECT_EQ(f.state.applied.at("app"), 3);
  auto e = f.journal.Find("p", "app");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->mechanism, AdmissionKind::kConnectionLimit);
  EXPECT_EQ(e->original_limit, 7);
  EXPECT_EQ(f.journal_error, "");
  EXPECT_EQ(f.actions, std::vector<std::string>{"close_admission"});

  f.executor->Apply(f.target, f.state, false, {Open("app")}, false, Never);
  EXPECT_EQ(f.server.connlimit["app"], 7);
  EXPECT_FALSE(f.journal.Find("p", "app").has_value());
  EXPECT_FALSE(f.state.applied.count("app"));
  EXPECT_EQ(f.server.log.back(), "record wardend open_admission 7");
}

TEST(Executor, TheServersMechanismIsChosenAndTheJournalsKeptForUndo) {
  Fixture f(AdmissionKind::kOverride);
  f.server.connlimit["app"] = -1;
  f.executor->Execute(f.target, f.state, false, Close("app", 2));
  EXPECT_EQ(f.server.overrides.at("app"), 2);
  EXPECT_EQ(f.server.connlimit.at("app"), -1);  // ALTER ROLE not used
  EXPECT_EQ(f.journal.Find("p", "app")->mechanism, AdmissionKind::kOverride);
  // A reconnect finds the override still in force: known, not forgotten...
  f.state.applied.clear();
  f.executor->Reconcile(f.target, f.state);
  EXPECT_EQ(f.state.applied.at("app"), 2);
  // ...and an undo still happens.
  f.executor->UndoAll(f.target, false, "stopping");
  EXPECT_TRUE(f.server.overrides.empty());
  EXPECT_TRUE(f.journal.Entries().empty());
}

TEST(Executor, ReconcileDropsOnlyWhatTheServerConfirmsGone) {
  Fixture f(AdmissionKind::kOverride);
  f.server.connlimit["app"] = -1;
  f.executor->Execute(f.target, f.state, false, Close("app", 2));
  // Could not tell (a timeout): the entry and what the decisions know stay.
  f.server.cannot_tell = true;
  EXPECT_THROW(f.executor->Reconcile(f.target, f.state), PgError);
  EXPECT_TRUE(f.journal.Find("p", "app").has_value());
  EXPECT_EQ(f.state.applied.at("app"), 2);
  // The server restarted (or the lease ran out): nothing left to undo.
  f.server.cannot_tell = false;
  f.server.overrides.clear();
  f.executor->Reconcile(f.target, f.state);
  EXPECT_FALSE(f.journal.Find("p", "app").has_value());
  EXPECT_FALSE(f.state.applied.count("app"));
}

TEST(Executor, OverridesAreRenewedWhileTheirReasonHolds) {
  Fixture f(AdmissionKind::kOverride);
  f.server.connlimit["app"] = -1;
  f.executor->set_lease(3);
  f.executor->Execute(f.target, f.state, false, Close("app", 2));
  const size_t closes = f.server.log.size();
  f.server.overrides.clear();  // as if its lease had run out on the server
  f.executor->Renew(f.target, f.state, 1e12);
  EXPECT_EQ(f.server.overrides.at("app"), 2);
  EXPECT_GT(f.server.log.size(), closes);
  // Not again within a third of the lease.
  f.server.overrides.clear();
  f.executor->Renew(f.target, f.state, 1e12 + 0.5);
  EXPECT_FALSE(f.server.overrides.count("app"));
  // Once the reason is gone (no longer applied), never renewed.
  f.state.applied.clear();
  f.executor->Renew(f.target, f.state, 1e12 + 10);
  EXPECT_FALSE(f.server.overrides.count("app"));
}

TEST(Executor, AReplicatedCapIsNotTakenForTheOriginalAfterAFailover) {
  Fixture f(AdmissionKind::kConnectionLimit);
  // The old primary (member a) had its limit 7 lowered to 2; that replicated.
  JournalEntry old;
  old.server = "old-primary";
  old.identity = "7300000000000000001/a";
  old.role = "app";
  old.mechanism = AdmissionKind::kConnectionLimit;
  old.original_limit = 7;
  old.applied_limit = 2;
  f.journal.Upsert(old);
  f.server.connlimit["app"] = 2;
  f.executor->SetIdentity("7300000000000000001/b");  // the promoted standby
  f.executor->Execute(f.target, f.state, false, Close("app", 3));
  auto e = f.journal.Find("p", "app", "7300000000000000001/b");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->original_limit, 7);
  EXPECT_EQ(f.server.connlimit["app"], 3);
  f.executor->Execute(f.target, f.state, false, Open("app"));
  EXPECT_EQ(f.server.connlimit["app"], 7);
}

TEST(Executor, NothingChangesWhatCouldNotBeJournaled) {
  Fixture f(AdmissionKind::kConnectionLimit);
  f.server.connlimit["app"] = -1;
  Journal unwritable("/nonexistent-dir/wardend.state");
  Executor::Events ev;
  std::string error;
  ev.journal_error = [&](const std::string& e) { error = e; };
  Executor ex("p", unwritable, ev);
  ex.Execute(f.target, f.state, false, Close("app", 3));
  EXPECT_EQ(f.server.connlimit["app"], -1);
  EXPECT_FALSE(f.state.applied.count("app"));
  EXPECT_NE(error.find("state file /nonexistent-dir/wardend.state"), std::string::npos) << error;
}

TEST(Executor, AnEntryStaysUntilItsUndoIsConfirmed) {
  Fixture f(AdmissionKind::kConnectionLimit);
  f.server.connlimit["app"] = 5;
  f.executor->Execute(f.target, f.state, false, Close("app", 2));
  // The statement fails: kept, and still applied as far as the decisions know.
  f.server.fail_statements = true;
  f.executor->Apply(f.target, f.state, false, {Open("app")}, false, Never);
  EXPECT_TRUE(f.journal.Find("p", "app").has_value());
  EXPECT_EQ(f.state.applied.at("app"), 2);
  // Disconnected: kept.
  f.server.fail_statements = false;
  f.server.connected = false;
  EXPECT_FALSE(f.executor->Undo(f.target, *f.journal.Find("p", "app"), false, "x"));
  EXPECT_TRUE(f.journal.Find("p", "app").has_value());
  // A standby cannot ALTER ROLE: kept.
  f.server.connected = true;
  EXPECT_FALSE(f.executor->Undo(f.target, *f.journal.Find("p", "app"), true, "x"));
  EXPECT_TRUE(f.journal.Find("p", "app").has_value());
  // Confirmed: gone.
  EXPECT_TRUE(f.executor->Undo(f.target, *f.journal.Find("p", "app"), false, "x"));
  EXPECT_FALSE(f.journal.Find("p", "app").has_value());
  EXPECT_EQ(f.server.connlimit["app"], 5);
}

TEST(Executor, ARoleWhoseOwnLimitIsTightEnoughIsLeftAsIs) {
  Fixture f(AdmissionKind::kConnectionLimit);
  f.server.connlimit["app"] = 2;
  f.executor->Execute(f.target, f.state, false, Close("app", 3));
  EXPECT_EQ(f.server.connlimit["app"], 2);
  EXPECT_FALSE(f.journal.Find("p", "app").has_value());
  EXPECT_EQ(f.state.applied.at("app"), 3);  // as if applied: not retried every poll
}

TEST(Executor, NoSuchRoleAndStandbyWithoutOverridesChangeNothing) {
  Fixture f(AdmissionKind::kConnectionLimit);
  f.executor->Execute(f.target, f.state, false, Close("ghost", 3));
  f.server.connlimit["app"] = -1;
  f.executor->Execute(f.target, f.state, true, Close("app", 3));
  EXPECT_TRUE(f.journal.Entries().empty());
  EXPECT_TRUE(f.state.applied.empty());
  EXPECT_EQ(f.server.connlimit["app"], -1);
}

TEST(Executor, DryRunChangesNothingAndRecordsEachTerminationOnce) {
  Fixture f(AdmissionKind::kConnectionLimit);
  f.server.connlimit["app"] = -1;
  std::vector<Action> actions{Kill(42), Close("app", 1)};
  f.executor->Apply(f.target, f.state, false, actions, true, Never);
  f.executor->Apply(f.target, f.state, false, actions, true, Never);
  EXPECT_EQ(f.server.log, std::vector<std::string>{"record wardend max_idle (dry)"});
  EXPECT_TRUE(f.journal.Entries().empty());
  EXPECT_TRUE(f.state.applied.empty());
}

TEST(Executor, TerminationsAreRecordedAndAStopRequestEndsTheRound) {
  Fixture f(AdmissionKind::kConnectionLimit);
  f.executor->Apply(f.target, f.state, false, {Kill(7)}, false, Never);
  EXPECT_EQ(f.server.log, (std::vector<std::string>{"terminate 7", "record wardend max_idle"}));
  f.server.log.clear();
  f.executor->Apply(f.target, f.state, false, {Kill(8)}, false, [] { return true; });
  EXPECT_TRUE(f.server.log.empty());
}

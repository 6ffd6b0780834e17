// The pause_pool emergency step: its configuration checks, its decisions
// (PAUSE on the way up, RESUME on the way down, with the hysteresis), the
// journal entry (written before the PAUSE, removed only once RESUME is
// confirmed) and the executor with a fake pgbouncer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "wardend/config.hpp"
#include "wardend/decide.hpp"
#include "wardend/executor.hpp"
#include "wardend/journal.hpp"

using namespace wardend;

namespace {

const char* kServer =
    "[[server]]\nname = \"p\"\ndsn = \"host=/tmp\"\npgbouncer_dsn = \"host=/tmp port=6432 "
    "dbname=pgbouncer\"\n";

std::string ErrorOf(const std::string& text) {
  try {
    ParseConfig(text, "w.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string TempPath(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("wardend-unit-pause-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / name);
  return (dir / name).string();
}

Snapshot Usage(double percent) {
  Snapshot s;
  s.usage_percent = percent;
  s.connections = static_cast<int>(percent);
  return s;
}

// pgbouncer's pools as the fake holds them; the journal is checked at PAUSE.
struct FakeBouncer {
  std::set<std::string> paused;
  bool reachable = true;
  bool pause_pending = false;  // PAUSE not answered within the timeout
  bool resume_fails = false;
  std::vector<std::string> log;
};

class FakeTarget : public ActionTarget {
 public:
  FakeTarget(FakeBouncer& b, Journal& j, std::string where = "127.0.0.1:6432")
      : b_(b), journal_(j), where_(std::move(where)) {}
  bool ok() const override { return true; }
  bool TerminateIfStill(const Action&) override { return false; }
  bool CanRecord() const override { return true; }
  void Record(const std::string& what, const Action& a, bool) override {
    b_.log.push_back("record " + what + " " + a.database);
  }
  AdmissionKind Preferred() const override { return AdmissionKind::kOverride; }
  AdmissionMechanism& Mechanism(AdmissionKind) override {
    throw std::logic_error("no admission mechanism in these tests");
  }
  std::string Bouncer() const override { return where_; }
  bool PausePool(const std::string& pool) override {
    if (!b_.reachable) throw PgError("could not connect to pgbouncer", "", true);
    if (pool == "nosuch") throw PgError("PAUSE nosuch: no such database: nosuch", "", false);
    // The rule under test: journaled before the PAUSE.
    auto e = journal_.FindPool("p", pool);
    if (!e || e->pgbouncer != where_) throw std::logic_error("paused before it was journaled");
    b_.paused.insert(pool);
    b_.log.push_back("PAUSE " + pool);
    return !b_.pause_pending;
  }
  void ResumePool(const std::string& pool) override {
    if (!b_.reachable || b_.resume_fails) throw PgError("RESUME failed", "", true);
    b_.paused.erase(pool);  // "not paused" counts as done
    b_.log.push_back("RESUME " + pool);
  }

 private:
  FakeBouncer& b_;
  Journal& journal_;
  std::string where_;
};

struct Fixture {
  Fixture() : journal(TempPath("j.state")), target(bouncer, journal) {
    Executor::Events ev;
    ev.action = [this](const std::string& kind, const std::string&) { actions.push_back(kind); };
    executor = std::make_unique<Executor>("p", journal, ev);
  }
  FakeBouncer bouncer;
  Journal journal;
  FakeTarget target;
  std::unique_ptr<Executor> executor;
  ServerState state;
  std::vector<std::string> actions;
};

Action Pause(const std::string& pool) {
  Action a;
  a.kind = Action::Kind::kPausePool;
  a.pool = pool;
  a.reason = "emergency 80%";
  return a;
}

Action Resume(const std::string& pool) {
  Action a;
  a.kind = Action::Kind::kResumePool;
  a.pool = pool;
  a.reason = "reason gone";
  return a;
}

auto Never = [] { return false; };

}  // namespace

TEST(PausePoolConfig, AStepNamesItsPool) {
  Config c = ParseConfig(std::string(kServer) +
                             "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = "
                             "\"app_db\"\n",
                         "w.toml");
  ASSERT_EQ(c.emergencies.size(), 1u);
  EXPECT_EQ(c.emergencies[0].action, EmergencyAction::kPausePool);
  EXPECT_EQ(c.emergencies[0].pool, "app_db");
  EXPECT_STREQ(ToString(c.emergencies[0].action), "pause_pool");
  // Two steps may pause two pools at the same percentage.
  EXPECT_EQ(ErrorOf(std::string(kServer) +
                    "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = \"a\"\n"
                    "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = \"b\"\n"),
            "");
}

TEST(PausePoolConfig, BadStepsAreRefusedWithFileLineAndKey) {
  const std::string s = kServer;  // 4 lines
  EXPECT_EQ(ErrorOf(s + "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\n"),
            "w.toml:5: key 'emergency[0].pool': is required for action \"pause_pool\" (a "
            "pgbouncer database)");
  EXPECT_EQ(ErrorOf(s + "[[emergency]]\nat_percent = 80\naction = \"terminate_idle\"\npool = "
                        "\"app\"\n"),
            "w.toml:8: key 'emergency[0].pool': applies to action \"pause_pool\" only");
  EXPECT_EQ(ErrorOf(s + "[[emergency]]\nat_percent = 80\naction = \"close_admission\"\npool = "
                        "\"app\"\n"),
            "w.toml:8: key 'emergency[0].pool': applies to action \"pause_pool\" only");
  EXPECT_EQ(ErrorOf(s + "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = \"a; "
                        "KILL b\"\n"),
            "w.toml:8: key 'emergency[0].pool': must be a pgbouncer database name of letters, "
            "digits and '_' (at most 63)");
  EXPECT_EQ(ErrorOf(s + "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = 3\n"),
            "w.toml:8: key 'emergency[0].pool': must be a string");
  EXPECT_EQ(ErrorOf(s + "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = \"a\"\n"
                        "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = \"a\"\n"),
            "w.toml:10: key 'emergency[1].at_percent': duplicate emergency step: emergency[0] "
            "already has this at_percent and action \"pause_pool\"");
  EXPECT_EQ(ErrorOf(s + "[[emergency]]\nat_percent = 80\naction = \"pause\"\n"),
            "w.toml:7: key 'emergency[0].action': must be \"terminate_idle\", "
            "\"close_admission\" or \"pause_pool\", not \"pause\"");
}

TEST(PausePoolConfig, EveryServerNeedsAPgbouncerDsn) {
  // The [[emergency]] may come before the [[server]]: checked once all are read.
  EXPECT_EQ(ErrorOf("[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = \"a\"\n"
                    "[[server]]\nname = \"q\"\ndsn = \"host=/tmp\"\n"),
            "w.toml:3: key 'emergency[0].action': \"pause_pool\" needs the pgbouncer_dsn of "
            "every [[server]]: server[0] (\"q\") has none");
  EXPECT_EQ(ErrorOf(std::string(kServer) +
                    "[[server]]\nname = \"q\"\ndsn = \"host=/tmp\"\n"
                    "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = \"a\"\n"),
            "w.toml:10: key 'emergency[0].action': \"pause_pool\" needs the pgbouncer_dsn of "
            "every [[server]]: server[1] (\"q\") has none");
}

TEST(PausePoolDecide, PausedOnTheWayUpResumedOnTheWayDown) {
  Config c = ParseConfig(std::string(kServer) +
                             "[daemon]\nhysteresis_percent = 5\n"
                             "[[emergency]]\nat_percent = 80\naction = \"pause_pool\"\npool = "
                             "\"app\"\n",
                         "w.toml");
  ServerState st;
  Decision d = Decide(c, Usage(50), st, 0);
  EXPECT_TRUE(d.actions.empty());

  d = Decide(c, Usage(81), st, 1);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kPausePool);
  EXPECT_EQ(d.actions[0].pool, "app");
  EXPECT_EQ(Describe(d.actions[0]), "pause pgbouncer pool app: emergency 80%: server usage 81.0%");
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_NE(d.events[0].find("pause_pool"), std::string::npos);
  // Not applied (the executor failed, or a dry run): asked again next poll.
  d = Decide(c, Usage(81), st, 2);
  ASSERT_EQ(d.actions.size(), 1u);
  st.paused.insert("app");  // as the executor records it
  EXPECT_TRUE(Decide(c, Usage(90), st, 3).actions.empty());
  // Inside the hysteresis band: still paused.
  EXPECT_TRUE(Decide(c, Usage(76), st, 4).actions.empty());
  d = Decide(c, Usage(74), st, 5);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kResumePool);
  EXPECT_EQ(d.actions[0].pool, "app");
  EXPECT_STREQ(ToString(d.actions[0].kind), "resume_pool");
  // A RESUME that failed is asked again.
  EXPECT_EQ(Decide(c, Usage(10), st, 6).actions.size(), 1u);
  st.paused.clear();
  EXPECT_TRUE(Decide(c, Usage(10), st, 7).actions.empty());
}

TEST(PausePoolDecide, APoolPausedByAPreviousRunIsResumedOnlyOnceNoStepNeedsIt) {
  Config c = ParseConfig(std::string(kServer) +
                             "[[emergency]]\nat_percent = 60\naction = \"pause_pool\"\npool = "
                             "\"app\"\n",
                         "w.toml");
  ServerState st;
  st.paused.insert("app");                                   // AdoptPaused at the first connection
  EXPECT_TRUE(Decide(c, Usage(70), st, 0).actions.empty());  // still needed: no RESUME/PAUSE
  Decision d = Decide(c, Usage(20), st, 1);
  ASSERT_EQ(d.actions.size(), 1u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kResumePool);
  // A pool no step names any more (the configuration changed) is resumed.
  ServerState other;
  other.paused.insert("old_pool");
  d = Decide(c, Usage(70), other, 0);
  ASSERT_EQ(d.actions.size(), 2u);
  EXPECT_EQ(d.actions[0].kind, Action::Kind::kPausePool);
  EXPECT_EQ(d.actions[1].kind, Action::Kind::kResumePool);
  EXPECT_EQ(d.actions[1].pool, "old_pool");
}

TEST(PausePoolJournal, EntriesRoundTripBesideRoleEntries) {
  JournalEntry role;
  role.server = "p";
  role.role = "app";
  role.applied_limit = 3;
  JournalEntry pool;
  pool.server = "p";
  pool.identity = "7/main";
  pool.mechanism = AdmissionKind::kPausePool;
  pool.pool = "app";
  pool.pgbouncer = "127.0.0.1:6432";
  pool.since = 12.5;
  auto back = ParseJournal(SerializeJournal({role, pool}));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0], role);
  EXPECT_EQ(back[1], pool);
  EXPECT_EQ(SerializeJournal({role}).find("pgbouncer"), std::string::npos);  // format unchanged
  EXPECT_THROW(
      ParseJournal(R"({"version":1,"entries":[{"server":"p","role":"",)"
                   R"("mechanism":"pause_pool","original_limit":-1,"applied_limit":-1}]})"),
      std::runtime_error);

  // A role and a pool of the same name are two entries.
  Journal j(TempPath("both.state"));
  j.Upsert(role);
  pool.identity = "";
  j.Upsert(pool);
  EXPECT_EQ(j.Entries().size(), 2u);
  EXPECT_TRUE(j.Find("p", "app").has_value());
  EXPECT_EQ(j.Find("p", "app")->mechanism, AdmissionKind::kOverride);
  EXPECT_TRUE(j.FindPool("p", "app").has_value());
  j.RemovePool("p", "app");
  EXPECT_TRUE(j.Find("p", "app").has_value());
  EXPECT_FALSE(j.FindPool("p", "app").has_value());
}

TEST(PausePoolExecutor, JournaledBeforeThePauseAndRemovedOnlyOnceResumed) {
  Fixture f;
  f.executor->Apply(f.target, f.state, false, {Pause("app")}, false, Never);
  EXPECT_EQ(f.bouncer.paused, std::set<std::string>{"app"});
  EXPECT_EQ(f.state.paused, std::set<std::string>{"app"});
  auto e = f.journal.FindPool("p", "app");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->pgbouncer, "127.0.0.1:6432");
  EXPECT_EQ(f.actions, std::vector<std::string>{"pause_pool"});
  EXPECT_EQ(f.bouncer.log.back(), "record wardend pause_pool app");

  // A failed RESUME keeps the entry and the pool known as paused.
  f.bouncer.resume_fails = true;
  f.executor->Apply(f.target, f.state, false, {Resume("app")}, false, Never);
  EXPECT_TRUE(f.journal.FindPool("p", "app").has_value());
  EXPECT_EQ(f.state.paused.size(), 1u);
  f.bouncer.resume_fails = false;
  f.executor->Apply(f.target, f.state, false, {Resume("app")}, false, Never);
  EXPECT_TRUE(f.bouncer.paused.empty());
  EXPECT_FALSE(f.journal.FindPool("p", "app").has_value());
  EXPECT_TRUE(f.state.paused.empty());
  EXPECT_EQ(f.actions, (std::vector<std::string>{"pause_pool", "resume_pool"}));
  EXPECT_EQ(f.bouncer.log.back(), "record wardend resume_pool app");
}

TEST(PausePoolExecutor, APauseStillUnderWayIsInForce) {
  Fixture f;
  f.bouncer.pause_pending = true;
  f.executor->Apply(f.target, f.state, false, {Pause("app")}, false, Never);
  EXPECT_EQ(f.state.paused.size(), 1u);
  EXPECT_TRUE(f.journal.FindPool("p", "app").has_value());
}

TEST(PausePoolExecutor, AFailedPauseLeavesNothingOrKeepsWhatMayHaveTaken) {
  Fixture f;
  // pgbouncer answered with an error: nothing paused, nothing journaled.
  f.executor->Apply(f.target, f.state, false, {Pause("nosuch")}, false, Never);
  EXPECT_TRUE(f.journal.Entries().empty());
  EXPECT_TRUE(f.state.paused.empty());
  // The connection was lost: the PAUSE may have reached it; resumed later.
  f.bouncer.reachable = false;
  f.executor->Apply(f.target, f.state, false, {Pause("app")}, false, Never);
  EXPECT_TRUE(f.journal.FindPool("p", "app").has_value());
  EXPECT_EQ(f.state.paused.size(), 1u);
}

TEST(PausePoolExecutor, DryRunPausesNothing) {
  Fixture f;
  f.executor->Apply(f.target, f.state, false, {Pause("app")}, true, Never);
  EXPECT_TRUE(f.bouncer.paused.empty());
  EXPECT_TRUE(f.journal.Entries().empty());
  EXPECT_TRUE(f.state.paused.empty());
}

TEST(PausePoolExecutor, AfterAKillThePausedPoolsAreAdoptedAndUndoneAtStop) {
  std::string path = TempPath("kill.state");
  {
    Journal j(path);
    JournalEntry e;
    e.server = "p";
    e.mechanism = AdmissionKind::kPausePool;
    e.pool = "app";
    e.pgbouncer = "127.0.0.1:6432";
    j.Upsert(e);
  }
  FakeBouncer b;
  b.paused.insert("app");
  Journal j(path);
  j.Load();
  FakeTarget t(b, j);
  Executor ex("p", j, {});
  ServerState st;
  // The first connection: known as paused, not resumed there and then.
  ex.AdoptPaused(st);
  ex.UndoAll(t, false, "left by a previous run", true);
  EXPECT_EQ(st.paused, std::set<std::string>{"app"});
  EXPECT_EQ(b.paused.size(), 1u);
  // wardend stopping: resumed, and the journal is empty.
  ex.UndoAll(t, false, "wardend stopping");
  EXPECT_TRUE(b.paused.empty());
  EXPECT_TRUE(j.Entries().empty());
}

TEST(PausePoolExecutor, AServerWithoutPgbouncerPausesNothing) {
  FakeBouncer b;
  Journal j(TempPath("none.state"));
  FakeTarget t(b, j, "");
  Executor ex("p", j, {});
  ServerState st;
  ex.Apply(t, st, false, {Pause("app")}, false, Never);
  EXPECT_TRUE(j.Entries().empty());
  EXPECT_TRUE(st.paused.empty());
}

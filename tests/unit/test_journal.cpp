// The state file: atomic writes, and the replay of a previous run's changes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "wardend/journal.hpp"

using namespace wardend;

namespace {

std::string TempPath(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("wardend-unit-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(Journal, SerializeAndParseRoundTrip) {
  std::vector<JournalEntry> e = {
      {"primary", "app_api", AdmissionKind::kConnectionLimit, -1, 40, 1.5},
      {"replica", "batch \"x\"", AdmissionKind::kOverride, -1, 3, 2}};
  auto back = ParseJournal(SerializeJournal(e));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_TRUE(back[0] == e[0]);
  EXPECT_TRUE(back[1] == e[1]);
  EXPECT_TRUE(ParseJournal("").empty());
}

TEST(Journal, MalformedContentIsAnError) {
  EXPECT_THROW(ParseJournal("{"), std::runtime_error);
  EXPECT_THROW(ParseJournal("{\"version\": 2, \"entries\": []}"), std::runtime_error);
  EXPECT_THROW(ParseJournal("{\"version\": 1, \"entries\": [{\"server\": \"p\"}]}"),
               std::runtime_error);
  EXPECT_THROW(
      ParseJournal(
          "{\"version\":1,\"entries\":[{\"server\":\"p\",\"role\":\"r\",\"mechanism\":\"x\","
          "\"original_limit\":1,\"applied_limit\":2}]}"),
      std::runtime_error);
}

TEST(Journal, EveryChangeIsOnDiskBeforeTheCallReturns) {
  std::string path = TempPath("j1.state");
  std::filesystem::remove(path);
  Journal j(path);
  j.Load();  // missing file: empty
  EXPECT_TRUE(j.Entries().empty());
  j.Upsert({"primary", "api", AdmissionKind::kConnectionLimit, 25, 10, 1});
  auto on_disk = ParseJournal(Read(path));
  ASSERT_EQ(on_disk.size(), 1u);
  EXPECT_EQ(on_disk[0].original_limit, 25);
  // Tightening keeps one entry per (server, role).
  j.Upsert({"primary", "api", AdmissionKind::kConnectionLimit, 25, 5, 1});
  on_disk = ParseJournal(Read(path));
  ASSERT_EQ(on_disk.size(), 1u);
  EXPECT_EQ(on_disk[0].applied_limit, 5);
  j.Upsert({"replica", "api", AdmissionKind::kOverride, -1, 5, 1});
  j.Remove("primary", "api");
  on_disk = ParseJournal(Read(path));
  ASSERT_EQ(on_disk.size(), 1u);
  EXPECT_EQ(on_disk[0].server, "replica");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Journal, ANewProcessReplaysWhatThePreviousOneLeft) {
  std::string path = TempPath("j2.state");
  std::filesystem::remove(path);
  {
    Journal crashed(path);
    crashed.Upsert({"primary", "api", AdmissionKind::kConnectionLimit, -1, 3, 1});
    crashed.Upsert({"primary", "batch", AdmissionKind::kConnectionLimit, 8, 2, 1});
    crashed.Upsert({"replica", "batch", AdmissionKind::kOverride, -1, 2, 1});
    // ... kill -9: no destructor work is needed, the file is already complete.
  }
  Journal next(path);
  next.Load();
  auto primary = next.EntriesFor("primary");
  ASSERT_EQ(primary.size(), 2u);
  EXPECT_EQ(primary[0].role, "api");
  EXPECT_EQ(primary[0].original_limit, -1);
  EXPECT_EQ(primary[1].original_limit, 8);
  ASSERT_TRUE(next.Find("replica", "batch").has_value());
  EXPECT_EQ(next.Find("replica", "batch")->mechanism, AdmissionKind::kOverride);
  EXPECT_FALSE(next.Find("replica", "api").has_value());
}

TEST(Journal, AFailedWriteLeavesTheJournalUnchanged) {
  Journal j("/nonexistent-dir/wardend.state");
  EXPECT_THROW(j.Upsert({"p", "r", AdmissionKind::kConnectionLimit, -1, 1, 1}), std::runtime_error);
  EXPECT_TRUE(j.Entries().empty());
}

TEST(Journal, ThePreviousLimitSurvivesACrashBetweenJournalAndChange) {
  JournalEntry e{"primary", "api", AdmissionKind::kConnectionLimit, -1, 4, 1};
  e.previous_limit = 10;  // 10 was in force; 4 journaled, maybe not applied
  auto back = ParseJournal(SerializeJournal({e}));
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].previous_limit, 10);
  // Files written before the field existed read as "nothing before".
  auto old = ParseJournal(
      "{\"version\":1,\"entries\":[{\"server\":\"p\",\"role\":\"r\",\"mechanism\":\"alter_role\","
      "\"original_limit\":-1,\"applied_limit\":2}]}");
  EXPECT_EQ(old[0].previous_limit, -1);
}

TEST(Journal, TheTempFileIsNeverFollowedThroughASymlink) {
  const std::string path = TempPath("symlink.state");
  const std::string victim = TempPath("victim.txt");
  std::filesystem::remove(path);
  std::filesystem::remove(path + ".tmp");
  { std::ofstream(victim) << "not wardend's\n"; }
  std::filesystem::create_symlink(victim, path + ".tmp");
  WriteFileAtomic(path, "{}\n");
  EXPECT_EQ(Read(victim), "not wardend's\n");
  EXPECT_EQ(Read(path), "{}\n");
  EXPECT_FALSE(std::filesystem::is_symlink(path));
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(Journal, EntriesFollowTheServersIdentityAcrossARename) {
  const std::string path = TempPath("rename.state");
  std::filesystem::remove(path);
  Journal j(path);
  JournalEntry e;
  e.server = "old-name";
  e.role = "app";
  j.Upsert(e);  // written before the identity was known
  j.Adopt("old-name", "7300000000000000001/main:5432");
  EXPECT_EQ(j.Entries().at(0).identity, "7300000000000000001/main:5432");
  // wardend restarts with the [[server]] renamed: the entry is found by identity.
  Journal again(path);
  again.Load();
  EXPECT_TRUE(again.EntriesFor("new-name").empty());
  again.Adopt("new-name", "7300000000000000001/main:5432");
  ASSERT_EQ(again.EntriesFor("new-name", "7300000000000000001/main:5432").size(), 1u);
  EXPECT_EQ(again.Entries().at(0).server, "new-name");
  // Another server under the old name does not take it.
  EXPECT_TRUE(again.EntriesFor("old-name", "7300000000000000002/main:5432").empty());
  again.Remove("new-name", "app", "7300000000000000001/main:5432");
  EXPECT_TRUE(again.Entries().empty());
}

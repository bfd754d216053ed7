// Commits by ingestion (StoreOptions::ingest_min_bytes) and records staged before their
// commit (StagedRecords): byte-identical results, overwrites that leave no stale keys,
// refusals that store nothing, and the states a crash can leave (staged files only).
// The plain commit paths run through every StoreTest twice (store_test.cc).
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/internal/ingest.h"
#include "storage/key_schema.h"
#include "storage/store.h"
#include "tests/storage/test_containers.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::storage {
namespace {

using ::deltaserve::storage::testing::MakeContainer;
using ::deltaserve::storage::testing::TestTensor;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const std::vector<TestTensor> kThree = {{"w0", {4, 8}, 1}, {"w1", {16}, 2}, {"w2", {2, 3, 5}, 3}};

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = tmp_.File("db");
    options_.sync_writes = false;
    Reopen();
  }
  void TearDown() override { store_.reset(); }
  void Reopen() {
    store_.reset();
    ASSERT_OK_AND_ASSIGN(store_, DeltaStore::Open(options_));
  }
  std::vector<std::string> StagingFiles() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(options_.path + "/ingest")) {
      names.push_back(e.path().filename().string());
    }
    return names;
  }
  // Stages the first `n` records of `reader` (all if n < 0).
  std::unique_ptr<StagedRecords> Stage(const std::string& task,
                                       const codec::ContainerReader& reader, int n = -1) {
    absl::StatusOr<std::unique_ptr<StagedRecords>> staged = store_->StageRecords("acme", task);
    EXPECT_THAT(staged, IsOk());
    if (!staged.ok()) return nullptr;
    const size_t count = n < 0 ? reader.num_records() : static_cast<size_t>(n);
    for (size_t i = 0; i < count; ++i) EXPECT_THAT((*staged)->Add(reader.record_bytes(i)), IsOk());
    return *std::move(staged);
  }
  // Whether the raw database holds `key` in the records family (store closed first).
  bool RawRecordsHas(const std::string& key) {
    store_.reset();
    bool found = false;
    {
      const ::deltaserve::storage::testing::RawStore raw(options_.path);
      EXPECT_TRUE(raw.ok());
      found = raw.RecordsHas(key);
    }
    Reopen();
    return found;
  }

  ::deltaserve::testing::ScopedTempDir tmp_;
  StoreOptions options_;
  std::unique_ptr<DeltaStore> store_;
};

// An ingestion needs room for the table files it writes now: keys and values plus a
// file's overhead per family. Staged records are not among the writes (their file is
// on disk already); a commit once asked for 2 x the task's bytes on top of them.
TEST(IngestFootprintTest, KeysValuesAndOneFileOverheadPerFamily) {
  rocksdb::ColumnFamilyHandle* a = reinterpret_cast<rocksdb::ColumnFamilyHandle*>(0x10);
  rocksdb::ColumnFamilyHandle* b = reinterpret_cast<rocksdb::ColumnFamilyHandle*>(0x20);
  const std::string big(100000, 'x');
  std::vector<KeyWrite> writes;
  writes.push_back(KeyWrite{a, "key1", rocksdb::Slice(big)});
  writes.push_back(KeyWrite{a, "k2", rocksdb::Slice("abc")});
  writes.push_back(KeyWrite{b, "deleted", std::nullopt});
  EXPECT_EQ(IngestFootprint(writes), 4 + 100000 + 2 + 3 + 7 + 2 * kTableFileOverheadBytes);
  EXPECT_EQ(IngestFootprint({}), 0u);
}

TEST_F(IngestTest, StagedCommitIsByteIdenticalAndSurvivesReopen) {
  const auto bytes = MakeContainer(kThree, 1);
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(bytes));
  std::unique_ptr<StagedRecords> staged = Stage("t", reader);
  EXPECT_EQ(staged->records(), 3u);
  EXPECT_THAT(StagingFiles(), ::testing::SizeIs(1));
  CommitOutcome outcome = CommitOutcome::kUnchanged;
  ASSERT_OK_AND_ASSIGN(TaskInfo info,
                       store_->CommitTask("acme", "t", reader, {}, &outcome, staged.get()));
  staged.reset();
  EXPECT_EQ(outcome, CommitOutcome::kCreated);
  EXPECT_EQ(info.total_bytes, bytes.size());
  EXPECT_EQ(info.tensors[2].name, "w2");
  EXPECT_THAT(StagingFiles(), IsEmpty());  // linked into the database, spare name gone
  ASSERT_OK_AND_ASSIGN(auto back, store_->AssembleContainer("acme", "t"));
  EXPECT_EQ(back, bytes);
  Reopen();
  ASSERT_OK_AND_ASSIGN(back, store_->AssembleContainer("acme", "t"));
  EXPECT_EQ(back, bytes);
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, bytes.size());
  EXPECT_EQ(usage.tasks, 1u);
}

// An overwrite with fewer tensors and other side files, staged: no key of the old task
// is left behind, and a reader opened before it still reads the old task.
TEST_F(IngestTest, StagedOverwriteLeavesNoStaleKeys) {
  const auto first = MakeContainer(kThree, 1);
  const std::string a = "aaaa", b = "bb";
  CommitOptions with_files;
  const std::vector<SideFile> files = {{"a.txt", a}, {"b.txt", b}};
  with_files.side_files = files;
  ASSERT_OK_AND_ASSIGN(auto first_reader, codec::ContainerReader::Parse(first));
  ASSERT_THAT(store_->CommitTask("acme", "t", first_reader, with_files), IsOk());
  ASSERT_OK_AND_ASSIGN(auto old_view, store_->OpenTask("acme", "t"));

  const auto second = MakeContainer({{"v", {8}, 9}}, 1);
  ASSERT_OK_AND_ASSIGN(auto second_reader, codec::ContainerReader::Parse(second));
  std::unique_ptr<StagedRecords> staged = Stage("t", second_reader);
  CommitOptions overwrite;
  overwrite.overwrite = true;
  const std::vector<SideFile> new_files = {{"b.txt", "new"}};
  overwrite.side_files = new_files;
  CommitOutcome outcome = CommitOutcome::kUnchanged;
  ASSERT_THAT(store_->CommitTask("acme", "t", second_reader, overwrite, &outcome, staged.get()),
              IsOk());
  staged.reset();
  EXPECT_EQ(outcome, CommitOutcome::kReplaced);
  ASSERT_OK_AND_ASSIGN(auto old_bytes, old_view->AssembleContainer());
  EXPECT_EQ(old_bytes, first);
  EXPECT_THAT(old_view->ReadSideFile("a.txt"), IsOk());
  old_view.reset();
  ASSERT_OK_AND_ASSIGN(auto back, store_->AssembleContainer("acme", "t"));
  EXPECT_EQ(back, second);
  ASSERT_OK_AND_ASSIGN(std::string b_back, store_->ReadSideFile("acme", "t", "b.txt"));
  EXPECT_EQ(b_back, "new");
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, second.size() + 3);
  EXPECT_FALSE(RawRecordsHas(RecordKey("acme", "t", 1)));
  EXPECT_FALSE(RawRecordsHas(RecordKey("acme", "t", 2)));
  EXPECT_FALSE(RawRecordsHas(SideFileKey("acme", "t", "a.txt")));
  EXPECT_TRUE(RawRecordsHas(RecordKey("acme", "t", 0)));
}

TEST_F(IngestTest, StagedRecordsOfAnotherContainerAreRefusedAndNothingIsStored) {
  const auto bytes = MakeContainer(kThree, 1);
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(bytes));
  std::unique_ptr<StagedRecords> partial = Stage("t", reader, 2);
  EXPECT_THAT(store_->CommitTask("acme", "t", reader, {}, nullptr, partial.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("staged records")));
  std::unique_ptr<StagedRecords> other_task = Stage("u", reader);
  EXPECT_THAT(store_->CommitTask("acme", "t", reader, {}, nullptr, other_task.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("staged records")));
  partial.reset();
  other_task.reset();
  EXPECT_THAT(store_->GetTask("acme", "t"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(StagingFiles(), IsEmpty());
}

TEST_F(IngestTest, CorruptStagedRecordIsDataLossAndNothingIsStored) {
  auto bytes = MakeContainer(kThree, 1);
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(bytes));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StagedRecords> staged, store_->StageRecords("acme", "t"));
  ASSERT_THAT(staged->Add(reader.record_bytes(0)), IsOk());
  std::vector<uint8_t> bad(reader.record_bytes(1).begin(), reader.record_bytes(1).end());
  bad[bad.size() / 2] ^= 0x10;
  EXPECT_THAT(staged->Add(bad),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("record 1")));
  EXPECT_THAT(staged->Add(reader.record_bytes(2)), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(staged->records(), 1u);
  EXPECT_THAT(store_->CommitTask("acme", "t", reader, {}, nullptr, staged.get()),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store_->GetTask("acme", "t"), StatusIs(absl::StatusCode::kNotFound));
}

// A process that dies after staging (and after writing other staged files) but before
// the ingestion: after a restart the task does not exist, the staging directory is
// empty and the store takes commits.
TEST_F(IngestTest, CrashBeforeIngestionLeavesNoTaskAndNoFiles) {
  const auto bytes = MakeContainer(kThree, 1);
  store_.reset();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto store = DeltaStore::Open(options_);
    if (!store.ok()) _exit(2);
    auto reader = codec::ContainerReader::Parse(bytes);
    auto staged = (*store)->StageRecords("acme", "t");
    if (!reader.ok() || !staged.ok()) _exit(3);
    for (size_t i = 0; i < reader->num_records(); ++i) {
      if (!(*staged)->Add(reader->record_bytes(i)).ok()) _exit(4);
    }
    std::FILE* f = std::fopen((options_.path + "/ingest/7-1.sst").c_str(), "w");
    if (f == nullptr) _exit(5);
    std::fputs("half a table file", f);
    std::fclose(f);
    _exit(0);  // no destructor runs: as if killed
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_THAT(StagingFiles(), ::testing::SizeIs(2));  // what the crash left
  Reopen();
  EXPECT_THAT(StagingFiles(), IsEmpty());
  EXPECT_THAT(store_->GetTask("acme", "t"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(bytes));
  ASSERT_THAT(store_->CommitTask("acme", "t", reader), IsOk());
  ASSERT_OK_AND_ASSIGN(auto back, store_->AssembleContainer("acme", "t"));
  EXPECT_EQ(back, bytes);
}

// Large commits go through ingestion by default; re-committing the same bytes writes
// nothing; a delete removes every key (the table file's range is compacted away).
TEST_F(IngestTest, LargeCommitIsIngestedAndDeletedWhole) {
  const auto big = MakeContainer({{"big", {int64_t{3} << 20}, 5}, {"small", {7}, 6}});
  ASSERT_GE(big.size(), options_.ingest_min_bytes);
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(big));
  ASSERT_THAT(store_->CommitTask("acme", "big", reader), IsOk());
  // Not in the write-ahead log: the log holds no record of it.
  uint64_t wal = 0;
  for (const auto& e : std::filesystem::directory_iterator(options_.path)) {
    if (e.path().extension() == ".log") wal += e.file_size();
  }
  EXPECT_LT(wal, 1u << 20);
  CommitOutcome outcome = CommitOutcome::kCreated;
  ASSERT_THAT(store_->CommitTask("acme", "big", reader, {}, &outcome), IsOk());
  EXPECT_EQ(outcome, CommitOutcome::kUnchanged);
  Reopen();
  ASSERT_OK_AND_ASSIGN(auto back, store_->AssembleContainer("acme", "big"));
  EXPECT_EQ(back, big);
  ASSERT_THAT(store_->DeleteTask("acme", "big"), IsOk());
  EXPECT_FALSE(RawRecordsHas(RecordKey("acme", "big", 0)));
  EXPECT_FALSE(RawRecordsHas(HeaderKey("acme", "big")));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.tasks, 0u);
}

}  // namespace
}  // namespace deltaserve::storage

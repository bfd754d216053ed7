#include "storage/store.h"

#include <xxhash.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/internal/block_memory.h"
#include "storage/key_schema.h"
#include "tests/storage/test_containers.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::storage {
namespace {

using ::deltaserve::storage::testing::MakeContainer;
using ::deltaserve::storage::testing::TestTensor;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<uint8_t> ToVec(absl::Span<const uint8_t> s) { return {s.begin(), s.end()}; }

// Every test twice: commits through the write-ahead log (a WriteBatch: the default for
// these small tasks) and ingested as table files (StoreOptions::ingest_min_bytes = 0).
class StoreTest : public ::testing::TestWithParam<uint64_t> {
 protected:
  void SetUp() override {
    dir_ = tmp_.path() / "db";
    options_.path = dir_.string();
    options_.sync_writes = false;
    options_.ingest_min_bytes = GetParam();
    Reopen();
  }
  void TearDown() override {
    store_.reset();  // close the database before tmp_ removes it
  }
  void Reopen() {
    store_.reset();
    auto store = DeltaStore::Open(options_);
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
  }
  // Parses `bytes` (kept alive by the caller) and commits it.
  absl::StatusOr<TaskInfo> Commit(const std::string& tenant, const std::string& task,
                                  const std::vector<uint8_t>& bytes, CommitOptions opts = {}) {
    absl::StatusOr<codec::ContainerReader> reader = codec::ContainerReader::Parse(bytes);
    if (!reader.ok()) return reader.status();
    return store_->CommitTask(tenant, task, *reader, opts);
  }

  ::deltaserve::testing::ScopedTempDir tmp_;
  std::filesystem::path dir_;
  StoreOptions options_;
  std::unique_ptr<DeltaStore> store_;
};

const std::vector<TestTensor> kThree = {{"w0", {4, 8}, 1}, {"w1", {16}, 2}, {"w2", {2, 3, 5}, 3}};

// New-user trial: two same-size containers committed within one second looked like
// one version to the pull's streams (created_unix, size, base). The container's
// content hash (the value StreamDelta reports) tells them apart, and survives a reopen.
TEST_P(StoreTest, SameSizeOverwritesInOneSecondHaveDistinctContentHashes) {
  const std::vector<uint8_t> x = MakeContainer({{"w", {4, 8}, 1}});
  const std::vector<uint8_t> y = MakeContainer({{"w", {4, 8}, 2}});
  ASSERT_EQ(x.size(), y.size());
  CommitOptions opts;
  opts.created_unix = 1700000000;
  opts.overwrite = true;
  ASSERT_OK_AND_ASSIGN(TaskInfo first, Commit("acme", "mix", x, opts));
  ASSERT_OK_AND_ASSIGN(TaskInfo second, Commit("acme", "mix", y, opts));
  EXPECT_EQ(first.container_xxh3_64, XXH3_64bits(x.data(), x.size()));
  EXPECT_EQ(second.container_xxh3_64, XXH3_64bits(y.data(), y.size()));
  EXPECT_NE(first.container_xxh3_64, second.container_xxh3_64);
  Reopen();
  ASSERT_OK_AND_ASSIGN(TaskInfo stored, store_->GetTask("acme", "mix"));
  EXPECT_EQ(stored.container_xxh3_64, XXH3_64bits(y.data(), y.size()));
  EXPECT_EQ(stored.created_unix, first.created_unix);
  EXPECT_EQ(stored.total_bytes, first.total_bytes);
}

TEST_P(StoreTest, CommitAndReadBackByteIdentical) {
  const std::vector<uint8_t> bytes = MakeContainer(kThree, 0x5a);
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(bytes));
  CommitOptions opts;
  opts.created_unix = 1700000000;
  ASSERT_OK_AND_ASSIGN(TaskInfo committed, store_->CommitTask("acme", "chat-v1", reader, opts));

  ASSERT_OK_AND_ASSIGN(TaskInfo info, store_->GetTask("acme", "chat-v1"));
  EXPECT_EQ(info.tenant, "acme");
  EXPECT_EQ(info.task, "chat-v1");
  EXPECT_EQ(info.created_unix, 1700000000);
  EXPECT_EQ(info.base_hash, reader.header().base_hash);
  EXPECT_EQ(info.base_hash[0], 0x5a);
  EXPECT_EQ(info.metadata, (std::map<std::string, std::string>{{"tool", "store_test"}}));
  EXPECT_EQ(info.total_bytes, bytes.size());
  EXPECT_EQ(info.header_bytes, reader.header_bytes().size());
  EXPECT_EQ(info.weights, 32u + 16u + 30u);
  ASSERT_EQ(info.tensors.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(info.tensors[i].name, kThree[i].name);
    EXPECT_EQ(info.tensors[i].shape, kThree[i].shape);
    EXPECT_EQ(info.tensors[i].dtype, codec::DType::kF32);
    EXPECT_EQ(info.tensors[i].encoding, codec::Encoding::kRaw);
    EXPECT_EQ(info.tensors[i].record_bytes, reader.record_bytes(i).size());
  }
  EXPECT_DOUBLE_EQ(info.bits_per_weight, 8.0 * bytes.size() / 78.0);
  EXPECT_EQ(committed.tensors, info.tensors);
  EXPECT_DOUBLE_EQ(committed.bits_per_weight, info.bits_per_weight);

  for (size_t i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(StoredRecord rec, store_->ReadRecord("acme", "chat-v1", i));
    EXPECT_EQ(ToVec(rec.bytes()), ToVec(reader.record_bytes(i))) << "record " << i;
    EXPECT_EQ(rec.record().info.name, kThree[i].name);
    EXPECT_EQ(rec.record().info.shape, kThree[i].shape);
    ASSERT_OK_AND_ASSIGN(auto original, reader.record(i));
    EXPECT_EQ(ToVec(rec.record().payload), ToVec(original.payload));
  }
  ASSERT_OK_AND_ASSIGN(StoredRecord w2, store_->ReadRecordByName("acme", "chat-v1", "w2"));
  EXPECT_EQ(ToVec(w2.bytes()), ToVec(reader.record_bytes(2)));

  ASSERT_OK_AND_ASSIGN(auto header, store_->ReadHeaderBytes("acme", "chat-v1"));
  EXPECT_EQ(header, ToVec(reader.header_bytes()));
  ASSERT_OK_AND_ASSIGN(auto assembled, store_->AssembleContainer("acme", "chat-v1"));
  EXPECT_EQ(assembled, bytes);

  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, bytes.size());
  EXPECT_EQ(usage.tasks, 1u);
}

TEST_P(StoreTest, ReaderErrors) {
  const auto bytes = MakeContainer(kThree);
  ASSERT_THAT(Commit("acme", "t", bytes), IsOk());
  EXPECT_THAT(store_->ReadRecord("acme", "t", 3), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(store_->ReadRecordByName("acme", "t", "nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'nope'")));
  EXPECT_THAT(store_->ReadRecord("acme", "missing", 0), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->AssembleContainer("acme", "missing"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'missing'")));
}

TEST_P(StoreTest, EmptyContainer) {
  const auto bytes = MakeContainer({});
  ASSERT_OK_AND_ASSIGN(TaskInfo info, Commit("acme", "empty", bytes));
  EXPECT_EQ(info.weights, 0u);
  EXPECT_EQ(info.bits_per_weight, 0.0);
  ASSERT_OK_AND_ASSIGN(auto assembled, store_->AssembleContainer("acme", "empty"));
  EXPECT_EQ(assembled, bytes);
}

TEST_P(StoreTest, OverwriteAndAlreadyExists) {
  const auto first = MakeContainer(kThree);
  const auto second = MakeContainer({{"w0", {2, 2}, 9}});
  ASSERT_THAT(Commit("acme", "t", first), IsOk());
  EXPECT_THAT(Commit("acme", "t", second),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("'t'")));
  ASSERT_OK_AND_ASSIGN(auto still, store_->AssembleContainer("acme", "t"));
  EXPECT_EQ(still, first);

  CommitOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_THAT(Commit("acme", "t", second, overwrite), IsOk());
  ASSERT_OK_AND_ASSIGN(TaskInfo info, store_->GetTask("acme", "t"));
  ASSERT_EQ(info.tensors.size(), 1u);
  EXPECT_EQ(info.tensors[0].shape, (std::vector<int64_t>{2, 2}));
  ASSERT_OK_AND_ASSIGN(auto now, store_->AssembleContainer("acme", "t"));
  EXPECT_EQ(now, second);
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, second.size());
  EXPECT_EQ(usage.tasks, 1u);
}

TEST_P(StoreTest, DeleteTask) {
  const auto a = MakeContainer(kThree);
  const auto b = MakeContainer({{"x", {3}, 4}});
  ASSERT_THAT(Commit("acme", "a", a), IsOk());
  ASSERT_THAT(Commit("acme", "b", b), IsOk());
  ASSERT_THAT(store_->DeleteTask("acme", "a"), IsOk());
  EXPECT_THAT(store_->DeleteTask("acme", "a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->GetTask("acme", "a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->ReadRecord("acme", "a", 0), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, b.size());
  EXPECT_EQ(usage.tasks, 1u);

  ASSERT_THAT(store_->DeleteTask("acme", "b"), IsOk());
  ASSERT_OK_AND_ASSIGN(usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, 0u);
  EXPECT_EQ(usage.tasks, 0u);
  ASSERT_OK_AND_ASSIGN(auto tasks, store_->ListTasks("acme"));
  EXPECT_THAT(tasks, IsEmpty());
  ASSERT_OK_AND_ASSIGN(auto tenants, store_->ListTenants());
  EXPECT_THAT(tenants, IsEmpty());

  // A deleted name can be committed again without overwrite.
  ASSERT_THAT(Commit("acme", "a", b), IsOk());
}

TEST_P(StoreTest, TenantsAreIsolated) {
  const auto bytes = MakeContainer(kThree);
  // "a" is a prefix of "ab": a prefix scan of "a" must not see "ab"'s tasks.
  ASSERT_THAT(Commit("a", "t1", bytes), IsOk());
  ASSERT_THAT(Commit("a", "t2", bytes), IsOk());
  ASSERT_THAT(Commit("ab", "only-ab", bytes), IsOk());
  ASSERT_THAT(Commit("b", "t1", MakeContainer({{"y", {1}, 5}})), IsOk());

  ASSERT_OK_AND_ASSIGN(auto a_tasks, store_->ListTasks("a"));
  ASSERT_EQ(a_tasks.size(), 2u);
  EXPECT_EQ(a_tasks[0].task, "t1");
  EXPECT_EQ(a_tasks[1].task, "t2");
  EXPECT_EQ(a_tasks[0].tenant, "a");
  ASSERT_OK_AND_ASSIGN(auto ab_tasks, store_->ListTasks("ab"));
  ASSERT_EQ(ab_tasks.size(), 1u);
  EXPECT_EQ(ab_tasks[0].task, "only-ab");
  ASSERT_OK_AND_ASSIGN(auto none, store_->ListTasks("nobody"));
  EXPECT_THAT(none, IsEmpty());

  EXPECT_THAT(store_->GetTask("b", "t2"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->GetTask("a", "only-ab"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->ReadRecord("ab", "t1", 0), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->DeleteTask("b", "t2"), StatusIs(absl::StatusCode::kNotFound));
  // Same task name under two tenants: two different tasks.
  ASSERT_OK_AND_ASSIGN(TaskInfo b_t1, store_->GetTask("b", "t1"));
  EXPECT_EQ(b_t1.tensors.size(), 1u);
  ASSERT_OK_AND_ASSIGN(TaskInfo a_t1, store_->GetTask("a", "t1"));
  EXPECT_EQ(a_t1.tensors.size(), 3u);

  ASSERT_OK_AND_ASSIGN(auto tenants, store_->ListTenants());
  EXPECT_THAT(tenants, ElementsAre("a", "ab", "b"));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("a"));
  EXPECT_EQ(usage.tasks, 2u);
  EXPECT_EQ(usage.bytes, 2 * bytes.size());
}

TEST_P(StoreTest, QuotaExceededStoresNothing) {
  const auto bytes = MakeContainer(kThree);
  CommitOptions quota;
  quota.quota_bytes = 2 * bytes.size() - 1;
  ASSERT_THAT(Commit("acme", "one", bytes, quota), IsOk());
  EXPECT_THAT(Commit("acme", "two", bytes, quota),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  EXPECT_THAT(store_->GetTask("acme", "two"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->ReadHeaderBytes("acme", "two"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, bytes.size());
  EXPECT_EQ(usage.tasks, 1u);
  // Another tenant has its own quota.
  EXPECT_THAT(Commit("other", "two", bytes, quota), IsOk());
  // Overwriting frees the replaced task's bytes first.
  quota.overwrite = true;
  EXPECT_THAT(Commit("acme", "one", bytes, quota), IsOk());
  // Exactly at the quota is allowed.
  quota.overwrite = false;
  quota.quota_bytes = 2 * bytes.size();
  EXPECT_THAT(Commit("acme", "two", bytes, quota), IsOk());
}

TEST_P(StoreTest, CheckCommitDecidesAsCommitWouldWithoutWriting) {
  const auto bytes = MakeContainer(kThree);
  const uint64_t n = bytes.size();
  CommitOptions quota;
  quota.quota_bytes = 2 * n - 1;
  EXPECT_THAT(store_->CheckCommit("acme", "one", n, quota), IsOk());
  EXPECT_THAT(store_->GetTask("acme", "one"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(Commit("acme", "one", bytes, quota), IsOk());
  // Same size: may be an identical re-push (OK, unchanged), decided at the commit.
  EXPECT_THAT(store_->CheckCommit("acme", "one", n, quota), IsOk());
  EXPECT_THAT(store_->CheckCommit("acme", "one", n - 1, quota),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       "tenant 'acme' task 'one' already exists (overwrite not set)"));
  EXPECT_THAT(store_->CheckCommit("acme", "two", n, quota),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr(absl::StrCat("tenant quota exceeded (", n, " bytes used + ", n,
                                              " bytes of this task > quota ", 2 * n - 1))));
  // Overwriting counts the replaced task as freed, as CommitTask does.
  quota.overwrite = true;
  EXPECT_THAT(store_->CheckCommit("acme", "one", 2 * n - 1, quota), IsOk());
  EXPECT_THAT(store_->CheckCommit("acme", "one", 2 * n, quota),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(store_->CheckCommit("acme", "bad/name", n, quota),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, n);
}

TEST_P(StoreTest, ConcurrentCommitsNeverExceedQuota) {
  const auto bytes = MakeContainer(kThree);
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(bytes));
  CommitOptions quota;
  quota.quota_bytes = 4 * bytes.size();
  std::atomic<int> ok{0}, exhausted{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 12; ++i) {
    threads.emplace_back([&, i] {
      auto s = store_->CommitTask("acme", "task-" + std::to_string(i), reader, quota);
      if (s.ok()) ++ok;
      if (absl::IsResourceExhausted(s.status())) ++exhausted;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(exhausted.load(), 8);
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, 4 * bytes.size());
  EXPECT_EQ(usage.tasks, 4u);
  ASSERT_OK_AND_ASSIGN(auto tasks, store_->ListTasks("acme"));
  EXPECT_EQ(tasks.size(), 4u);
}

TEST_P(StoreTest, ReopenKeepsEverything) {
  options_.use_blob_files = true;
  Reopen();
  const auto a = MakeContainer(kThree, 1);
  // 128 KiB record: above min_blob_bytes, so it lives in a blob file after Flush.
  const auto b = MakeContainer({{"x", {3, 3}, 4}, {"big", {128, 256}, 5}}, 2);
  ASSERT_THAT(Commit("t1", "a", a), IsOk());
  ASSERT_THAT(Commit("t2", "b", b), IsOk());
  ASSERT_THAT(store_->Flush(), IsOk());
  ASSERT_THAT(Commit("t2", "c", a), IsOk());  // only in the WAL at close
  Reopen();
  ASSERT_OK_AND_ASSIGN(auto got_a, store_->AssembleContainer("t1", "a"));
  EXPECT_EQ(got_a, a);
  ASSERT_OK_AND_ASSIGN(auto got_b, store_->AssembleContainer("t2", "b"));
  EXPECT_EQ(got_b, b);
  size_t blob_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    blob_files += entry.path().extension() == ".blob";
  }
  // Ingested records stay in the table files (StoreOptions::ingest_min_bytes).
  EXPECT_EQ(blob_files >= 1, options_.ingest_min_bytes > 0) << blob_files;
  ASSERT_OK_AND_ASSIGN(auto got_c, store_->AssembleContainer("t2", "c"));
  EXPECT_EQ(got_c, a);
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("t2"));
  EXPECT_EQ(usage.bytes, a.size() + b.size());
  EXPECT_EQ(usage.tasks, 2u);
  ASSERT_OK_AND_ASSIGN(auto tenants, store_->ListTenants());
  EXPECT_THAT(tenants, ElementsAre("t1", "t2"));
}

TEST_P(StoreTest, CheckpointIsAConsistentOpenableCopy) {
  const auto a = MakeContainer(kThree, 1);
  ASSERT_THAT(Commit("t1", "a", a), IsOk());
  const std::string copy = tmp_.File("checkpoint");
  ASSERT_THAT(store_->CreateCheckpoint(copy), IsOk());
  ASSERT_THAT(store_->DeleteTask("t1", "a"), IsOk());  // after the checkpoint: not in it
  EXPECT_THAT(store_->CreateCheckpoint(copy), StatusIs(absl::StatusCode::kInvalidArgument));
  StoreOptions options = options_;
  options.path = copy;
  ASSERT_OK_AND_ASSIGN(auto restored, DeltaStore::Open(options));
  ASSERT_OK_AND_ASSIGN(auto got, restored->AssembleContainer("t1", "a"));
  EXPECT_EQ(got, a);
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, restored->GetTenantUsage("t1"));
  EXPECT_EQ(usage.bytes, a.size());
  EXPECT_THAT(store_->GetTask("t1", "a"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(StoreTest, SnapshotReaderSurvivesOverwriteAndDelete) {
  const auto first = MakeContainer(kThree, 1);
  const auto second = MakeContainer({{"w0", {4, 8}, 77}}, 2);
  ASSERT_THAT(Commit("acme", "t", first), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTask("acme", "t"));
  CommitOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_THAT(Commit("acme", "t", second, overwrite), IsOk());
  ASSERT_OK_AND_ASSIGN(auto old_bytes, reader->AssembleContainer());
  EXPECT_EQ(old_bytes, first);
  ASSERT_THAT(store_->DeleteTask("acme", "t"), IsOk());
  ASSERT_OK_AND_ASSIGN(StoredRecord w1, reader->ReadRecord(1));
  EXPECT_EQ(w1.record().info.name, "w1");
  EXPECT_THAT(store_->GetTask("acme", "t"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(StoreTest, DuplicateTensorNamesAreRejected) {
  const auto bytes = MakeContainer({{"w", {2}, 1}, {"w", {3}, 2}});
  EXPECT_THAT(Commit("acme", "dup", bytes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'w' appears twice")));
  EXPECT_THAT(store_->GetTask("acme", "dup"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(StoreTest, InvalidNames) {
  const auto bytes = MakeContainer(kThree);
  for (const std::string& bad :
       {std::string(""), std::string(".hidden"), std::string("a/b"), std::string(129, 'x'),
        std::string("sp ace"), std::string("nul\0x", 5), std::string("\xc3\xbc")}) {
    EXPECT_THAT(Commit(bad, "t", bytes), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(Commit("acme", bad, bytes), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(store_->GetTask("acme", bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(store_->ListTasks(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(store_->DeleteTask(bad, "t"), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(ValidateName("task", "a/b"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task name 'a/b'")));
  EXPECT_THAT(ValidateName("task", std::string(128, 'x')), IsOk());
  EXPECT_THAT(ValidateName("task", "Qwen2.5-0.5B_chat-v1.2"), IsOk());
  ASSERT_OK_AND_ASSIGN(auto tenants, store_->ListTenants());
  EXPECT_THAT(tenants, IsEmpty());
}

INSTANTIATE_TEST_SUITE_P(WriteBatchOrIngest, StoreTest,
                         ::testing::Values(StoreOptions().ingest_min_bytes, uint64_t{0}),
                         [](const ::testing::TestParamInfo<uint64_t>& info) {
                           return std::string(info.param == 0 ? "Ingest" : "WriteBatch");
                         });

TEST(StoreOptionsTest, Validate) {
  StoreOptions options;
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("path")));
  options.path = "/tmp/x";
  EXPECT_THAT(options.Validate(), IsOk());
  options.block_cache_bytes = 1000;
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("block_cache_bytes")));
  options.block_cache_bytes = 1 << 20;
  options.record_cache_bytes = (1 << 20) - 1;
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("record_cache_bytes")));
  options.record_cache_bytes = 1 << 20;
  options.max_background_jobs = 0;
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_background_jobs")));
  EXPECT_THAT(DeltaStore::Open(options), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A record read from a table file is not copied: it pins its block in the records' block
// cache while it lives (moves keep its bytes), and a record larger than
// StoreOptions::record_cache_bytes is not kept there once released; its block's mapping
// is kept for the next read (storage/internal/block_memory.h), which gets the same bytes.
TEST(StoreMemoryTest, ALargeRecordIsPinnedWhileReadAndNotCachedAfter) {
  ::deltaserve::testing::ScopedTempDir tmp;
  StoreOptions options;
  options.path = tmp.File("db");
  options.sync_writes = false;
  options.ingest_min_bytes = 0;  // table files
  options.record_cache_bytes = 1 << 20;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DeltaStore> store, DeltaStore::Open(options));
  const std::vector<uint8_t> bytes = MakeContainer({{"big", {1024, 1024}, 9}, {"bias", {16}, 1}});
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader container, codec::ContainerReader::Parse(bytes));
  ASSERT_THAT(store->CommitTask("acme", "big-task", container).status(), IsOk());
  const std::vector<uint8_t> expected = ToVec(container.record_bytes(0));
  ASSERT_GT(expected.size(), size_t{4} << 20);  // 1 M F32 values

  const StoreMemory idle = store->MemoryUsage();
  EXPECT_LT(idle.block_cache_pinned_bytes, 4096u);  // RocksDB's own entries
  {
    ASSERT_OK_AND_ASSIGN(StoredRecord read, store->ReadRecord("acme", "big-task", 0));
    StoreMemory held = store->MemoryUsage();
    EXPECT_GE(held.block_cache_pinned_bytes, idle.block_cache_pinned_bytes + expected.size());
    EXPECT_GE(held.block_cache_bytes, expected.size());
    StoredRecord moved = std::move(read);
    EXPECT_EQ(ToVec(moved.bytes()), expected);
    EXPECT_EQ(moved.record().info.name, "big");
  }
  StoreMemory after = store->MemoryUsage();
  EXPECT_EQ(after.block_cache_pinned_bytes, idle.block_cache_pinned_bytes);
  EXPECT_LT(after.block_cache_bytes, uint64_t{1} << 20);
  EXPECT_GE(after.block_memory_kept_bytes, expected.size());
  EXPECT_LE(after.block_memory_kept_bytes, kKeptBlockBytes);
  ASSERT_OK_AND_ASSIGN(StoredRecord again, store->ReadRecord("acme", "big-task", 0));
  EXPECT_EQ(ToVec(again.bytes()), expected);
  EXPECT_EQ(store->MemoryUsage().block_memory_kept_bytes, 0u);  // in use again
}

TEST(StoreOpenTest, MissingDatabaseWithoutCreate) {
  ::deltaserve::testing::ScopedTempDir tmp;
  StoreOptions options;
  options.path = tmp.File("does_not_exist");
  options.create_if_missing = false;
  EXPECT_THAT(DeltaStore::Open(options), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("does not exist")));
}

}  // namespace
}  // namespace deltaserve::storage

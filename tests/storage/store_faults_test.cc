// DeltaStore under faults: a full disk (a small tmpfs), a database opened with little
// free space, transient I/O errors, write-ahead log growth, and retries of commits that
// did happen (issue 12 reproductions 1, 3 and 10).
#include "storage/store.h"

#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

absl::StatusOr<TaskInfo> Commit(DeltaStore& store, const std::string& tenant,
                                const std::string& task, const std::vector<uint8_t>& bytes,
                                CommitOptions opts = {}, CommitOutcome* outcome = nullptr) {
  absl::StatusOr<codec::ContainerReader> reader = codec::ContainerReader::Parse(bytes);
  if (!reader.ok()) return reader.status();
  return store.CommitTask(tenant, task, *reader, opts, outcome);
}

// One task of about `bytes` bytes (one F32 record), payload varied by `seed`.
std::vector<uint8_t> TaskOfSize(size_t bytes, uint8_t seed) {
  return MakeContainer({{"w", {static_cast<int64_t>(bytes / 4)}, seed}});
}

uint64_t DirBytes(const std::filesystem::path& dir, const std::string& suffix = "") {
  uint64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && (suffix.empty() || name.ends_with(suffix))) n += e.file_size();
  }
  return n;
}

class StoreFaultsTest : public ::testing::Test {
 protected:
  ::deltaserve::testing::ScopedTempDir tmp_;
};

// Reproduction 10: a retry of a commit that did happen (the client saw UNAVAILABLE) is
// OK and says so; other contents under the same name are still refused.
TEST_F(StoreFaultsTest, IdenticalRecommitIsUnchanged) {
  StoreOptions o;
  o.path = tmp_.File("db");
  o.sync_writes = false;
  ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
  const auto a = MakeContainer({{"w0", {4, 8}, 1}, {"w1", {16}, 2}});
  const auto b = MakeContainer({{"w0", {4, 8}, 9}, {"w1", {16}, 2}});  // same size
  CommitOutcome outcome;
  CommitOptions first;
  first.created_unix = 1000;
  ASSERT_OK_AND_ASSIGN(TaskInfo created, Commit(*store, "t", "x", a, first, &outcome));
  EXPECT_EQ(outcome, CommitOutcome::kCreated);
  ASSERT_OK_AND_ASSIGN(TaskInfo again, Commit(*store, "t", "x", a, {}, &outcome));
  EXPECT_EQ(outcome, CommitOutcome::kUnchanged);
  EXPECT_EQ(again.created_unix, 1000);  // the stored task, not rewritten
  EXPECT_EQ(again.total_bytes, created.total_bytes);
  EXPECT_THAT(store->CheckCommit("t", "x", b.size(), {}), IsOk());  // may be identical
  EXPECT_THAT(Commit(*store, "t", "x", b).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("other contents")));
  EXPECT_THAT(store->CheckCommit("t", "x", b.size() + 1, {}),
              StatusIs(absl::StatusCode::kAlreadyExists));
  CommitOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_THAT(Commit(*store, "t", "x", a, overwrite, &outcome).status(), IsOk());
  EXPECT_EQ(outcome, CommitOutcome::kUnchanged);
  ASSERT_THAT(Commit(*store, "t", "x", b, overwrite, &outcome).status(), IsOk());
  EXPECT_EQ(outcome, CommitOutcome::kReplaced);
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store->GetTenantUsage("t"));
  EXPECT_EQ(usage.tasks, 1u);
  EXPECT_EQ(usage.bytes, b.size());
}

// Reproduction 10: admission reads existence and usage on one consistent view, so a
// push that fits is never refused on quota while the same task is being committed.
TEST_F(StoreFaultsTest, AdmissionNeverRefusesAPushThatFits) {
  StoreOptions o;
  o.path = tmp_.File("db");
  o.sync_writes = false;
  ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
  const auto a = TaskOfSize(4096, 1);
  CommitOptions opts;
  opts.overwrite = true;
  opts.quota_bytes = a.size();  // exactly one copy of the task fits
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 60; ++i) {
      EXPECT_THAT(Commit(*store, "t", "x", TaskOfSize(4096, static_cast<uint8_t>(i)), opts)
                      .status(),
                  IsOk());
      EXPECT_THAT(store->DeleteTask("t", "x"), IsOk());
    }
    stop = true;
  });
  int checks = 0;
  while (!stop) {
    EXPECT_THAT(store->CheckCommit("t", "x", a.size(), opts), IsOk());
    ++checks;
  }
  writer.join();
  EXPECT_GT(checks, 0);
}

// Reproduction 3: the small meta column family no longer keeps every write-ahead log
// alive: the log stays near one memtable, not the size of all data written.
TEST_F(StoreFaultsTest, WriteAheadLogStaysSmall) {
  StoreOptions o;
  o.path = tmp_.File("db");
  o.sync_writes = false;
  o.write_buffer_bytes = 1 << 20;
  ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
  uint64_t data = 0;
  for (int i = 0; i < 200; ++i) {
    const auto c = TaskOfSize(64 << 10, static_cast<uint8_t>(i));
    ASSERT_THAT(Commit(*store, "t", absl::StrCat("task", i), c).status(), IsOk());
    data += c.size();
  }
  const uint64_t wal = DirBytes(o.path, ".log");
  EXPECT_LT(wal, 4u << 20) << "data " << data;  // 12.8 MB written; was all of it in WAL
  store.reset();
  ASSERT_OK_AND_ASSIGN(store, DeltaStore::Open(o));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store->GetTenantUsage("t"));
  EXPECT_EQ(usage.tasks, 200u);
  EXPECT_EQ(usage.bytes, data);
}

// A tmpfs of `mb` MiB mounted on a fresh directory, or skipped (needs root and mount).
class SmallDisk {
 public:
  SmallDisk(const std::string& dir, int mb) : dir_(dir) {
    std::filesystem::create_directories(dir_);
    mounted_ = mount("tmpfs", dir_.c_str(), "tmpfs", 0,
                     absl::StrCat("size=", mb, "m").c_str()) == 0;
  }
  ~SmallDisk() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

// Reproduction 1: on a 64 MiB filesystem, commits stop with RESOURCE_EXHAUSTED "disk
// full" before RocksDB meets ENOSPC (no abort), reads keep working, deletes give the
// space back and commits resume without a reopen.
TEST_F(StoreFaultsTest, FullDiskRefusesCommitsAndRecoversAfterDeletes) {
  SmallDisk disk(tmp_.File("mnt"), 64);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << strerror(errno);
  StoreOptions o;
  o.path = tmp_.File("mnt/db");
  o.sync_writes = true;
  o.write_buffer_bytes = 1 << 20;
  o.min_free_bytes = 24 << 20;
  ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
  std::mt19937 rng(7);
  std::vector<std::string> stored;
  absl::Status refused;
  for (int i = 0; i < 100 && refused.ok(); ++i) {
    // Random names: compactions overlap, as with real task names.
    const std::string task = absl::StrCat("task", rng() % 100000, "-", i);
    refused = Commit(*store, "t", task, TaskOfSize(2 << 20, static_cast<uint8_t>(i))).status();
    if (refused.ok()) stored.push_back(task);
  }
  ASSERT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("disk full")));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr(o.path)));
  ASSERT_GE(stored.size(), 5u);
  for (const std::string& task : stored) {
    ASSERT_THAT(store->AssembleContainer("t", task).status(), IsOk()) << task;
  }
  ASSERT_OK_AND_ASSIGN(DiskSpace space, store->GetDiskSpace());
  EXPECT_EQ(space.reserve_bytes, o.min_free_bytes);
  for (size_t i = 0; i < 4; ++i) ASSERT_THAT(store->DeleteTask("t", stored[i]), IsOk());
  EXPECT_THAT(Commit(*store, "t", "after", TaskOfSize(2 << 20, 200)).status(), IsOk());
}

// Reproduction 1: with less than min_free_bytes free at start the store opens read-only:
// reads work, commits and deletes are RESOURCE_EXHAUSTED; with space it opens read-write.
TEST_F(StoreFaultsTest, OpensReadOnlyWithLittleFreeSpace) {
  SmallDisk disk(tmp_.File("mnt"), 32);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << strerror(errno);
  StoreOptions o;
  o.path = tmp_.File("mnt/db");
  o.sync_writes = false;
  o.write_buffer_bytes = 4 << 20;
  o.min_free_bytes = 8 << 20;
  const auto c = TaskOfSize(1 << 20, 3);
  {
    ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
    ASSERT_THAT(Commit(*store, "t", "x", c).status(), IsOk());  // stays in the WAL
  }
  // Fill the disk to below the reserve.
  const std::string filler = tmp_.File("mnt/filler");
  {
    std::ofstream out(filler, std::ios::binary);
    std::string mb(1 << 20, 'x');
    for (int i = 0; i < 27; ++i) out << mb;
  }
  {
    ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
    EXPECT_TRUE(store->read_only());
    ASSERT_OK_AND_ASSIGN(DiskSpace space, store->GetDiskSpace());
    EXPECT_TRUE(space.writes_blocked);
    ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> back, store->AssembleContainer("t", "x"));
    EXPECT_EQ(back, c);
    EXPECT_THAT(Commit(*store, "t", "y", c).status(),
                StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("read-only")));
    EXPECT_THAT(store->DeleteTask("t", "x"), StatusIs(absl::StatusCode::kResourceExhausted));
  }
  std::filesystem::remove(filler);
  ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
  EXPECT_FALSE(store->read_only());
  EXPECT_THAT(Commit(*store, "t", "y", c).status(), IsOk());
}

}  // namespace
}  // namespace deltaserve::storage

namespace deltaserve::storage {
namespace {

size_t OpenFds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Reproduction 2 (the store's half): no descriptor is left while commits switch
// memtables (a new write-ahead log) and flush (new table files). RocksDB 7.8 rates an
// EMFILE there fatal: without the store's spare descriptors (internal/spare_fds.h) every
// later commit failed "While open a file for appending: .../000011.sst: Too many open
// files" until a reopen. Now the commits succeed (or fail naming EMFILE), commits work
// once descriptors are free again, and everything committed is there after a reopen.
TEST_F(StoreFaultsTest, CommitsSurviveRunningOutOfDescriptors) {
  StoreOptions o;
  o.path = tmp_.File("db");
  o.write_buffer_bytes = 1 << 20;  // a memtable switch and a flush every 2 MiB task
  o.min_free_bytes = 16 << 20;
  ASSERT_OK_AND_ASSIGN(auto store, DeltaStore::Open(o));
  ASSERT_THAT(Commit(*store, "t", "before", TaskOfSize(2 << 20, 1)).status(), IsOk());
  struct rlimit saved {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  struct rlimit none = saved;
  none.rlim_cur = OpenFds();  // not one descriptor left
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &none), 0);
  std::vector<std::string> committed = {"before"};
  for (int i = 0; i < 3; ++i) {
    const std::string task = absl::StrCat("starved", i);
    absl::Status s = Commit(*store, "t", task, TaskOfSize(2 << 20, 2 + i)).status();
    if (s.ok()) {
      committed.push_back(task);
    } else {
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Too many open files")));
    }
  }
  absl::SleepFor(absl::Milliseconds(300));  // flushes run in the background
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_THAT(Commit(*store, "t", "after", TaskOfSize(2 << 20, 9)).status(), IsOk());
  committed.push_back("after");
  for (const std::string& task : committed) {
    EXPECT_THAT(store->AssembleContainer("t", task).status(), IsOk()) << task;
  }
  store.reset();
  ASSERT_OK_AND_ASSIGN(store, DeltaStore::Open(o));
  for (const std::string& task : committed) {
    EXPECT_THAT(store->AssembleContainer("t", task).status(), IsOk()) << task;
  }
}

}  // namespace
}  // namespace deltaserve::storage

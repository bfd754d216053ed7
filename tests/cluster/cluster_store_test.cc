#include "cluster/cluster_store.h"

#include <unistd.h>

#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster/live_env.h"
#include "tests/storage/test_containers.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::cluster {
namespace {

using ::deltaserve::storage::testing::MakeContainer;
using ::deltaserve::storage::testing::TestTensor;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

// One replica: its own RocksDB under `dir`, the shared bucket and etcd namespace.
struct Replica {
  std::unique_ptr<storage::DeltaStore> local;
  std::unique_ptr<ClusterStore> cluster;
};

ClusterOptions LiveOptions(uint64_t cache_bytes) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  ClusterOptions o;
  o.s3 = testing::LiveS3();
  o.etcd_endpoint = testing::Env("ETCD_ENDPOINT");
  o.etcd_prefix = "test-" + std::to_string(::getpid()) + "-" + info->name() + "/";
  o.cache_bytes = cache_bytes;
  return o;
}

absl::StatusOr<Replica> OpenReplica(const std::string& dir, const ClusterOptions& options) {
  Replica r;
  storage::StoreOptions so;
  so.path = dir;
  so.min_free_bytes = 1 << 20;
  so.sync_writes = false;
  absl::StatusOr<std::unique_ptr<storage::DeltaStore>> local = storage::DeltaStore::Open(so);
  if (!local.ok()) return local.status();
  r.local = std::move(*local);
  absl::StatusOr<std::unique_ptr<ClusterStore>> cluster = ClusterStore::Open(
      options, r.local.get(),
      [](const TaskName&, const std::function<absl::Status()>& fn) { return fn(); });
  if (!cluster.ok()) return cluster.status();
  r.cluster = std::move(*cluster);
  return r;
}

// Publishes `bytes` as tenant "t", task `task` through `r`.
absl::StatusOr<PointerOutcome> Push(Replica& r, const std::string& task,
                                    const std::vector<uint8_t>& bytes, bool overwrite = false,
                                    std::vector<storage::SideFile> side_files = {}) {
  absl::StatusOr<codec::ContainerReader> c = codec::ContainerReader::Parse(bytes);
  if (!c.ok()) return c.status();
  TaskPointer p;  // Publish fills in digest, size and side files
  p.base_hash = "42";
  p.created_unix = absl::ToUnixSeconds(absl::Now());
  return r.cluster->Publish({"t", task}, bytes, *c, side_files, p, overwrite, 0);
}

// The side file `name` of the task in `r`'s local store ("<error>" if it cannot).
std::string LocalSideFile(Replica& r, const std::string& task, const std::string& name) {
  absl::StatusOr<std::string> got = r.local->ReadSideFile("t", task, name);
  return got.ok() ? *got : "<" + got.status().ToString() + ">";
}

std::string BlobKeyOf(absl::string_view data) {
  return BlobStore::Key(Sha256Hex({reinterpret_cast<const uint8_t*>(data.data()), data.size()}));
}

// The task's container as `r`'s local store rebuilds it ({} if it cannot).
std::vector<uint8_t> Assembled(Replica& r, const std::string& tenant, const std::string& task) {
  return r.local->AssembleContainer(tenant, task).value_or(std::vector<uint8_t>{});
}

std::vector<uint8_t> Container(uint8_t seed) {
  return MakeContainer({{"w", {64, 64}, seed}, {"b", {64}, static_cast<uint8_t>(seed + 1)}});
}

// Waits up to kWaitLimit for `pred`; returns the time it took, or -1. The limit only
// bounds a failure: a watch or a collection takes milliseconds on an idle machine but
// seconds on a loaded 2-core CI runner.
constexpr absl::Duration kWaitLimit = absl::Seconds(30);
template <typename Pred>
double WaitFor(Pred pred) {
  absl::Time start = absl::Now();
  while (absl::Now() - start < kWaitLimit) {
    if (pred()) return absl::ToDoubleMilliseconds(absl::Now() - start);
    absl::SleepFor(absl::Milliseconds(5));
  }
  return -1;
}

TEST(ClusterOptionsTest, ParsesAndValidates) {
  ASSERT_OK_AND_ASSIGN(
      ClusterOptions o,
      ParseClusterOptions(R"({"s3": {"endpoint": "http://127.0.0.1:8080", "bucket": "b",
                                     "access_key": "a:u", "secret_key": "s",
                                     "part_bytes": 8388608},
                              "etcd": {"endpoint": "http://127.0.0.1:2379", "prefix": "x/"},
                              "cache_bytes": 1000, "gc_grace_s": 60, "gc_interval_s": 5})",
                          ""));
  EXPECT_EQ(o.s3.access_key, "a:u");
  EXPECT_EQ(o.blobs.part_bytes, 8u << 20);
  EXPECT_EQ(o.etcd_prefix, "x/");
  EXPECT_EQ(o.cache_bytes, 1000u);
  EXPECT_EQ(o.gc_grace_s, 60);
  EXPECT_EQ(o.gc_interval_s, 5);
  EXPECT_THAT(ParseClusterOptions(R"({"s3": {"endpoint": "http://h", "bucket": "b",
                                          "access_key": "a", "secret_key": "s"},
                                   "etcd": {"endpoint": "http://e"}, "cache": 1})",
                                  "")
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown key \"cache\"")));
  EXPECT_THAT(ParseClusterOptions(R"({"s3": {"endpoint": "http://h", "bucket": "b",
                                          "access_key": "a", "secret_key": "s"},
                                   "etcd": {"endpoint": "e:2379"}})",
                                  "")
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("etcd endpoint")));
}

TEST(ClusterStoreLiveTest, PushOnOneReplicaServesFromAnother) {
  DS_SKIP_WITHOUT_CLUSTER();
  deltaserve::testing::ScopedTempDir tmp;
  ClusterOptions o = LiveOptions(0);
  ASSERT_OK_AND_ASSIGN(Replica a, OpenReplica(tmp.File("a"), o));
  ASSERT_OK_AND_ASSIGN(Replica b, OpenReplica(tmp.File("b"), o));
  std::vector<uint8_t> bytes = Container(1);
  EXPECT_EQ(Push(a, "task1", bytes).value_or(PointerOutcome(99)), PointerOutcome::kCreated);
  EXPECT_EQ(Push(b, "task1", bytes).value_or(PointerOutcome(99)), PointerOutcome::kUnchanged);
  EXPECT_THAT(Push(b, "task1", Container(2)).status(), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_THAT(b.cluster->Ensure({"t", "task1"}), IsOk());
  EXPECT_EQ(Assembled(b, "t", "task1"), bytes);
  ASSERT_THAT(b.cluster->Ensure({"t", "task1"}), IsOk());
  EXPECT_EQ(b.cluster->stats().misses, 0u);  // b's own (unchanged) push filled its cache
  // A third replica starts empty and fetches on the first request.
  ASSERT_OK_AND_ASSIGN(Replica c, OpenReplica(tmp.File("c"), o));
  EXPECT_THAT(c.local->GetTask("t", "task1").status(), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(c.cluster->Ensure({"t", "task1"}), IsOk());
  EXPECT_EQ(Assembled(c, "t", "task1"), bytes);
  EXPECT_EQ(c.cluster->stats().misses, 1u);
  EXPECT_EQ(c.cluster->stats().fetched_bytes, bytes.size());
  ASSERT_THAT(c.cluster->Ensure({"t", "task1"}), IsOk());
  EXPECT_EQ(c.cluster->stats().hits, 1u);
  EXPECT_THAT(c.cluster->Ensure({"t", "nope"}), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(auto listed, c.cluster->List("t"));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].second.size, bytes.size());
}

TEST(ClusterStoreLiveTest, DeleteAndOverwriteAreSeenByEveryReplica) {
  DS_SKIP_WITHOUT_CLUSTER();
  deltaserve::testing::ScopedTempDir tmp;
  ClusterOptions o = LiveOptions(0);
  ASSERT_OK_AND_ASSIGN(Replica a, OpenReplica(tmp.File("a"), o));
  ASSERT_OK_AND_ASSIGN(Replica b, OpenReplica(tmp.File("b"), o));
  ASSERT_THAT(Push(a, "x", Container(1)).status(), IsOk());
  ASSERT_THAT(b.cluster->Ensure({"t", "x"}), IsOk());
  // Overwrite on a: b drops its old copy when the watch reports it, then serves the new.
  std::vector<uint8_t> v2 = Container(9);
  absl::SleepFor(absl::Seconds(1));  // another creation second
  EXPECT_EQ(Push(a, "x", v2, true).value_or(PointerOutcome(99)), PointerOutcome::kReplaced);
  double overwrite_ms = WaitFor([&] { return !b.local->GetTask("t", "x").ok(); });
  EXPECT_GE(overwrite_ms, 0);
  ASSERT_THAT(b.cluster->Ensure({"t", "x"}), IsOk());
  EXPECT_EQ(Assembled(b, "t", "x"), v2);
  // Delete on b: a's copy goes too.
  ASSERT_THAT(b.cluster->Delete({"t", "x"}).status(), IsOk());
  EXPECT_THAT(b.local->GetTask("t", "x").status(), StatusIs(absl::StatusCode::kNotFound));
  double delete_ms = WaitFor([&] { return !a.local->GetTask("t", "x").ok(); });
  EXPECT_GE(delete_ms, 0);
  EXPECT_THAT(a.cluster->Ensure({"t", "x"}), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(b.cluster->Delete({"t", "x"}).status(), StatusIs(absl::StatusCode::kNotFound));
  std::cout << "watch: overwrite seen after " << overwrite_ms << " ms, delete after " << delete_ms
            << " ms\n";
}

TEST(ClusterStoreLiveTest, PeriodicGcDeletesReplacedBlobsOnly) {
  DS_SKIP_WITHOUT_CLUSTER();
  deltaserve::testing::ScopedTempDir tmp;
  ClusterOptions o = LiveOptions(0);
  o.gc_grace_s = 0;
  o.gc_interval_s = 1;
  ASSERT_OK_AND_ASSIGN(Replica a, OpenReplica(tmp.File("a"), o));
  std::vector<uint8_t> v1 = Container(31), v2 = Container(32);
  ASSERT_THAT(Push(a, "g", v1).status(), IsOk());
  ASSERT_THAT(Push(a, "g", v2, /*overwrite=*/true).status(), IsOk());
  std::string old_key = BlobStore::Key(Sha256Hex(v1)), new_key = BlobStore::Key(Sha256Hex(v2));
  // The counter moves after the run that deleted the blob returns: wait for both.
  double ms = WaitFor([&] {
    return absl::IsNotFound(a.cluster->blobs().s3().HeadObject(old_key).status()) &&
           a.cluster->stats().gc_deleted >= 1;
  });
  EXPECT_GE(ms, 0) << "the replaced blob was not collected within " << kWaitLimit;
  EXPECT_THAT(a.cluster->blobs().s3().HeadObject(new_key).status(), IsOk());
  // The live task is unaffected on a fresh replica (fetched from S3).
  ASSERT_OK_AND_ASSIGN(Replica b, OpenReplica(tmp.File("b"), o));
  ASSERT_THAT(b.cluster->Ensure({"t", "g"}), IsOk());
  EXPECT_EQ(Assembled(b, "t", "g"), v2);
}

// Side files travel with the task: stored as blobs, listed in the pointer, fetched with
// the container by an empty replica into its local store; an overwrite that changes
// only a side file is seen by a replica that cached the old one; the periodic GC
// deletes a side-file blob no pointer names and spares one another task still names.
TEST(ClusterStoreLiveTest, SideFilesTravelWithTheTaskAndAreCollectedLikeBlobs) {
  DS_SKIP_WITHOUT_CLUSTER();
  deltaserve::testing::ScopedTempDir tmp;
  ClusterOptions o = LiveOptions(0);
  o.gc_grace_s = 0;
  o.gc_interval_s = 1;
  ASSERT_OK_AND_ASSIGN(Replica a, OpenReplica(tmp.File("a"), o));
  ASSERT_OK_AND_ASSIGN(Replica b, OpenReplica(tmp.File("b"), o));
  const std::vector<uint8_t> v = Container(61);
  const std::string shared = R"({"model_type": "llama"})", tok(100000, 'k'), tok2(99, 'z');
  ASSERT_THAT(Push(a, "s1", v, false, {{"config.json", shared}, {"tokenizer.json", tok}}).status(),
              IsOk());
  ASSERT_THAT(Push(a, "s2", Container(62), false, {{"config.json", shared}}).status(), IsOk());
  // The same container and side files again: unchanged; other side files: AlreadyExists.
  EXPECT_EQ(Push(b, "s1", v, false, {{"config.json", shared}, {"tokenizer.json", tok}})
                .value_or(PointerOutcome(99)),
            PointerOutcome::kUnchanged);
  EXPECT_THAT(Push(b, "s1", v, false, {{"config.json", shared}}).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_OK_AND_ASSIGN(auto listed, a.cluster->List("t"));
  ASSERT_EQ(listed.size(), 2u);
  const TaskPointer& p1 = listed[0].second;
  ASSERT_EQ(p1.side_files.size(), 2u);
  EXPECT_EQ(p1.side_files[1].file,
            (storage::SideFileEntry{"tokenizer.json", tok.size(), storage::SideFileChecksum(tok)}));
  EXPECT_EQ(p1.StoredBytes(), v.size() + shared.size() + tok.size());
  // An empty replica fetches container and side files.
  ASSERT_OK_AND_ASSIGN(Replica c, OpenReplica(tmp.File("c"), o));
  ASSERT_THAT(c.cluster->Ensure({"t", "s1"}), IsOk());
  EXPECT_EQ(Assembled(c, "t", "s1"), v);
  EXPECT_EQ(LocalSideFile(c, "s1", "config.json"), shared);
  EXPECT_EQ(LocalSideFile(c, "s1", "tokenizer.json"), tok);
  EXPECT_EQ(c.cluster->stats().fetched_bytes, p1.StoredBytes());
  // Overwrite on a, same container, the tokenizer replaced: c drops its copy when the
  // watch reports it and fetches the new version.
  absl::SleepFor(absl::Seconds(1));  // another creation second
  EXPECT_EQ(Push(a, "s1", v, true, {{"config.json", shared}, {"tokenizer.json", tok2}})
                .value_or(PointerOutcome(99)),
            PointerOutcome::kReplaced);
  EXPECT_GE(WaitFor([&] { return !c.local->GetTask("t", "s1").ok(); }), 0);
  ASSERT_THAT(c.cluster->Ensure({"t", "s1"}), IsOk());
  EXPECT_EQ(LocalSideFile(c, "s1", "tokenizer.json"), tok2);
  // GC: the old tokenizer's blob goes; the shared config's stays.
  const auto& s3 = a.cluster->blobs().s3();
  EXPECT_GE(WaitFor([&] { return absl::IsNotFound(s3.HeadObject(BlobKeyOf(tok)).status()); }), 0)
      << "the replaced side file's blob was not collected within " << kWaitLimit;
  EXPECT_THAT(s3.HeadObject(BlobKeyOf(shared)).status(), IsOk());
  // Delete s1: its blobs go but the config (s2 names it).
  ASSERT_THAT(a.cluster->Delete({"t", "s1"}).status(), IsOk());
  EXPECT_GE(WaitFor([&] { return absl::IsNotFound(s3.HeadObject(BlobKeyOf(tok2)).status()); }), 0);
  EXPECT_THAT(s3.HeadObject(BlobKeyOf(shared)).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(Replica d, OpenReplica(tmp.File("d"), o));
  ASSERT_THAT(d.cluster->Ensure({"t", "s2"}), IsOk());
  EXPECT_EQ(LocalSideFile(d, "s2", "config.json"), shared);
}

// The GC race: identical content pushed again (its blob exists, so the push uploads
// nothing) while a collection deletes that blob. The collection holds a tombstone in
// etcd while it deletes; the push, after creating its pointer, waits for the tombstone
// to go and uploads the blob again. Without that, the new pointer named a deleted blob.
TEST(ClusterStoreLiveTest, RePushDuringCollectionKeepsTheBlob) {
  DS_SKIP_WITHOUT_CLUSTER();
  deltaserve::testing::ScopedTempDir tmp;
  ClusterOptions o = LiveOptions(0);
  o.gc_grace_s = 0;
  o.gc_interval_s = 0;  // this test runs the collection itself
  ASSERT_OK_AND_ASSIGN(Replica a, OpenReplica(tmp.File("a"), o));
  std::vector<uint8_t> v = Container(41);
  const std::string key = BlobStore::Key(Sha256Hex(v));
  ASSERT_THAT(Push(a, "old", v).status(), IsOk());
  ASSERT_THAT(a.cluster->Delete({"t", "old"}).status(), IsOk());  // marks the blob
  EtcdClient etcd(o.etcd_endpoint);
  TaskPointers pointers(&etcd, o.etcd_prefix);
  std::thread pusher;
  absl::Status pushed;
  auto delete_blob = [&](const std::string& digest) {
    // The collection has checked the pointers (none) and holds the tombstone: the
    // push finds the blob, creates its pointer and waits.
    pusher = std::thread([&] { pushed = Push(a, "new", v).status(); });
    absl::SleepFor(absl::Milliseconds(500));
    return a.cluster->blobs().Delete(digest);
  };
  ASSERT_OK_AND_ASSIGN(int deleted,
                       pointers.CollectGarbage(absl::ToUnixSeconds(absl::Now()), 0, delete_blob));
  pusher.join();
  EXPECT_EQ(deleted, 1);
  EXPECT_THAT(pushed, IsOk());
  EXPECT_THAT(a.cluster->blobs().s3().HeadObject(key).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(bool collecting, pointers.BeingCollected(Sha256Hex(v)));
  EXPECT_FALSE(collecting);
  ASSERT_OK_AND_ASSIGN(Replica b, OpenReplica(tmp.File("b"), o));
  ASSERT_THAT(b.cluster->Ensure({"t", "new"}), IsOk());
  EXPECT_EQ(Assembled(b, "t", "new"), v);
}

// Single flight per task: concurrent misses of one task fetch it once; misses of other
// tasks are fetched alongside (each its own fill).
TEST(ClusterStoreLiveTest, ConcurrentMissesOfOneTaskFetchItOnce) {
  DS_SKIP_WITHOUT_CLUSTER();
  deltaserve::testing::ScopedTempDir tmp;
  ClusterOptions o = LiveOptions(0);
  ASSERT_OK_AND_ASSIGN(Replica a, OpenReplica(tmp.File("a"), o));
  ASSERT_THAT(Push(a, "x", Container(51)).status(), IsOk());
  ASSERT_THAT(Push(a, "y", Container(52)).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(Replica b, OpenReplica(tmp.File("b"), o));
  std::vector<std::thread> threads;
  std::vector<absl::Status> got(6);
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = b.cluster->Ensure({"t", i % 2 ? "x" : "y"}); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : got) EXPECT_THAT(s, IsOk());
  EXPECT_EQ(b.cluster->stats().misses, 2u);
  EXPECT_EQ(b.cluster->stats().hits, 4u);
  EXPECT_EQ(Assembled(b, "t", "x"), Container(51));
  EXPECT_EQ(Assembled(b, "t", "y"), Container(52));
}

TEST(ClusterStoreLiveTest, CacheIsBoundedAndSurvivesRestart) {
  DS_SKIP_WITHOUT_CLUSTER();
  deltaserve::testing::ScopedTempDir tmp;
  uint64_t one = Container(1).size();
  ClusterOptions o = LiveOptions(2 * one + one / 2);  // room for two tasks
  {
    ASSERT_OK_AND_ASSIGN(Replica a, OpenReplica(tmp.File("a"), o));
    for (int i = 0; i < 3; ++i) {
      ASSERT_THAT(Push(a, "t" + std::to_string(i), Container(static_cast<uint8_t>(i))).status(),
                  IsOk());
    }
    EXPECT_THAT(a.local->GetTask("t", "t0").status(), StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(a.local->GetTask("t", "t2").status(), IsOk());
    EXPECT_EQ(a.cluster->stats().evictions, 1u);
    ASSERT_THAT(a.cluster->Ensure({"t", "t0"}), IsOk());  // fetched again; t1 goes
    EXPECT_EQ(a.cluster->stats().misses, 1u);
    EXPECT_THAT(a.local->GetTask("t", "t1").status(), StatusIs(absl::StatusCode::kNotFound));
  }
  // Restart: the matching local copies are kept and served as hits.
  ASSERT_OK_AND_ASSIGN(Replica again, OpenReplica(tmp.File("a"), o));
  ASSERT_THAT(again.cluster->Ensure({"t", "t0"}), IsOk());
  ASSERT_THAT(again.cluster->Ensure({"t", "t2"}), IsOk());
  EXPECT_EQ(again.cluster->stats().hits, 2u);
  EXPECT_EQ(again.cluster->stats().misses, 0u);
}

}  // namespace
}  // namespace deltaserve::cluster

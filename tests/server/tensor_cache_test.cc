#include "server/internal/tensor_cache.h"

#include <xxhash.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/internal/thread_pool.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::StatusIs;

MergedTensorPtr Tensor(size_t bytes, uint8_t fill = 0) {
  auto t = std::make_shared<MergedTensor>();
  t->data.assign(bytes, fill);
  return t;
}

// Synchronous lookup; returns the value (or null on error) and whether it was a hit.
std::pair<MergedTensorPtr, bool> Get(TensorCache& cache, const std::string& group,
                                     const std::string& key, size_t bytes, int* loads) {
  std::pair<MergedTensorPtr, bool> out;
  cache.GetOrLoad(
      group, group + "#" + key,
      [&]() -> absl::StatusOr<MergedTensorPtr> {
        ++*loads;
        return Tensor(bytes);
      },
      [&](const absl::StatusOr<MergedTensorPtr>& r, bool hit) {
        out = {r.ok() ? *r : nullptr, hit};
      });
  return out;
}

TEST(TensorCacheTest, EvictsLeastRecentlyUsedWithinBudget) {
  TensorCache cache(1000, nullptr);
  int loads = 0;
  Get(cache, "a/t", "0", 400, &loads);
  Get(cache, "a/t", "1", 400, &loads);
  EXPECT_TRUE(Get(cache, "a/t", "0", 400, &loads).second);  // 0 is now most recent
  Get(cache, "a/t", "2", 400, &loads);                       // evicts 1
  EXPECT_EQ(cache.bytes(), 800u);
  EXPECT_EQ(cache.entries(), 2u);
  EXPECT_TRUE(Get(cache, "a/t", "0", 400, &loads).second);
  EXPECT_FALSE(Get(cache, "a/t", "1", 400, &loads).second);
  EXPECT_EQ(loads, 4);
  // Larger than the whole budget: served, not kept.
  auto [big, hit] = Get(cache, "a/t", "big", 5000, &loads);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->data.size(), 5000u);
  EXPECT_LE(cache.bytes(), 1000u);
}

TEST(TensorCacheTest, PinnedGroupsAreNotEvictedAndEraseGroupDropsEntries) {
  TensorCache cache(1000, nullptr);
  int loads = 0;
  cache.Pin("a/pinned");
  Get(cache, "a/pinned", "0", 600, &loads);
  Get(cache, "b/other", "0", 300, &loads);
  Get(cache, "b/other", "1", 300, &loads);  // over budget: only b/other entries may go
  EXPECT_EQ(cache.group_bytes("a/pinned"), 600u);
  EXPECT_EQ(cache.pinned_bytes(), 600u);
  EXPECT_LE(cache.bytes(), 1000u);
  EXPECT_TRUE(cache.Unpin("a/pinned"));
  EXPECT_FALSE(cache.Unpin("a/pinned"));
  cache.EraseGroup("a/pinned");
  EXPECT_EQ(cache.group_bytes("a/pinned"), 0u);
  // Prefix safety: erasing "b/o" does not touch "b/other".
  cache.EraseGroup("b/o");
  EXPECT_EQ(cache.group_bytes("b/other"), 300u);
}

TEST(TensorCacheTest, MakeRoomEvictsUnpinnedEntriesBeforeALoad) {
  TensorCache cache(1000, nullptr);
  int loads = 0;
  cache.Pin("p/pinned");
  Get(cache, "p/pinned", "0", 300, &loads);
  Get(cache, "a/t", "0", 300, &loads);
  Get(cache, "a/t", "1", 300, &loads);
  EXPECT_TRUE(cache.MakeRoom(100).empty());  // 900 + 100 fit: nothing goes
  EXPECT_EQ(cache.bytes(), 900u);
  EXPECT_TRUE(cache.MakeRoom(2000).empty());  // larger than the budget: kept by none
  EXPECT_EQ(cache.bytes(), 900u);
  std::vector<MergedTensorPtr> evicted = cache.MakeRoom(350);  // LRU unpinned: a/t#0
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0]->data.size(), 300u);
  EXPECT_EQ(evicted[0].use_count(), 1);  // the cache let go of it: the caller's to reuse
  EXPECT_EQ(cache.bytes(), 600u);
  EXPECT_FALSE(Get(cache, "a/t", "0", 300, &loads).second);  // reloaded
  EXPECT_TRUE(Get(cache, "a/t", "1", 300, &loads).second);
  EXPECT_EQ(cache.bytes(), 900u);
  EXPECT_EQ(cache.MakeRoom(1000).size(), 2u);  // every unpinned entry goes, not the pinned
  EXPECT_EQ(cache.bytes(), 300u);
  EXPECT_EQ(cache.group_bytes("p/pinned"), 300u);
  EXPECT_EQ(loads, 4);
}

TEST(TensorCacheTest, ConcurrentRequestsOfOneKeyLoadOnce) {
  TensorCache cache(1 << 20, nullptr);
  ThreadPool pool(4);
  std::atomic<int> loads{0}, hits{0}, done{0};
  absl::Notification release;
  for (int i = 0; i < 8; ++i) {
    pool.Schedule([&] {
      cache.GetOrLoad(
          "g/t", "g/t#k",
          [&]() -> absl::StatusOr<MergedTensorPtr> {
            ++loads;
            release.WaitForNotification();  // hold the flight open while others arrive
            return Tensor(100, 7);
          },
          [&](const absl::StatusOr<MergedTensorPtr>& r, bool hit) {
            EXPECT_EQ((*r)->data[0], 7);
            hits += hit;
            ++done;
          });
    });
  }
  absl::SleepFor(absl::Milliseconds(100));
  release.Notify();
  pool.Shutdown();
  EXPECT_EQ(loads.load(), 1);
  EXPECT_EQ(done.load(), 8);
  EXPECT_EQ(hits.load(), 7);
}

TEST(TensorCacheTest, ErrorsReachEveryWaiterAndAreNotCached) {
  TensorCache cache(1 << 20, nullptr);
  absl::Status got;
  cache.GetOrLoad(
      "g/t", "g/t#k", [] { return absl::StatusOr<MergedTensorPtr>(absl::DataLossError("bad")); },
      [&](const absl::StatusOr<MergedTensorPtr>& r, bool) { got = r.status(); });
  EXPECT_THAT(got, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(cache.entries(), 0u);
}

TEST(ThreadPoolTest, RunsEverythingQueuedBeforeShutdownAndInlineAfter) {
  std::atomic<int> ran{0};
  ThreadPool pool(2);
  for (int i = 0; i < 100; ++i) pool.Schedule([&] { ++ran; });
  pool.Shutdown();
  EXPECT_EQ(ran.load(), 100);
  pool.Schedule([&] { ++ran; });
  EXPECT_EQ(ran.load(), 101);
}

// TensorFill: ranges published out of order grow the ready prefix only when contiguous,
// and the digest is the XXH3-64 of the whole buffer.
TEST(TensorFillTest, ReadyPrefixGrowsInOrderAndDigestIsTheBufferHash) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + 3);
  TensorFill fill(data.data(), data.size());
  EXPECT_THAT(fill.Digest().status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  fill.Publish(600, 1000);
  EXPECT_EQ(fill.ready(), 0u);
  fill.Publish(0, 250);
  EXPECT_EQ(fill.ready(), 250u);
  fill.Publish(250, 600);
  EXPECT_EQ(fill.ready(), 1000u);
  absl::StatusOr<uint64_t> digest = fill.Digest();
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(*digest, XXH3_64bits(data.data(), data.size()));
  EXPECT_FALSE(fill.done());
  fill.Finish(absl::OkStatus());
  EXPECT_TRUE(fill.done());
  EXPECT_TRUE(fill.status().ok());
}

TEST(TensorFillTest, WaitersWakeOnceTheirBytesOrTheEndArrive) {
  std::vector<uint8_t> data(100, 1);
  TensorFill fill(data.data(), data.size());
  int bytes_woken = 0, done_woken = 0;
  EXPECT_TRUE(fill.ReadyOr(0, false, [] {}));
  EXPECT_FALSE(fill.ReadyOr(40, false, [&] { ++bytes_woken; }));
  EXPECT_FALSE(fill.ReadyOr(100, true, [&] { ++done_woken; }));
  fill.Publish(0, 30);
  EXPECT_EQ(bytes_woken, 0);
  fill.Publish(30, 50);
  EXPECT_EQ(bytes_woken, 1);  // 50 >= 40
  fill.Publish(50, 100);
  EXPECT_EQ(bytes_woken, 1);  // once only
  EXPECT_EQ(done_woken, 0);   // every byte, but not done yet
  EXPECT_FALSE(fill.ReadyOr(100, true, [&] { ++done_woken; }));
  fill.Finish(absl::OkStatus());
  EXPECT_EQ(done_woken, 2);
  EXPECT_TRUE(fill.ReadyOr(100, true, [] {}));
}

TEST(TensorFillTest, AFailedDecodeWakesWaitersWithItsError) {
  std::vector<uint8_t> data(100);
  TensorFill fill(data.data(), data.size());
  int woken = 0;
  EXPECT_FALSE(fill.ReadyOr(60, false, [&] { ++woken; }));
  fill.Publish(0, 10);
  fill.Finish(absl::DataLossError("patch block 3: bad"));
  EXPECT_EQ(woken, 1);
  EXPECT_THAT(fill.status(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_TRUE(fill.ReadyOr(60, false, [] {}));  // no waiting on a failed fill
  fill.Finish(absl::OkStatus());                // the first status stays
  EXPECT_THAT(fill.status(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(fill.ready(), 10u);
}

}  // namespace
}  // namespace deltaserve::server::internal

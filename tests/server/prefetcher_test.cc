#include "server/internal/prefetcher.h"

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/internal/thread_pool.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::ElementsAre;

MergedTensorPtr Tensor(uint32_t index) {
  auto t = std::make_shared<MergedTensor>();
  t->index = index;
  return t;
}

// Records fetch requests; the test completes them when it likes.
struct Deferred {
  absl::Mutex mu;
  std::vector<size_t> started;
  std::vector<Prefetcher::Done> pending;
  int ready_calls = 0;

  Prefetcher Make(size_t n, size_t window, std::vector<uint64_t> bytes = {},
                  uint64_t min_bytes_ahead = 0) {
    if (bytes.empty()) bytes.assign(n, 100);
    return Prefetcher(
        std::move(bytes), window, min_bytes_ahead,
        [this](size_t pos, Prefetcher::Done done) {
          absl::MutexLock lock(&mu);
          started.push_back(pos);
          pending.push_back(std::move(done));
        },
        [this] {
          absl::MutexLock lock(&mu);
          ++ready_calls;
        });
  }
};

TEST(PrefetcherTest, StartsOnlyTheWindowAheadOfTheSendPosition) {
  Deferred d;
  Prefetcher p = d.Make(/*n=*/5, /*window=*/2);
  p.Advance(0);
  EXPECT_THAT(d.started, ElementsAre(0, 1));
  p.Advance(0);  // nothing new
  EXPECT_EQ(p.started(), 2u);
  p.Advance(1);
  EXPECT_THAT(d.started, ElementsAre(0, 1, 2));
  p.Advance(4);  // catches up in order, never past the end
  EXPECT_THAT(d.started, ElementsAre(0, 1, 2, 3, 4));
  p.Advance(9);
  EXPECT_EQ(p.started(), 5u);
}

TEST(PrefetcherTest, ByteWindowKeepsStartingWhileFewBytesAreAhead) {
  Deferred d;
  // Sizes 50, 10, 10, 10, 10, 40, 10; window 1 (just the one being sent) + 25 bytes ahead.
  Prefetcher p = d.Make(7, 1, {50, 10, 10, 10, 10, 40, 10}, 25);
  p.Advance(0);  // 0 is sent; ahead: 1 (10), 2 (20), 3 (30 >= 25: stop)
  EXPECT_THAT(d.started, ElementsAre(0, 1, 2, 3));
  p.Advance(1);  // ahead of 1: 2, 3 = 20 < 25: start 4 -> 30
  EXPECT_THAT(d.started, ElementsAre(0, 1, 2, 3, 4));
  p.Advance(3);  // ahead of 3: 4 = 10: start 5 (a large one) -> 50
  EXPECT_THAT(d.started, ElementsAre(0, 1, 2, 3, 4, 5));
  p.Advance(4);  // ahead of 4: 5 = 40 >= 25
  EXPECT_EQ(p.started(), 6u);
  p.Advance(5);
  EXPECT_EQ(p.started(), 7u);
}

TEST(PrefetcherTest, ResultsAreTakenOnceInAnyArrivalOrder) {
  Deferred d;
  Prefetcher p = d.Make(3, 3);
  p.Advance(0);
  ASSERT_EQ(d.pending.size(), 3u);
  EXPECT_FALSE(p.Take(0).has_value());
  d.pending[2](Tensor(12));
  d.pending[0](absl::DataLossError("record 0: checksum"));
  EXPECT_EQ(d.ready_calls, 2);
  std::optional<Prefetcher::Result> r0 = p.Take(0);
  ASSERT_TRUE(r0.has_value());
  EXPECT_THAT(r0->status(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_FALSE(p.Take(0).has_value());  // taken
  EXPECT_FALSE(p.Take(1).has_value());  // not arrived
  std::optional<Prefetcher::Result> r2 = p.Take(2);
  ASSERT_TRUE(r2.has_value() && r2->ok());
  EXPECT_EQ((**r2)->index, 12u);
}

TEST(PrefetcherTest, StopStartsNothingMoreButKeepsLateResults) {
  Deferred d;
  Prefetcher p = d.Make(4, 1);
  p.Advance(0);
  p.Stop();
  p.Advance(3);
  EXPECT_THAT(d.started, ElementsAre(0));
  d.pending[0](Tensor(0));
  EXPECT_TRUE(p.Take(0).has_value());
}

TEST(PrefetcherTest, InlineFetchMayCallBackIntoThePrefetcher) {
  // A cache hit delivers inside fetch(); on_ready then takes the result at once.
  std::vector<uint32_t> taken;
  Prefetcher* self = nullptr;
  Prefetcher p(
      std::vector<uint64_t>(3, 1), 2, 0,
      [](size_t pos, Prefetcher::Done done) { done(Tensor(static_cast<uint32_t>(pos))); },
      [&] {
        for (size_t pos = 0; pos < 3; ++pos) {
          if (auto r = self->Take(pos)) taken.push_back((**r)->index);
        }
      });
  self = &p;
  p.Advance(0);
  p.Advance(1);
  EXPECT_THAT(taken, ElementsAre(0, 1, 2));
}

TEST(PrefetcherTest, DeliveriesFromPoolThreads) {
  ThreadPool pool(2);
  absl::Mutex mu;
  int ready = 0;
  Prefetcher p(
      std::vector<uint64_t>(64, 1), 64, 0,
      [&pool](size_t pos, Prefetcher::Done done) {
        pool.Schedule([pos, done] { done(Tensor(static_cast<uint32_t>(pos))); });
      },
      [&] {
        absl::MutexLock lock(&mu);
        ++ready;
      });
  p.Advance(0);
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* r) { return *r == 64; }, &ready));
  }
  for (uint32_t pos = 0; pos < 64; ++pos) {
    std::optional<Prefetcher::Result> r = p.Take(pos);
    ASSERT_TRUE(r.has_value() && r->ok());
    EXPECT_EQ((**r)->index, pos);
  }
}

}  // namespace
}  // namespace deltaserve::server::internal

#include "server/internal/pretouch.h"

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/internal/merged_memory.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Waits (up to 60 s: the thread runs at idle priority on a shared machine) until the
// pre-touch has ended.
PretouchProgress WaitForEnd(const Pretoucher& p) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  PretouchProgress progress = p.progress();
  while (progress.running && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
    progress = p.progress();
  }
  return progress;
}

TEST(PlanPretouchTest, PoolSizedTensorsInOrderWithinTheBudget) {
  using codec::DType;
  const std::vector<codec::TensorInfo> tensors = {
      {"a.embed", DType::kF16, {1000, 512}},  // 1,024,000 bytes = 250 pages
      {"b.bias", DType::kF32, {512}},         // below kMergedPoolMinBytes: malloc
      {"c.up", DType::kF16, {512, 512}},      // 512 KiB: would pass the budget
      {"d.down", DType::kF32, {300, 300}},    // 360,000 bytes, 88 pages: fits
      {"e.q", DType::kBF16, {256, 512}},      // 256 KiB: no room left
  };
  const PretouchPlan plan = PlanPretouch(tensors, 1'400'000);
  EXPECT_EQ(plan.sizes, (std::vector<uint64_t>{1'024'000, 360'000}));
  EXPECT_EQ(plan.bytes, 1'024'000u + 88 * 4096);
  const PretouchPlan all = PlanPretouch(tensors, 1ull << 30);
  EXPECT_EQ(all.sizes, (std::vector<uint64_t>{1'024'000, 512 << 10, 360'000, 256 << 10}));
  EXPECT_EQ(PlanPretouch(tensors, 1'000'000).sizes, (std::vector<uint64_t>{512 << 10, 360'000}));
  EXPECT_TRUE(PlanPretouch(tensors, 0).sizes.empty());
}

TEST(PretoucherTest, PreTouchesThePlanAndFreesWhatIsLeftOnStop) {
  common::MappingPool pool(0);
  PretouchPlan plan;
  plan.sizes = {kMiB, 2 * kMiB, kMiB};
  plan.bytes = 4 * kMiB;
  Pretoucher pretoucher(&pool, plan, 8 * kMiB, nullptr);
  const PretouchProgress done = WaitForEnd(pretoucher);
  EXPECT_FALSE(done.running);
  EXPECT_EQ(done.end, "done");
  EXPECT_EQ(done.planned_bytes, 4 * kMiB);
  EXPECT_EQ(done.bytes, 4 * kMiB);
  EXPECT_EQ(done.mappings, 3u);
  EXPECT_GT(done.cpu_seconds, 0);
  EXPECT_EQ(pool.stats().allowance_bytes, 8 * kMiB);
  EXPECT_EQ(pool.stats().pretouched_bytes, 4 * kMiB);
  void* taken = pool.Map(2 * kMiB);
  EXPECT_EQ(pool.stats().pretouched_taken, 1u);
  pretoucher.Stop();
  EXPECT_EQ(pool.stats().allowance_bytes, 0u);
  EXPECT_EQ(pool.stats().pretouched_bytes, 0u);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);
  pool.Unmap(taken, 2 * kMiB);
  pretoucher.Stop();  // idempotent
}

TEST(PretoucherTest, EndsWhenThePoolHasNoRoom) {
  common::MappingPool pool(0);
  PretouchPlan plan;
  plan.sizes = {kMiB, kMiB, kMiB};
  plan.bytes = 3 * kMiB;
  Pretoucher pretoucher(&pool, plan, 2 * kMiB, nullptr);  // room for two
  const PretouchProgress done = WaitForEnd(pretoucher);
  EXPECT_EQ(done.end, "no room");
  EXPECT_EQ(done.bytes, 2 * kMiB);
  EXPECT_EQ(done.mappings, 2u);
}

TEST(PretoucherTest, StopEndsARunningPreTouch) {
  common::MappingPool pool(0);
  PretouchPlan plan;
  plan.sizes.assign(64, 64 * kMiB);  // 4 GiB: far from done when Stop comes
  plan.bytes = 64 * 64 * kMiB;
  Pretoucher pretoucher(&pool, plan, plan.bytes, nullptr);
  pretoucher.Stop();
  const PretouchProgress p = pretoucher.progress();
  EXPECT_FALSE(p.running);
  EXPECT_EQ(p.end, "stopped");
  EXPECT_LT(p.bytes, plan.bytes);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);
  EXPECT_EQ(pool.stats().allowance_bytes, 0u);
}

}  // namespace
}  // namespace deltaserve::server::internal

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;

// A server started with pretouch_cache faults in one merged model's pool-sized buffers
// once serving; a first cold pull takes them (every one of them), and its weights are
// byte for byte the offline decode; shutdown gives back what no tensor took.
TEST_F(ServerTest, PretouchedServerServesTheOfflineDecode) {
  shape_.layers = 2;
  shape_.hidden = 320;  // pool-sized matrices of sizes no other test of this binary uses
  SetUp();
  ServerOptions o = DefaultOptions();
  o.pretouch_cache = true;
  const internal::MergedMemoryPool& pool = internal::MergedMemoryPool::Process();
  const uint64_t allowance_before = pool.stats().allowance_bytes;
  StartServer(o);
  // embed 1280 x 320 F16 (800 KiB); per layer qkv 320 x 960 F16 (600 KiB), up 320 x 640
  // F16 (400 KiB), down 640 x 320 F32 (800 KiB); the 320-weight biases are below 256 KiB.
  constexpr uint64_t kWant = (800 + 2 * (600 + 400 + 800)) << 10;
  Server::PretouchStats stats = server_->pretouch_stats();
  EXPECT_TRUE(stats.enabled);
  EXPECT_EQ(stats.planned_bytes, kWant);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (stats.running && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
    stats = server_->pretouch_stats();
  }
  EXPECT_EQ(stats.end, "done");
  EXPECT_EQ(stats.bytes, kWant);
  EXPECT_EQ(stats.mappings, 7u);
  EXPECT_EQ(pool.stats().allowance_bytes, allowance_before + o.cache_bytes);
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_pretouch_bytes "),
            static_cast<double>(kWant));
  EXPECT_GT(MetricValue(server_->MetricsText(), "deltaserve_pretouch_seconds "), 0);

  auto client = Client();
  const std::string container = MakeContainer("t", 21);
  ASSERT_THAT(client->PushDeltaFile("t", container).status(), IsOk());
  const uint64_t taken = pool.stats().pretouched_taken;
  const std::string pulled = tmp_.File("t.pulled.safetensors");
  ASSERT_THAT(client->PullWeights("t", pulled).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(container)));
  EXPECT_EQ(pool.stats().pretouched_taken - taken, 7u);  // every pool-sized tensor
  StopServer();
  EXPECT_EQ(pool.stats().allowance_bytes, allowance_before);
  EXPECT_LE(pool.stats().kept_bytes, internal::kMergedPoolBytes);
}

// Without the flag nothing is pre-touched, no allowance is added, and no pretouch metric
// is exported.
TEST_F(ServerTest, NoPretouchWithoutTheFlag) {
  const internal::MergedMemoryPool& pool = internal::MergedMemoryPool::Process();
  const uint64_t allowance_before = pool.stats().allowance_bytes;
  StartServer();
  EXPECT_FALSE(server_->pretouch_stats().enabled);
  EXPECT_EQ(pool.stats().allowance_bytes, allowance_before);
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_pretouch_bytes "), -1);
}

}  // namespace
}  // namespace deltaserve::server::testing

#include "common/mapping_pool.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace deltaserve::common {
namespace {

using ::deltaserve::testing::StatusIs;

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = size_t{1} << 20;

// Pages of [p, p + bytes) resident in memory now (mincore).
size_t ResidentPages(const void* p, size_t bytes) {
  std::vector<unsigned char> vec((bytes + 4095) / 4096);
  if (mincore(const_cast<void*>(p), bytes, vec.data()) != 0) return 0;
  size_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

// Whether this kernel populates with madvise(MADV_POPULATE_WRITE) (Linux 5.14+).
bool KernelPopulates() {
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const bool ok = madvise(p, 4096, MADV_POPULATE_WRITE) == 0;
  munmap(p, 4096);
  return ok;
}

// PreTouch's answer: 1 kept, 0 no room, -1 an error.
int PreTouched(MappingPool& pool, uint64_t id, size_t bytes) {
  std::atomic<bool> stop{false};
  absl::StatusOr<bool> kept = pool.PreTouch(id, bytes, stop);
  return kept.ok() ? (*kept ? 1 : 0) : -1;
}

TEST(MappingPoolTest, RoundsToWholePages) {
  EXPECT_EQ(MappingPool::RoundToPages(1), 4096u);
  EXPECT_EQ(MappingPool::RoundToPages(4096), 4096u);
  EXPECT_EQ(MappingPool::RoundToPages(4097), 8192u);
  EXPECT_EQ(MappingPool::RoundToPages(300000), 303104u);  // 74 pages
}

TEST(MappingPoolTest, ReusesAFreedMappingOfTheSameRoundedSizeOnly) {
  MappingPool pool(8 * kMiB);
  auto* a = static_cast<uint8_t*>(pool.Map(kMiB + 5));
  ASSERT_NE(a, nullptr);
  std::memset(a, 0xab, kMiB + 5);
  pool.Unmap(a, kMiB + 5);
  EXPECT_EQ(pool.stats().kept_bytes, kMiB + 4096);  // rounded up to whole pages
  // 1 MiB exactly rounds to another size: a new mapping, the kept one stays.
  auto* b = static_cast<uint8_t*>(pool.Map(kMiB));
  ASSERT_NE(b, nullptr);
  EXPECT_NE(b, a);
  EXPECT_EQ(pool.stats().mapped, 2u);
  EXPECT_EQ(pool.stats().reused, 0u);
  EXPECT_EQ(pool.stats().kept_bytes, kMiB + 4096);
  // Any size that rounds to the kept one's gets it, with its earlier bytes.
  auto* c = static_cast<uint8_t*>(pool.Map(kMiB + 4000));
  EXPECT_EQ(c, a);
  EXPECT_EQ(pool.stats().reused, 1u);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);
  EXPECT_EQ(c[0], 0xab);
  EXPECT_EQ(c[kMiB + 4], 0xab);
  c[kMiB + 3999] = 7;  // the whole rounded size is writable
  pool.Unmap(c, kMiB + 4000);
  pool.Unmap(b, kMiB);
  EXPECT_EQ(pool.stats().kept_bytes, 2 * kMiB + 4096);
}

// What Server::Memory::merged_live_bytes reports: mappings handed out and not yet given
// back, in whole pages; kept ones count apart.
TEST(MappingPoolTest, HandedOutBytesCountMappingsUntilReturned) {
  MappingPool pool(kMiB);
  void* a = pool.Map(300000);  // 74 pages
  EXPECT_EQ(pool.stats().handed_out_bytes, 303104u);
  pool.Unmap(a, 300000);  // kept
  EXPECT_EQ(pool.stats().handed_out_bytes, 0u);
  EXPECT_EQ(pool.stats().kept_bytes, 303104u);
  void* b = pool.Map(300000);  // the kept one
  EXPECT_EQ(b, a);
  EXPECT_EQ(pool.stats().handed_out_bytes, 303104u);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);
  pool.Unmap(b, 300000);
}

TEST(MappingPoolTest, KeepsNoMoreThanItsCap) {
  MappingPool pool(3 * kMiB);
  EXPECT_EQ(pool.max_kept_bytes(), 3 * kMiB);
  void* m[3];
  for (void*& p : m) {
    p = pool.Map(kMiB + 1);  // 1 MiB + 4 KiB each
    ASSERT_NE(p, nullptr);
  }
  for (void* p : m) pool.Unmap(p, kMiB + 1);
  EXPECT_EQ(pool.stats().kept_bytes, 2 * (kMiB + 4096));  // the third would pass the cap
  // A mapping larger than the cap is never kept.
  void* big = pool.Map(4 * kMiB);
  ASSERT_NE(big, nullptr);
  pool.Unmap(big, 4 * kMiB);
  EXPECT_EQ(pool.stats().kept_bytes, 2 * (kMiB + 4096));
  // Both kept mappings are handed out again, then new ones are mapped.
  for (void*& p : m) p = pool.Map(kMiB + 1);
  EXPECT_EQ(pool.stats().reused, 2u);
  EXPECT_EQ(pool.stats().mapped, 5u);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);
  for (void* p : m) pool.Unmap(p, kMiB + 1);
}

TEST(MappingPoolTest, CapZeroKeepsNothing) {
  MappingPool pool(0);
  void* a = pool.Map(kMiB);
  pool.Unmap(a, kMiB);
  void* b = pool.Map(kMiB);
  pool.Unmap(b, kMiB);
  const MappingPool::Stats s = pool.stats();
  EXPECT_EQ(s.kept_bytes, 0u);
  EXPECT_EQ(s.reused, 0u);
  EXPECT_EQ(s.mapped, 2u);
  EXPECT_EQ(s.handed_out_bytes, 0u);
}

// kFaultOnWrite hands out a fresh mapping untouched; kPopulate hands it out resident
// (where the kernel has MADV_POPULATE_WRITE), zeros either way.
TEST(MappingPoolTest, FreshPagesArePopulatedOnlyWhenAsked) {
  MappingPool lazy(0);
  auto* p = static_cast<uint8_t*>(lazy.Map(2 * kMiB));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(ResidentPages(p, 2 * kMiB), 0u);
  EXPECT_EQ(p[2 * kMiB - 1], 0);
  lazy.Unmap(p, 2 * kMiB);
  if (!KernelPopulates()) GTEST_SKIP() << "no MADV_POPULATE_WRITE (Linux < 5.14)";
  MappingPool eager(0, MappingPool::FreshPages::kPopulate);
  auto* q = static_cast<uint8_t*>(eager.Map(2 * kMiB));
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(ResidentPages(q, 2 * kMiB), 2 * kMiB / 4096);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[2 * kMiB - 1], 0);
  EXPECT_EQ(eager.stats().mapped, 1u);
  eager.Unmap(q, 2 * kMiB);
}

// An allowance lets the pool keep pre-touched mappings beyond its cap: kept bytes stay
// within cap + allowance while nothing is handed out, and each kept page is resident.
TEST(MappingPoolTest, PreTouchedBytesStayWithinCapPlusAllowance) {
  MappingPool pool(kMiB);
  EXPECT_EQ(PreTouched(pool, 1, kMiB), 0);  // no allowance 1 yet
  const uint64_t id = pool.AddAllowance(3 * kMiB);
  EXPECT_EQ(pool.stats().allowance_bytes, 3 * kMiB);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(PreTouched(pool, id, kMiB), 1) << i;
  EXPECT_EQ(PreTouched(pool, id, kMiB), 0);  // a fifth would pass 4 MiB
  EXPECT_EQ(PreTouched(pool, id, 4096), 0);
  EXPECT_EQ(pool.stats().kept_bytes, 4 * kMiB);
  EXPECT_EQ(pool.stats().pretouched_bytes, 4 * kMiB);
  EXPECT_EQ(pool.stats().mapped, 0u);
  auto* p = static_cast<uint8_t*>(pool.Map(kMiB));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(ResidentPages(p, kMiB), kMiB / 4096);  // faulted in ahead
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[kMiB - 1], 0);
  EXPECT_EQ(pool.stats().pretouched_taken, 1u);
  EXPECT_EQ(pool.stats().reused, 1u);  // a pre-touched mapping counts as reused too
  EXPECT_EQ(pool.stats().handed_out_bytes, kMiB);
  // A taken mapping counts as handed out: still no room for another.
  EXPECT_EQ(PreTouched(pool, id, kMiB), 0);
  pool.Unmap(p, kMiB);  // kept again, as a freed buffer
  EXPECT_EQ(pool.stats().kept_bytes, 4 * kMiB);
  EXPECT_EQ(pool.stats().pretouched_bytes, 3 * kMiB);
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.stats().kept_bytes, kMiB);  // the freed buffer, within the cap
}

// A pre-touched mapping goes to a buffer of its rounded size only.
TEST(MappingPoolTest, HandsOutPreTouchedMappingsByExactSize) {
  MappingPool pool(0);
  const uint64_t id = pool.AddAllowance(8 * kMiB);
  ASSERT_EQ(PreTouched(pool, id, 2 * kMiB), 1);
  ASSERT_EQ(PreTouched(pool, id, kMiB), 1);
  void* other = pool.Map(kMiB + 4096);  // no pre-touched mapping of this size
  EXPECT_EQ(pool.stats().mapped, 1u);
  EXPECT_EQ(pool.stats().pretouched_taken, 0u);
  void* one = pool.Map(kMiB);
  void* two = pool.Map(2 * kMiB - 100);  // rounds to 2 MiB
  EXPECT_EQ(pool.stats().pretouched_taken, 2u);
  EXPECT_EQ(pool.stats().mapped, 1u);
  EXPECT_EQ(pool.stats().pretouched_bytes, 0u);
  EXPECT_EQ(ResidentPages(two, 2 * kMiB), 2 * kMiB / 4096);
  void* again = pool.Map(kMiB);  // none left of 1 MiB: a new mapping
  EXPECT_EQ(pool.stats().mapped, 2u);
  EXPECT_EQ(pool.stats().handed_out_bytes, 5 * kMiB + 4096);
  for (auto [q, n] : {std::pair{other, kMiB + 4096}, std::pair{one, kMiB},
                      std::pair{two, 2 * kMiB - 100}, std::pair{again, kMiB}}) {
    pool.Unmap(q, n);
  }
  EXPECT_EQ(pool.stats().handed_out_bytes, 0u);
  EXPECT_EQ(pool.stats().kept_bytes, 5 * kMiB + 4096);  // within the allowance, kept
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);  // cap 0
}

// As buffers the pre-touched mappings do not fit are handed out (a cache filling with
// tensors of other sizes), kept mappings are unmapped: kept + handed out <= cap +
// allowance, back to the cap alone once the allowance is used up.
TEST(MappingPoolTest, ReleasesPreTouchedMemoryAsBuffersFillTheAllowance) {
  MappingPool pool(kMiB);
  const uint64_t id = pool.AddAllowance(4 * kMiB);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(PreTouched(pool, id, kMiB), 1);
  ASSERT_EQ(pool.stats().kept_bytes, 5 * kMiB);
  std::vector<void*> held;
  held.push_back(pool.Map(2 * kMiB));
  EXPECT_EQ(pool.stats().kept_bytes, 3 * kMiB);  // 1 + 4 - 2
  held.push_back(pool.Map(2 * kMiB));
  EXPECT_EQ(pool.stats().kept_bytes, kMiB);  // the cap
  held.push_back(pool.Map(2 * kMiB));
  EXPECT_EQ(pool.stats().kept_bytes, kMiB);
  EXPECT_EQ(pool.stats().pretouched_bytes, kMiB);
  // Returned buffers are kept as far as the limit allows at each return: not with 4 MiB
  // still handed out, then yes.
  for (void* p : held) pool.Unmap(p, 2 * kMiB);
  EXPECT_EQ(pool.stats().kept_bytes, 5 * kMiB);
  EXPECT_EQ(pool.stats().pretouched_bytes, kMiB);
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.stats().pretouched_bytes, 0u);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);  // 2 MiB freed buffers do not fit the 1 MiB cap
}

// Removing an allowance (a server's shutdown) unmaps its pre-touched mappings that no Map
// took, and the id pre-touches nothing more; freed buffers and another allowance's
// pre-touched mappings stay as far as the lowered limit allows.
TEST(MappingPoolTest, RemovingTheAllowanceFreesItsPreTouchedMemory) {
  MappingPool pool(kMiB);
  const uint64_t id = pool.AddAllowance(4 * kMiB);
  const uint64_t other = pool.AddAllowance(kMiB);
  EXPECT_NE(id, other);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(PreTouched(pool, id, kMiB), 1);
  ASSERT_EQ(PreTouched(pool, other, 512 * kKiB), 1);
  void* taken = pool.Map(kMiB);
  void* freed = pool.Map(256 * kKiB);
  pool.Unmap(freed, 256 * kKiB);
  ASSERT_EQ(pool.stats().kept_bytes, 2 * kMiB + 768 * kKiB);
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.stats().allowance_bytes, kMiB);
  EXPECT_EQ(pool.stats().pretouched_bytes, 512 * kKiB);  // the other allowance's
  EXPECT_EQ(pool.stats().kept_bytes, 768 * kKiB);
  EXPECT_EQ(PreTouched(pool, id, 4096), 0);
  pool.RemoveAllowance(id);  // again: ignored
  EXPECT_EQ(pool.stats().allowance_bytes, kMiB);
  pool.Unmap(taken, kMiB);  // within cap + allowance: kept, as a freed buffer
  EXPECT_EQ(pool.stats().kept_bytes, kMiB + 768 * kKiB);
  pool.RemoveAllowance(other);  // back to the 1 MiB cap: the largest goes
  EXPECT_EQ(pool.stats().pretouched_bytes, 0u);
  EXPECT_EQ(pool.stats().kept_bytes, 256 * kKiB);
}

TEST(MappingPoolTest, PreTouchStopsWhenAsked) {
  MappingPool pool(0);
  const uint64_t id = pool.AddAllowance(8 * kMiB);
  std::atomic<bool> stop{true};
  EXPECT_THAT(pool.PreTouch(id, 8 * kMiB, stop), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(pool.stats().kept_bytes, 0u);
  EXPECT_EQ(PreTouched(pool, id, 8 * kMiB), 1);  // its reservation was returned
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.stats().kept_bytes, 0u);
}

// Threads map, write, check and return buffers of a few sizes at once, while another
// pre-touches under an allowance. Whatever the interleaving: no mapping is handed to two
// holders at once, every Map is counted once, nothing stays handed out, and a cap that
// holds every mapping the threads could have at once bounds the new mappings: one of a
// size is made only while every kept one of that size is held, so by at most kThreads
// holders.
TEST(MappingPoolTest, ConcurrentMapsAndPreTouchesKeepTheirCounts) {
  constexpr int kThreads = 4, kRounds = 300;
  constexpr size_t kSizes[] = {256 * kKiB, 300 * kKiB, kMiB};
  constexpr size_t kAllSizes = 256 * kKiB + 300 * kKiB + kMiB;
  // Room for every thread's mapping of every size, and the pre-touched ones on top.
  MappingPool pool(kThreads * MappingPool::RoundToPages(kAllSizes));
  const uint64_t id = pool.AddAllowance(4 * kMiB);
  std::atomic<bool> stop{false};
  std::atomic<int> pretouch_errors{0};
  std::thread pretoucher([&] {
    for (int i = 0; i < 8; ++i) {
      if (!pool.PreTouch(id, kSizes[i % 3], stop).ok()) ++pretouch_errors;
    }
  });
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const size_t bytes = kSizes[(t + r) % 3];
        auto* p = static_cast<uint8_t*>(pool.Map(bytes));
        if (p == nullptr) {
          ++bad;
          continue;
        }
        const uint8_t mark = static_cast<uint8_t>(t * kRounds + r);
        p[0] = mark;
        p[bytes / 2] = mark;
        p[bytes - 1] = mark;
        std::this_thread::yield();  // let the others run while this one holds it
        if (p[0] != mark || p[bytes / 2] != mark || p[bytes - 1] != mark) ++bad;
        pool.Unmap(p, bytes);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  pretoucher.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(pretouch_errors.load(), 0);
  MappingPool::Stats s = pool.stats();
  EXPECT_EQ(s.reused + s.mapped, uint64_t{kThreads} * kRounds);
  EXPECT_LE(s.mapped, uint64_t{kThreads} * 3);
  EXPECT_LE(s.pretouched_taken, 8u);
  EXPECT_EQ(s.handed_out_bytes, 0u);
  EXPECT_LE(s.kept_bytes, pool.max_kept_bytes() + 4 * kMiB);
  pool.RemoveAllowance(id);
  s = pool.stats();
  EXPECT_EQ(s.pretouched_bytes, 0u);
  EXPECT_EQ(s.allowance_bytes, 0u);
  EXPECT_LE(s.kept_bytes, pool.max_kept_bytes());
  // Every freed mapping was kept (the cap holds them all): the kept bytes are the
  // mappings made, size by size, which the pool hands out again without a new mapping.
  size_t kept_by_maps = 0;
  std::vector<std::pair<void*, size_t>> all;
  for (const size_t bytes : kSizes) {
    while (true) {
      const uint64_t mapped = pool.stats().mapped;
      void* p = pool.Map(bytes);
      if (pool.stats().mapped != mapped) {
        pool.Unmap(p, bytes);  // a new one: none of this size left
        break;
      }
      all.emplace_back(p, bytes);
      kept_by_maps += MappingPool::RoundToPages(bytes);
    }
  }
  EXPECT_EQ(kept_by_maps, s.kept_bytes);
  for (auto [p, bytes] : all) pool.Unmap(p, bytes);
}

}  // namespace
}  // namespace deltaserve::common

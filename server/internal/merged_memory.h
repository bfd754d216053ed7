// The memory merged tensors are decoded into (MergedBufferAllocator, tensor_cache.h),
// and the freed memory of evicted tensors kept for the next cold ones.
//
// A cold tensor is written into memory the process has not touched, and the kernel's
// fault path (page allocation, cgroup charge, LRU, page table, zero-fill) costs more
// than the merge's own writes: 0.30 s of CPU per GB in 4 KiB pages on the 2-core VM of
// issue 9, against 0.04 s per GB for a memset of pages already there (`madvise
// (MADV_POPULATE_WRITE)` of 1 GiB, same minute). perf of a cold stream_bench stream puts
// 23-27% of the decode workers' samples there.
//
// Every task of a server has the tensor shapes of the one base model, so the memory of
// a tensor the cache evicts fits the next cold tensor of that shape exactly: a buffer of
// at least kMergedPoolMinBytes gets its own anonymous mapping, and a freed one is kept
// for the next buffer of the same size, which then writes over pages that are still
// there, with no fault and no zero-fill. That is the steady state of a server
// whose cache is full and whose pulls are cold. The first pull into an empty cache
// faults every page, unless the server pre-touched memory for it (--pretouch-cache:
// MappingPool::PreTouch under an allowance of the cache budget, driven by
// server/internal/pretouch.h). The pool itself, its limit and its allowance are
// common::MappingPool (common/mapping_pool.h); this file holds the server's sizes.
//
// Not transparent huge pages: on this VM class (Firecracker) a freshly allocated 2 MiB
// page costs a host-side fault. A cold stream_bench stream with MADV_HUGEPAGE buffers
// spent 30% of all its samples in clear_page_erms, and its decode workers' CPU went
// 1.28-1.43 s -> 1.99-2.99 s (3 runs each, alternating, load 2.8-3.9), while a 2 MiB page
// freed and reused within the same second cost 0.09 s per GB. (Likely cause, not
// proven: the guest's virtio_balloon free page reporting hands freed 2 MiB blocks back
// to the host.) On bare metal huge pages may pay; they are not measured here.
#ifndef DELTASERVE_SERVER_INTERNAL_MERGED_MEMORY_H_
#define DELTASERVE_SERVER_INTERNAL_MERGED_MEMORY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/mapping_pool.h"

namespace deltaserve::server::internal {

// Buffers of at least this many bytes get their own mapping (every weight matrix of a
// 0.5B-class model: the smallest, 256 x 896 fp16, is 448 KiB); smaller ones (norms,
// biases) come from malloc.
inline constexpr size_t kMergedPoolMinBytes = size_t{256} << 10;

// The process pool's cap: the memory of freed merged tensors kept for the next cold
// ones. It stays within the 256 MiB that issue 9's peak-RSS bound (base mapping + cache
// budget + 256 MiB) allows beyond the cache.
inline constexpr size_t kMergedPoolBytes = size_t{128} << 20;

// The mappings of merged tensor buffers (MergedBufferAllocator, tensor_cache.h): a
// common::MappingPool (exact page-rounded sizes, fresh pages faulted in by the merge's
// own writes, an allowance for --pretouch-cache), plus the count of buffers that never
// reached it because a new tensor took one over whole. In the pool's terms: the
// allowance A is the cache budget, and the handed-out bytes H are every merged buffer of
// pool size alive (the cache's, and those streams or loads hold; Server::Memory::
// merged_live_bytes), so an empty cache may hold all of A pre-touched and the pool
// shrinks back to kMergedPoolBytes as the cache fills. Thread-safe.
class MergedMemoryPool final : public common::MappingPool {
 public:
  explicit MergedMemoryPool(size_t max_kept_bytes) : MappingPool(max_kept_bytes) {}

  // The pool MergedBufferAllocator uses; its cap is kMergedPoolBytes. Never destroyed.
  static MergedMemoryPool& Process();

  // Buffers a new tensor took over whole from an evicted one of its size, without a Map
  // (DecodeMergedTensor counts them here, for the same statistics), since construction.
  void CountHandOver() { handed_over_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t handed_over() const { return handed_over_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> handed_over_{0};
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_MERGED_MEMORY_H_

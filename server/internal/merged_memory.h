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
// whose cache is full and whose pulls are cold; the first pull into an empty cache
// still faults every page.
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

#include <cstddef>
#include <cstdint>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace deltaserve::server::internal {

// Buffers of at least this many bytes get their own mapping (every weight matrix of a
// 0.5B-class model: the smallest, 256 x 896 fp16, is 448 KiB); smaller ones (norms,
// biases) come from malloc.
inline constexpr size_t kMergedPoolMinBytes = size_t{256} << 10;

// Mappings for merged tensor buffers, and the freed ones kept for reuse: at most
// `max_cached_bytes` of them (a free that would exceed it unmaps). Kept mappings count
// in the process's RSS. Reuse is by exact size (rounded up to 4 KiB): a mapping is never
// handed to a smaller buffer, whose cache entry would then hold memory it does not
// count. Thread-safe.
class MergedMemoryPool {
 public:
  explicit MergedMemoryPool(size_t max_cached_bytes) : max_cached_bytes_(max_cached_bytes) {}
  ~MergedMemoryPool();  // unmaps every kept mapping
  MergedMemoryPool(const MergedMemoryPool&) = delete;
  MergedMemoryPool& operator=(const MergedMemoryPool&) = delete;

  // The pool MergedBufferAllocator uses; its cap is kMergedPoolBytes.
  static MergedMemoryPool& Process();

  // `bytes` (> 0) of uninitialised memory (a reused mapping keeps earlier bytes): a
  // kept mapping of the same rounded size, else a new one. Null if the kernel refuses
  // the mapping.
  void* Map(size_t bytes);
  // Returns memory from Map(bytes) (the same `bytes`): kept if the cap allows, else
  // unmapped.
  void Unmap(void* p, size_t bytes);

  size_t cached_bytes() const;
  // Bytes of the mappings handed out by Map and not yet given back to Unmap (rounded
  // to pages): live merged buffers, in the cache or held by streams.
  size_t live_bytes() const;
  // Maps served from a kept mapping / by a new mapping, since construction.
  uint64_t reused() const;
  uint64_t mapped() const;
  // Buffers a new tensor took over whole from an evicted one of its size, without a Map
  // (DecodeMergedTensor counts them here, for the same statistics).
  void CountHandOver();
  uint64_t handed_over() const;

 private:
  const size_t max_cached_bytes_;
  mutable absl::Mutex mu_;
  std::multimap<size_t, void*> cached_ ABSL_GUARDED_BY(mu_);  // rounded size -> mapping
  size_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reused_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t mapped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t handed_over_ ABSL_GUARDED_BY(mu_) = 0;
};

// The process pool's cap: the memory of freed merged tensors kept for the next cold
// ones. It stays within the 256 MiB that issue 9's peak-RSS bound (base mapping + cache
// budget + 256 MiB) allows beyond the cache.
inline constexpr size_t kMergedPoolBytes = size_t{128} << 20;

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_MERGED_MEMORY_H_

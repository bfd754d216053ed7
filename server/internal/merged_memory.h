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
// PreTouch below, driven by server/internal/pretouch.h).
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
#include <map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
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
//
// Pre-touch (deltaserved --pretouch-cache, server/internal/pretouch.h): an allowance of
// A bytes (AddAllowance, A = the cache budget) lets the pool also keep mappings that
// PreTouch mapped and faulted in ahead of time, for the first cold tensors of those
// sizes. The kept bytes (pre-touched, freed, and those being pre-touched) then stay
// within max_cached_bytes + A - min(H, A), H being the bytes handed out by Map and not
// yet returned (every merged buffer of pool size alive: the cache's, and those streams
// or loads hold). So kept + handed-out memory stays within max_cached_bytes + A while H
// <= A (an empty cache may hold all of A pre-touched), and the pool shrinks back to
// max_cached_bytes as the cache fills: a Map that finds no mapping of its size unmaps
// kept ones over the limit. With no allowance the limit is max_cached_bytes, as before.
class MergedMemoryPool {
 public:
  explicit MergedMemoryPool(size_t max_cached_bytes) : max_cached_bytes_(max_cached_bytes) {}
  ~MergedMemoryPool();  // unmaps every kept mapping
  MergedMemoryPool(const MergedMemoryPool&) = delete;
  MergedMemoryPool& operator=(const MergedMemoryPool&) = delete;

  // The pool MergedBufferAllocator uses; its cap is kMergedPoolBytes.
  static MergedMemoryPool& Process();

  // `bytes` (> 0) of uninitialised memory (a reused mapping keeps earlier bytes; a
  // pre-touched one is zeros): a kept mapping of the same rounded size, else a new one.
  // Null if the kernel refuses the mapping.
  void* Map(size_t bytes);
  // Returns memory from Map(bytes) (the same `bytes`): kept if the limit allows, else
  // unmapped.
  void Unmap(void* p, size_t bytes);

  // Raises the limit by `bytes` (see the class comment) and returns the allowance's id
  // (> 0), for PreTouch and RemoveAllowance.
  uint64_t AddAllowance(size_t bytes);
  // Removes allowance `id`: unmaps its pre-touched mappings that no Map took, then kept
  // mappings over the lowered limit (largest first). A PreTouch of `id` in progress
  // unmaps its mapping when done. Unknown ids are ignored.
  void RemoveAllowance(uint64_t id);
  // Maps `bytes` (> 0, rounded up to 4 KiB), faults in every page
  // (madvise(MADV_POPULATE_WRITE), Linux 5.14+, in slices of kPreTouchSliceBytes;
  // writing one byte per page where the kernel refuses that) and keeps it for the next
  // Map of that size, under allowance `id`. Returns true when kept; false, with nothing
  // mapped, when the limit has no room for it now (or `id` is unknown). Errors:
  // Cancelled when `stop` is set (checked between slices; the mapping is unmapped) or
  // `id` was removed meanwhile; ResourceExhausted when the kernel refuses the mapping.
  // Blocks for the whole populate (0.3 s per GB on the VM of issue 9); the pool's lock is
  // held only to reserve and to insert.
  absl::StatusOr<bool> PreTouch(uint64_t id, size_t bytes, const std::atomic<bool>& stop);

  size_t cached_bytes() const;  // kept now, pre-touched ones included
  // Pre-touched bytes kept now (no Map took them yet), of every allowance.
  size_t pretouched_bytes() const;
  // Bytes handed out by Map and not returned (H above).
  size_t handed_out_bytes() const;
  // The same figure by its other name: the mappings of live merged buffers, in the
  // cache or held by streams (rounded to pages).
  size_t live_bytes() const { return handed_out_bytes(); }
  // Sum of the allowances now.
  size_t allowance_bytes() const;
  // Maps served from a kept mapping (freed or pre-touched) / by a new mapping / from a
  // pre-touched mapping, since construction.
  uint64_t reused() const;
  uint64_t mapped() const;
  uint64_t pretouched_taken() const;
  // Buffers a new tensor took over whole from an evicted one of its size, without a Map
  // (DecodeMergedTensor counts them here, for the same statistics).
  void CountHandOver();
  uint64_t handed_over() const;

 private:
  struct Kept {
    void* p;
    uint64_t allowance;  // 0: a freed buffer; else the allowance it was pre-touched under
  };
  // The most kept + pending bytes may be now.
  size_t LimitLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves kept mappings (largest first) to *out until kept + pending <= the limit.
  void TrimLocked(std::vector<std::pair<size_t, void*>>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Erases a kept mapping (without unmapping it); returns the next one.
  std::multimap<size_t, Kept>::iterator EraseKeptLocked(std::multimap<size_t, Kept>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_cached_bytes_;
  mutable absl::Mutex mu_;
  std::multimap<size_t, Kept> cached_ ABSL_GUARDED_BY(mu_);  // rounded size -> mapping
  size_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pretouched_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // part of cached_bytes_
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;     // reserved by PreTouch calls running
  size_t handed_out_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, size_t> allowances_ ABSL_GUARDED_BY(mu_);  // id -> bytes
  size_t allowance_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_allowance_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t reused_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t mapped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pretouched_taken_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t handed_over_ ABSL_GUARDED_BY(mu_) = 0;
};

// Bytes PreTouch faults in per madvise call: each call holds the process's mmap lock for
// reading about 1 ms (0.3 s per GB), so an mmap or munmap of another thread never waits
// long behind a pre-touch that runs at idle priority.
inline constexpr size_t kPreTouchSliceBytes = size_t{4} << 20;

// The process pool's cap: the memory of freed merged tensors kept for the next cold
// ones. It stays within the 256 MiB that issue 9's peak-RSS bound (base mapping + cache
// budget + 256 MiB) allows beyond the cache.
inline constexpr size_t kMergedPoolBytes = size_t{128} << 20;

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_MERGED_MEMORY_H_

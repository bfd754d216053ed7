// A pool of anonymous memory mappings that keeps freed ones for the next request of
// their size, so that large buffers freed and allocated again and again (merged tensors,
// RocksDB record blocks) are written into pages the process already has.
//
// Why: a fresh anonymous mapping costs the kernel a fault per 4 KiB page the first time
// it is written (page allocation, cgroup charge, LRU, page table, zero-fill): 0.30 s of
// CPU per GB on the 2-core VM of issue 9, against 0.04 s per GB to rewrite pages that
// are already there (madvise(MADV_POPULATE_WRITE) of 1 GiB vs a memset of it, same
// minute). A kept mapping handed out again writes over its resident pages: no fault, no
// zero-fill.
//
// Contract, in bytes throughout:
// - Sizes. Map(bytes) rounds `bytes` (> 0) up to whole 4 KiB pages (RoundToPages) and
//   hands out a mapping of exactly that rounded size: reuse is by exact rounded size,
//   never a larger mapping for a smaller request (its user would hold memory it does
//   not count). Users that want coarser reuse round to their own classes first
//   (storage/internal/block_memory.h).
// - What is kept, and for how long. Unmap(p, bytes) keeps the mapping (its pages as they
//   are: not MADV_FREE, not MADV_DONTNEED) if the kept bytes then stay within the limit
//   below, else unmaps it. A kept mapping stays until a Map of its size takes it, until
//   a lowered limit trims it (largest first), or until the pool is destroyed.
// - Budget. `max_kept_bytes`: the most the pool keeps with no allowance. Kept mappings
//   count in the process's RSS; handed-out ones are the user's.
// - Allowance (pre-touch). AddAllowance(A) lets the pool also keep mappings that
//   PreTouch mapped and faulted in ahead of time. Then kept bytes (freed, pre-touched,
//   and those being pre-touched) stay within
//       limit = max_kept_bytes + A - min(H, A),
//   A the sum of the allowances and H the bytes handed out by Map and not yet returned.
//   So kept + handed-out memory stays within max_kept_bytes + A while H <= A, and the
//   pool shrinks back to max_kept_bytes as handed-out memory grows: a Map that finds no
//   kept mapping of its size first unmaps kept ones over the lowered limit. With no
//   allowance the limit is max_kept_bytes.
// - Fresh pages. A new mapping from Map is MAP_PRIVATE | MAP_ANONYMOUS, read-write, 4 KiB
//   pages (no MADV_HUGEPAGE: on this VM class a fresh 2 MiB page costs a host-side fault;
//   server/internal/merged_memory.h has the figures). With FreshPages::kPopulate it is
//   faulted in at once by one madvise(MADV_POPULATE_WRITE) (Linux 5.14+; an older kernel
//   refuses it, and the pages fault in on first write as with kFaultOnWrite). PreTouch
//   populates in slices of kPreTouchSliceBytes and writes one byte a page where the
//   kernel refuses MADV_POPULATE_WRITE. Not mmap(MAP_POPULATE): for a private writable
//   mapping the kernel does the same write faults after the mmap, but in one go that
//   cannot be sliced or stopped, and it says nothing when it cannot (not measured apart).
// - Contents. Memory from Map is uninitialised: a reused mapping holds its last user's
//   bytes; a fresh or pre-touched one is zeros.
// - Errors. Map returns null when the kernel refuses a mapping (nothing is counted);
//   PreTouch returns absl::Status codes (see there). Nothing throws or aborts.
// - Thread safety. Every method is thread-safe. One mutex guards the bookkeeping; mmap,
//   munmap and madvise run outside it, so a slow kernel call of one thread never holds
//   another's Map.
#ifndef DELTASERVE_COMMON_MAPPING_POOL_H_
#define DELTASERVE_COMMON_MAPPING_POOL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace deltaserve::common {

// Bytes PreTouch faults in per madvise call: each call holds the process's mmap lock for
// reading about 1 ms (0.3 s per GB), so an mmap or munmap of another thread never waits
// long behind a pre-touch that runs at idle priority.
inline constexpr size_t kPreTouchSliceBytes = size_t{4} << 20;

class MappingPool {
 public:
  // What a new mapping from Map is like before it is handed out.
  enum class FreshPages {
    kFaultOnWrite,  // untouched: each page faults in when first written
    kPopulate,      // faulted in at once (madvise(MADV_POPULATE_WRITE)), where supported
  };

  explicit MappingPool(size_t max_kept_bytes, FreshPages fresh = FreshPages::kFaultOnWrite)
      : max_kept_bytes_(max_kept_bytes), fresh_(fresh) {}
  // Unmaps every kept mapping. Mappings still handed out stay mapped (and leak): REQUIRES
  // every Map to have been matched by an Unmap.
  ~MappingPool();
  MappingPool(const MappingPool&) = delete;
  MappingPool& operator=(const MappingPool&) = delete;

  // `bytes` (> 0) rounded up to a multiple of 4 KiB: the size Map hands out and keeps.
  static size_t RoundToPages(size_t bytes);

  // A mapping of RoundToPages(bytes) bytes, uninitialised (see Contents above): a kept
  // one of that size (freed or pre-touched) if there is one, else a
  // new one. Null if the kernel refuses the mapping.
  void* Map(size_t bytes);
  // Returns a mapping from Map(bytes) (the same `bytes`, or any that rounds alike): kept
  // if the limit allows, else unmapped. REQUIRES: `p` is handed out by this pool.
  void Unmap(void* p, size_t bytes);

  // Raises the limit by `bytes` (see Allowance above) and returns the allowance's id
  // (> 0), for PreTouch and RemoveAllowance.
  uint64_t AddAllowance(size_t bytes);
  // Removes allowance `id`: unmaps its pre-touched mappings that no Map took, then kept
  // mappings over the lowered limit (largest first). A PreTouch of `id` in progress
  // unmaps its mapping when done. Unknown ids are ignored.
  void RemoveAllowance(uint64_t id);
  // Maps RoundToPages(bytes) (bytes > 0), faults in every page (see Fresh pages above)
  // and keeps it for the next Map of that size, under allowance `id`. Returns true when
  // kept; false, with nothing mapped, when the limit has no room for it now (or `id` is
  // unknown). Errors: Cancelled when `stop` is set (checked between slices; the mapping
  // is unmapped) or `id` was removed meanwhile; ResourceExhausted when the kernel refuses
  // the mapping. Blocks for the whole populate (0.3 s per GB on the VM of issue 9); the
  // pool's lock is held only to reserve room and to insert.
  absl::StatusOr<bool> PreTouch(uint64_t id, size_t bytes, const std::atomic<bool>& stop);

  // One consistent snapshot of the pool's state and counters.
  struct Stats {
    size_t kept_bytes = 0;        // kept now, pre-touched ones included
    size_t pretouched_bytes = 0;  // part of kept_bytes: pre-touched, no Map took them yet
    size_t handed_out_bytes = 0;  // by Map and not returned (H above), rounded sizes
    size_t allowance_bytes = 0;   // sum of the allowances now (A above)
    // Since construction: Maps served from a kept mapping (freed or pre-touched) / by a
    // new mapping / from a pre-touched mapping (part of `reused`).
    uint64_t reused = 0;
    uint64_t mapped = 0;
    uint64_t pretouched_taken = 0;
  };
  Stats stats() const;
  size_t max_kept_bytes() const { return max_kept_bytes_; }

 private:
  struct Kept {
    void* p;
    uint64_t allowance;  // 0: a freed mapping; else the allowance it was pre-touched under
  };
  using KeptMap = std::multimap<size_t, Kept>;           // rounded size -> mapping
  using Unmaps = std::vector<std::pair<size_t, void*>>;  // (bytes, mapping), after the lock

  // The most kept + pending bytes may be now.
  size_t LimitLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `bytes` more kept stay within the limit.
  bool RoomLocked(size_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves kept mappings (largest first) to *out until kept + pending <= the limit.
  void TrimLocked(Unmaps* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void KeepLocked(size_t bytes, void* p, uint64_t allowance) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Erases a kept mapping (without unmapping it); returns the next one.
  KeptMap::iterator EraseKeptLocked(KeptMap::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_kept_bytes_;
  const FreshPages fresh_;
  mutable absl::Mutex mu_;
  KeptMap kept_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // reserved by PreTouch calls running
  std::map<uint64_t, size_t> allowances_ ABSL_GUARDED_BY(mu_);  // id -> bytes
  uint64_t next_allowance_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_MAPPING_POOL_H_

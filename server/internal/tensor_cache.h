// Byte-budgeted LRU cache of merged tensors, with single flight and pinning.
//
// What is cached: the merged (base + decoded delta) bytes of one tensor of one task
// version in one output dtype, with their XXH3-64. Chosen over caching decoded deltas
// because a hit then costs nothing but the copy onto the wire (stream_bench measures
// cold vs cached). Entries are shared_ptr<const>: a stream keeps the tensor it is
// sending alive even if the cache evicts it meanwhile, so the memory bound is the
// budget plus what in-flight streams hold (at most prefetch+1 tensors each).
//
// Keys are strings "<group>#<anything>"; a group is one task ("tenant/task"), the unit
// of EraseGroup and Pin. Entries of a pinned group are never evicted.
//
// Single flight: concurrent GetOrLoad calls for the same key run `loader` once; every
// caller's `done` gets the same result (errors are not cached). Nothing here blocks:
// the loader runs on the thread of the first caller (a worker-pool thread), `done`
// runs either inline (hit) or on the loader's thread.
//
// Thread-safe.
#ifndef DELTASERVE_SERVER_INTERNAL_TENSOR_CACHE_H_
#define DELTASERVE_SERVER_INTERNAL_TENSOR_CACHE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "codec/tensor.h"

namespace deltaserve::server::internal {

class Metrics;

// Allocator of merged tensor bytes: resize() leaves new bytes uninitialised (the merge
// writes every byte). Zero-filling first cost one extra 1 GB memset per cold pull of a
// 0.5B model, on the loading worker outside the parallel merge. Buffers of at least
// kMergedPoolMinBytes are mappings of MergedMemoryPool::Process() (merged_memory.h): the
// memory of evicted tensors is kept (capped) for the next cold tensor of the same size,
// whose bytes may then start as an earlier tensor's; with --pretouch-cache the first
// cold tensors of each size take mappings faulted in ahead (server/internal/pretouch.h). (MADV_HUGEPAGE on these buffers
// was tried twice and dropped: on this VM class a fresh huge page is a host-side fault;
// see merged_memory.h.)
template <class T>
struct MergedBufferAllocator {
  using value_type = T;
  MergedBufferAllocator() = default;
  template <class U>
  MergedBufferAllocator(const MergedBufferAllocator<U>&) {}  // NOLINT: rebinding
  T* allocate(size_t n) { return static_cast<T*>(AllocateBytes(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { FreeBytes(p, n * sizeof(T)); }
  template <class U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;  // default-init: no zero fill
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const MergedBufferAllocator<U>&) const { return true; }
  static void* AllocateBytes(size_t bytes);
  static void FreeBytes(void* p, size_t bytes);
};
using MergedBuffer = std::vector<uint8_t, MergedBufferAllocator<uint8_t>>;

// Progress of a merged tensor whose bytes are still being written (a cold decode, so
// that a stream can send its first rows while later rows decode). The decoder marks
// byte ranges final in any order (Publish); the fill tracks the contiguous prefix
// [0, ready()) and hashes it as it grows, so the tensor's XXH3-64 is known when the
// last byte is. Readers read only bytes below ready() (acquire), or everything once
// done(). Thread-safe.
class TensorFill {
 public:
  // `data` holds `size` bytes and outlives the fill.
  TensorFill(const uint8_t* data, uint64_t size);
  ~TensorFill();
  TensorFill(const TensorFill&) = delete;
  TensorFill& operator=(const TensorFill&) = delete;

  // Bytes [begin, end) are final. REQUIRES: ranges published are disjoint, within size.
  void Publish(uint64_t begin, uint64_t end);
  // The XXH3-64 of every byte. FailedPrecondition unless every byte was published.
  absl::StatusOr<uint64_t> Digest() const;
  // Ends the fill: OK after the last Publish (and Digest), or the decode's error.
  // Wakes every waiter. Idempotent (the first status stays).
  void Finish(absl::Status status);

  uint64_t ready() const;
  bool done() const;
  // OK while running or after a good Finish; the decode's error otherwise.
  absl::Status status() const;

  // True if `bytes` bytes are ready (and the fill is done, when `need_done`) or it
  // failed; otherwise `wake` is kept and called once, on the publishing thread without
  // any lock of this class, when that holds. Returns false in that case.
  bool ReadyOr(uint64_t bytes, bool need_done, std::function<void()> wake);

 private:
  struct Waiter {
    uint64_t bytes;
    bool need_done;
    std::function<void()> wake;
  };
  // Moves the waiters that may proceed into *out.
  void TakeWakeableLocked(std::vector<std::function<void()>>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint8_t* const data_;
  const uint64_t size_;
  mutable absl::Mutex mu_;
  std::atomic<uint64_t> ready_{0};                             // written under mu_
  std::map<uint64_t, uint64_t> pending_ ABSL_GUARDED_BY(mu_);  // final ranges past ready_
  void* hash_ ABSL_GUARDED_BY(mu_);                            // XXH3_state_t of [0, ready_)
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
};

struct MergedTensor {
  codec::TensorInfo info;  // name, output dtype, shape
  uint32_t index = 0;      // position in the container
  MergedBuffer data;
  // XXH3-64 (seed 0) of data; when `fill` is set, valid only once fill->done() and
  // fill->status() is OK.
  uint64_t xxh3_64 = 0;
  // Values the cast to info.dtype saturated (F16/BF16; TensorHeader.saturated_values);
  // valid when xxh3_64 is.
  uint64_t saturated_values = 0;
  // Set while (and after) a decode writes `data`: bytes below fill->ready() are final.
  // Null: every byte was final when the tensor was published. A tensor in the cache is
  // always complete (loads insert it after their fill is done).
  std::unique_ptr<TensorFill> fill;
  bool complete() const { return fill == nullptr || fill->done(); }
};
using MergedTensorPtr = std::shared_ptr<const MergedTensor>;

class TensorCache {
 public:
  using Loader = std::function<absl::StatusOr<MergedTensorPtr>()>;
  // `hit`: served from the cache without running a loader for this call.
  using Done = std::function<void(const absl::StatusOr<MergedTensorPtr>& result, bool hit)>;

  // `metrics` may be null (tests); otherwise it must outlive the cache.
  TensorCache(uint64_t capacity_bytes, Metrics* metrics);

  // See the file comment. `group` must be the prefix of `key` up to '#'.
  void GetOrLoad(const std::string& group, const std::string& key, const Loader& loader,
                 Done done);

  // Evicts unpinned entries, least recently used first, until a tensor of `bytes` fits
  // beside the rest within the budget (nothing if `bytes` alone exceeds it), and returns
  // them, for the caller to drop (or reuse) after the cache's lock: freeing a large
  // tensor (munmap) takes tens of ms. A loader calls it before it allocates its tensor,
  // so that the memory of what is evicted is freed first (and reused, merged_memory.h)
  // rather than held beside the new tensor until the insert evicts: peak memory stays
  // near the budget, not budget + tensor. Concurrent loaders each make room for their
  // own tensor only; the insert still evicts what exceeds the budget.
  std::vector<MergedTensorPtr> MakeRoom(uint64_t bytes);

  // Drops every entry of `group` (task deleted or overwritten). Loads in flight still
  // finish and deliver their result, which is then cached under its (old) key only if
  // the group was not erased meanwhile.
  void EraseGroup(const std::string& group);

  // Pins / unpins a group (a counted pin). Unpin returns false if it was not pinned.
  void Pin(const std::string& group);
  bool Unpin(const std::string& group);
  bool IsPinned(const std::string& group) const;
  // Bytes held by entries of pinned groups / of `group`.
  uint64_t pinned_bytes() const;
  uint64_t group_bytes(const std::string& group) const;

  uint64_t capacity_bytes() const { return capacity_; }
  uint64_t bytes() const;
  size_t entries() const;

 private:
  struct Entry {
    std::string group;
    MergedTensorPtr value;
    std::list<std::string>::iterator lru;
    uint64_t bytes = 0;  // value->data.size()
  };
  struct Flight {
    std::vector<Done> waiters;
    uint64_t group_epoch;  // epoch of the group when the load started
  };

  // Inserts under mu_, evicting unpinned LRU entries to stay within the budget.
  void InsertLocked(const std::string& group, const std::string& key, MergedTensorPtr value,
                    std::vector<MergedTensorPtr>* evicted) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts unpinned LRU entries until bytes_ <= limit (or none is left). Their values
  // go to *evicted (if not null), for the caller to drop after mu_: freeing a large
  // tensor (munmap) takes tens of ms, which other lookups should not wait for.
  void EvictLocked(uint64_t limit, std::vector<MergedTensorPtr>* evicted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveLocked(std::unordered_map<std::string, Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishBytesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t capacity_;
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  std::unordered_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);  // front = most recently used
  std::unordered_map<std::string, Flight> flights_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> pins_ ABSL_GUARDED_BY(mu_);
  // Bumped by EraseGroup so that a load that started before does not re-insert.
  std::unordered_map<std::string, uint64_t> group_epochs_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_TENSOR_CACHE_H_

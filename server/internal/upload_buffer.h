// The memory an upload (PutDelta) is received into: one anonymous mapping of the declared
// size rounded up to whole 2 MiB huge pages, aligned to one and asked to be backed by
// transparent huge pages (MADV_HUGEPAGE), so that filling 64 MB takes 32 page faults
// instead of 16384 (measured: page faults and their cgroup accounting were about a tenth
// of PutDelta's CPU time with a plain std::string).
//
// A fresh mapping still costs the kernel a zero-fill of every page the upload touches
// (clear_page: 9-10% of a push's CPU, `perf record` of `stream_bench --push-only 10`).
// An UploadBufferPool keeps the mappings of finished uploads for the next ones instead:
// a released mapping is marked MADV_FREE (the kernel may take its pages back under
// memory pressure, without writing them anywhere) and handed to the next upload that
// fits in it, which then writes over pages that are still there, with no fault and no
// zero-fill.
#ifndef DELTASERVE_SERVER_INTERNAL_UPLOAD_BUFFER_H_
#define DELTASERVE_SERVER_INTERNAL_UPLOAD_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace deltaserve::server::internal {

class UploadBuffer;

// Mappings released by finished uploads, kept for later ones, at most `max_cached_bytes`
// of them in all (a release that would exceed it unmaps instead: so does one of a
// buffer larger than the cap). Cached mappings stay in the process's address space and
// count in its RSS until reused or reclaimed by the kernel. Thread-safe; must outlive
// every UploadBuffer that uses it.
class UploadBufferPool {
 public:
  // The server's cap: ServerOptions.upload_buffer_cache_bytes.
  explicit UploadBufferPool(size_t max_cached_bytes) : max_cached_bytes_(max_cached_bytes) {}
  ~UploadBufferPool();  // unmaps every cached mapping
  UploadBufferPool(const UploadBufferPool&) = delete;
  UploadBufferPool& operator=(const UploadBufferPool&) = delete;

  // Bytes of the mappings held for reuse now (multiples of 2 MiB).
  size_t cached_bytes() const;

  // One anonymous mapping, as UploadBuffer makes them.
  struct Mapping {
    uint8_t* data = nullptr;  // 2 MiB aligned
    size_t bytes = 0;         // a multiple of 2 MiB
  };

 private:
  friend class UploadBuffer;
  // The smallest cached mapping of at least `bytes`, removed from the pool; or an empty
  // Mapping if none fits.
  Mapping Take(size_t bytes);
  // Keeps `m` (marked MADV_FREE) if the cap allows, else unmaps it.
  void Give(Mapping m);

  const size_t max_cached_bytes_;
  mutable absl::Mutex mu_;
  std::vector<Mapping> cached_ ABSL_GUARDED_BY(mu_);
  size_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// Not thread-safe; the bytes below size() may be read from another thread while the
// owner appends past them (the mapping never moves).
class UploadBuffer {
 public:
  // `pool` (may be null: every Reserve maps afresh and Release unmaps) must outlive the
  // buffer.
  explicit UploadBuffer(UploadBufferPool* pool = nullptr) : pool_(pool) {}
  ~UploadBuffer() { Release(); }
  UploadBuffer(const UploadBuffer&) = delete;
  UploadBuffer& operator=(const UploadBuffer&) = delete;

  // Room for `capacity` bytes (releasing any earlier mapping first): a cached mapping of
  // the pool if one is large enough, else a new one. ResourceExhausted if the mapping is
  // refused. The bytes above size() are unspecified (a reused mapping keeps an earlier
  // upload's bytes there); bytes() never shows them.
  absl::Status Reserve(size_t capacity);
  // REQUIRES: size() + data.size() <= capacity().
  void Append(std::string_view data);
  // Gives the mapping back to the pool (or unmaps it); size() and capacity() become 0.
  void Release();

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }

 private:
  UploadBufferPool* pool_;
  UploadBufferPool::Mapping map_;  // the whole mapping; data_ is its start
  uint8_t* data_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_UPLOAD_BUFFER_H_

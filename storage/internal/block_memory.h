// The memory RocksDB reads record blocks into (the records column family's block cache,
// StoreOptions::record_cache_bytes): a rocksdb::MemoryAllocator.
//
// A record is one table block of its own size (17.5 MB for the 151936 x 896 embedding
// of a 0.5B model at ~1 bit per weight), read with pread into a buffer from this
// allocator, checked, used while one tensor decodes and then freed (the record cache
// keeps little). From malloc, such a buffer was either fresh pages faulted in one by
// one inside pread (4285 faults, 17-20 ms of the 28-30 ms the embedding's read took on
// the 2-core VM of issue 9: the first thing a cold stream waits for), or, once glibc's
// dynamic mmap threshold had risen past it, a chunk that stays resident in a thread's
// arena after the free (136 MiB of free arena memory at the peak of two cold pulls,
// beyond issue 9's peak-RSS bound).
//
// Here a block of at least kMinMappedBlockBytes gets a mapping of its own from a
// common::MappingPool (common/mapping_pool.h): a fresh one is populated with one
// madvise(MADV_POPULATE_WRITE) before RocksDB reads into it (FreshPages::kPopulate: a
// fraction of the cost of one fault per 4 KiB page; Linux 5.14+, else the read faults
// as before), and a freed one is kept, up to `max_kept_bytes` in all, for the next block
// of its size class (sizes rounded up to 8 classes per power of two, so that the record
// of the same tensor of another task, a little larger or smaller, fits), else unmapped.
// Smaller blocks come from malloc. Thread-safe.
#ifndef DELTASERVE_STORAGE_INTERNAL_BLOCK_MEMORY_H_
#define DELTASERVE_STORAGE_INTERNAL_BLOCK_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/mapping_pool.h"
#include "rocksdb/memory_allocator.h"

namespace deltaserve::storage {

// Blocks of at least this many bytes are mappings of their own.
inline constexpr size_t kMinMappedBlockBytes = size_t{256} << 10;
// The store's cap on freed block mappings kept: the largest record of a 0.5B model
// (17.5 MB) and then some. Counts in the process's RSS while kept.
inline constexpr size_t kKeptBlockBytes = size_t{32} << 20;

class BlockMemory final : public rocksdb::MemoryAllocator {
 public:
  explicit BlockMemory(size_t max_kept_bytes)
      : pool_(max_kept_bytes, common::MappingPool::FreshPages::kPopulate) {}
  ~BlockMemory() override = default;  // unmaps the kept mappings; REQUIRES: every block freed
  BlockMemory(const BlockMemory&) = delete;
  BlockMemory& operator=(const BlockMemory&) = delete;

  const char* Name() const override { return "DeltaserveBlockMemory"; }
  // `size` bytes, uninitialised (a reused mapping holds an earlier block's bytes). Null
  // if the kernel refuses a mapping or malloc fails (RocksDB then fails the read).
  void* Allocate(size_t size) override;
  void Deallocate(void* p) override;

  // The size class of a mapped block of `size` bytes (>= kMinMappedBlockBytes): `size`
  // rounded up to a multiple of a 1/8 of its power of two, and to 4 KiB.
  static size_t MappedBytes(size_t size);

  // The mapped blocks: kept_bytes (kept now), reused / mapped (blocks served from a kept
  // mapping / by a new, populated one, since construction), handed_out_bytes (live now).
  common::MappingPool::Stats stats() const { return pool_.stats(); }

 private:
  common::MappingPool pool_;
  // Deallocate is given no size: each live mapped block's class, by address.
  mutable absl::Mutex mu_;
  std::unordered_map<void*, size_t> live_ ABSL_GUARDED_BY(mu_);
};

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_BLOCK_MEMORY_H_

#include "server/internal/merged_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>

namespace deltaserve::server::internal {
namespace {

constexpr size_t kPage = 4096;

size_t RoundToPages(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }  // bytes > 0

// A new anonymous mapping of `bytes` (a multiple of kPage); null if refused.
void* MapFresh(size_t bytes) {
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return map == MAP_FAILED ? nullptr : map;
}

}  // namespace

MergedMemoryPool::~MergedMemoryPool() {
  absl::MutexLock lock(&mu_);
  for (const auto& [bytes, p] : cached_) ::munmap(p, bytes);
}

MergedMemoryPool& MergedMemoryPool::Process() {
  static MergedMemoryPool* pool = new MergedMemoryPool(kMergedPoolBytes);  // never destroyed
  return *pool;
}

void* MergedMemoryPool::Map(size_t bytes) {
  const size_t rounded = RoundToPages(bytes);
  {
    absl::MutexLock lock(&mu_);
    if (auto it = cached_.find(rounded); it != cached_.end()) {
      void* p = it->second;
      cached_.erase(it);
      cached_bytes_ -= rounded;
      live_bytes_ += rounded;
      ++reused_;
      return p;
    }
  }
  void* p = MapFresh(rounded);
  if (p != nullptr) {
    absl::MutexLock lock(&mu_);
    live_bytes_ += rounded;
    ++mapped_;
  }
  return p;
}

void MergedMemoryPool::Unmap(void* p, size_t bytes) {
  const size_t rounded = RoundToPages(bytes);
  {
    absl::MutexLock lock(&mu_);
    live_bytes_ -= rounded;
    if (rounded <= max_cached_bytes_ - std::min(cached_bytes_, max_cached_bytes_)) {
      // Kept as they are, not marked MADV_FREE: marking costs 0.05 s per GB and the
      // rewrite of marked pages 0.05 s per GB more than of plain ones (`madvise` then
      // memset of 256 MiB, this VM), while the cap bounds what the kernel could take.
      cached_.emplace(rounded, p);
      cached_bytes_ += rounded;
      return;
    }
  }
  ::munmap(p, rounded);
}

size_t MergedMemoryPool::cached_bytes() const {
  absl::MutexLock lock(&mu_);
  return cached_bytes_;
}

size_t MergedMemoryPool::live_bytes() const {
  absl::MutexLock lock(&mu_);
  return live_bytes_;
}

uint64_t MergedMemoryPool::reused() const {
  absl::MutexLock lock(&mu_);
  return reused_;
}

void MergedMemoryPool::CountHandOver() {
  absl::MutexLock lock(&mu_);
  ++handed_over_;
}

uint64_t MergedMemoryPool::handed_over() const {
  absl::MutexLock lock(&mu_);
  return handed_over_;
}

uint64_t MergedMemoryPool::mapped() const {
  absl::MutexLock lock(&mu_);
  return mapped_;
}

}  // namespace deltaserve::server::internal

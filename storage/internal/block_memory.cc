#include "storage/internal/block_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstdlib>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace deltaserve::storage {

BlockMemory::~BlockMemory() {
  absl::MutexLock lock(&mu_);
  for (const auto& [bytes, p] : kept_) ::munmap(p, bytes);
}

size_t BlockMemory::MappedBytes(size_t size) {
  const size_t step = std::max<size_t>(std::bit_floor(size) / 8, 4096);
  return (size + step - 1) / step * step;
}

void* BlockMemory::Allocate(size_t size) {
  if (size < kMinMappedBlockBytes) return std::malloc(size);
  const size_t bytes = MappedBytes(size);
  {
    absl::MutexLock lock(&mu_);
    if (auto it = kept_.find(bytes); it != kept_.end()) {
      void* p = it->second;
      kept_.erase(it);
      kept_bytes_ -= bytes;
      live_.emplace(p, bytes);
      ++reused_;
      return p;
    }
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // Faulted in at once rather than page by page inside pread; EINVAL (an older kernel)
  // leaves that to the read, as before.
  ::madvise(p, bytes, MADV_POPULATE_WRITE);
  absl::MutexLock lock(&mu_);
  live_.emplace(p, bytes);
  ++mapped_;
  return p;
}

void BlockMemory::Deallocate(void* p) {
  if (p == nullptr) return;
  size_t bytes = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = live_.find(p);
    if (it != live_.end()) {
      bytes = it->second;
      live_.erase(it);
      if (bytes <= max_kept_bytes_ - std::min(kept_bytes_, max_kept_bytes_)) {
        kept_.emplace(bytes, p);
        kept_bytes_ += bytes;
        return;
      }
    }
  }
  if (bytes == 0) {
    std::free(p);  // a small block, from malloc
  } else {
    ::munmap(p, bytes);
  }
}

size_t BlockMemory::kept_bytes() const {
  absl::MutexLock lock(&mu_);
  return kept_bytes_;
}

uint64_t BlockMemory::reused() const {
  absl::MutexLock lock(&mu_);
  return reused_;
}

uint64_t BlockMemory::mapped() const {
  absl::MutexLock lock(&mu_);
  return mapped_;
}

}  // namespace deltaserve::storage

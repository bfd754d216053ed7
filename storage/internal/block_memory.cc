#include "storage/internal/block_memory.h"

#include <algorithm>
#include <bit>
#include <cstdlib>

namespace deltaserve::storage {

size_t BlockMemory::MappedBytes(size_t size) {
  const size_t step = std::max<size_t>(std::bit_floor(size) / 8, 4096);
  return (size + step - 1) / step * step;
}

void* BlockMemory::Allocate(size_t size) {
  if (size < kMinMappedBlockBytes) return std::malloc(size);
  const size_t bytes = MappedBytes(size);
  void* p = pool_.Map(bytes);
  if (p == nullptr) return nullptr;
  absl::MutexLock lock(&mu_);
  live_.emplace(p, bytes);
  return p;
}

void BlockMemory::Deallocate(void* p) {
  if (p == nullptr) return;
  size_t bytes = 0;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = live_.find(p); it != live_.end()) {
      bytes = it->second;
      live_.erase(it);
    }
  }
  if (bytes == 0) {
    std::free(p);  // a small block, from malloc
  } else {
    pool_.Unmap(p, bytes);
  }
}

}  // namespace deltaserve::storage

#include "server/internal/merged_memory.h"

namespace deltaserve::server::internal {

MergedMemoryPool& MergedMemoryPool::Process() {
  static MergedMemoryPool* pool = new MergedMemoryPool(kMergedPoolBytes);  // never destroyed
  return *pool;
}

}  // namespace deltaserve::server::internal

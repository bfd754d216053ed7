// The memory an upload (PutDelta) is received into: one anonymous mapping of the declared
// size, asked to be backed by transparent huge pages (MADV_HUGEPAGE), so that filling
// 64 MB takes 32 page faults instead of 16384 (measured: page faults and their cgroup
// accounting were about a tenth of PutDelta's CPU time with a plain std::string). Unmapped
// at Release or destruction, so that an idle server keeps none of it.
#ifndef DELTASERVE_SERVER_INTERNAL_UPLOAD_BUFFER_H_
#define DELTASERVE_SERVER_INTERNAL_UPLOAD_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace deltaserve::server::internal {

// Not thread-safe; the bytes below size() may be read from another thread while the
// owner appends past them (the mapping never moves).
class UploadBuffer {
 public:
  UploadBuffer() = default;
  ~UploadBuffer() { Release(); }
  UploadBuffer(const UploadBuffer&) = delete;
  UploadBuffer& operator=(const UploadBuffer&) = delete;

  // Maps room for `capacity` bytes (replacing any earlier mapping). ResourceExhausted if
  // the mapping is refused.
  absl::Status Reserve(size_t capacity);
  // REQUIRES: size() + data.size() <= capacity().
  void Append(std::string_view data);
  // Unmaps; size() and capacity() become 0.
  void Release();

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }

 private:
  void* map_ = nullptr;  // the whole mapping (data_ is its first huge-page boundary)
  size_t map_bytes_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_UPLOAD_BUFFER_H_

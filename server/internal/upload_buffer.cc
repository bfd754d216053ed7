#include "server/internal/upload_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace deltaserve::server::internal {
namespace {

constexpr size_t kHugePage = 2u << 20;

// A new mapping of `bytes` (a multiple of kHugePage) starting on a huge-page boundary:
// one huge page more is mapped and the unaligned head and tail are unmapped again.
// ResourceExhausted if the kernel refuses.
absl::StatusOr<UploadBufferPool::Mapping> MapAligned(size_t bytes);

}  // namespace

UploadBufferPool::~UploadBufferPool() {
  absl::MutexLock lock(&mu_);
  for (const Mapping& m : cached_) ::munmap(m.data, m.bytes);
}

size_t UploadBufferPool::cached_bytes() const {
  absl::MutexLock lock(&mu_);
  return cached_bytes_;
}

UploadBufferPool::Mapping UploadBufferPool::Take(size_t bytes) {
  absl::MutexLock lock(&mu_);
  auto best = cached_.end();
  for (auto it = cached_.begin(); it != cached_.end(); ++it) {
    if (it->bytes >= bytes && (best == cached_.end() || it->bytes < best->bytes)) best = it;
  }
  if (best == cached_.end()) return {};
  const Mapping m = *best;
  cached_.erase(best);
  cached_bytes_ -= m.bytes;
  return m;
}

void UploadBufferPool::Give(Mapping m) {
  {
    absl::MutexLock lock(&mu_);
    if (m.bytes <= max_cached_bytes_ - std::min(cached_bytes_, max_cached_bytes_)) {
      // Lazily freed: the pages stay mapped and are reused as they are unless the kernel
      // needs them first (it then drops them without writing them back, and a later
      // write faults in a zeroed page). Not MADV_DONTNEED, which would drop them now
      // and cost the next upload the zero-fill this pool exists to avoid.
      ::madvise(m.data, m.bytes, MADV_FREE);
      cached_.push_back(m);
      cached_bytes_ += m.bytes;
      return;
    }
  }
  ::munmap(m.data, m.bytes);
}

absl::Status UploadBuffer::Reserve(size_t capacity) {
  Release();
  if (capacity == 0) return absl::OkStatus();
  if (capacity > SIZE_MAX - 2 * kHugePage) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map ", capacity, " bytes for the upload: too large"));
  }
  const size_t bytes = (capacity + kHugePage - 1) / kHugePage * kHugePage;
  UploadBufferPool::Mapping m;
  if (pool_ != nullptr) m = pool_->Take(bytes);
  if (m.data == nullptr) {
    absl::StatusOr<UploadBufferPool::Mapping> fresh = MapAligned(bytes);
    if (!fresh.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot map ", capacity, " bytes for the upload: ", fresh.status().message()));
    }
    m = *fresh;
  }
  map_ = m;
  data_ = m.data;
  capacity_ = capacity;
  return absl::OkStatus();
}

void UploadBuffer::Append(std::string_view data) {
  std::memcpy(data_ + size_, data.data(), data.size());
  size_ += data.size();
}

void UploadBuffer::Release() {
  if (map_.data != nullptr) {
    if (pool_ != nullptr) {
      pool_->Give(map_);
    } else {
      ::munmap(map_.data, map_.bytes);
    }
  }
  map_ = {};
  data_ = nullptr;
  size_ = capacity_ = 0;
}

namespace {

absl::StatusOr<UploadBufferPool::Mapping> MapAligned(size_t bytes) {
  const size_t mapped = bytes + kHugePage;
  void* map = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return absl::ResourceExhaustedError(std::strerror(errno));
  const uintptr_t start = reinterpret_cast<uintptr_t>(map);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  const size_t head = aligned - start;
  if (head > 0) ::munmap(map, head);
  if (kHugePage - head > 0) ::munmap(reinterpret_cast<void*>(aligned + bytes), kHugePage - head);
  uint8_t* data = reinterpret_cast<uint8_t*>(aligned);
  // Advice only: without transparent huge pages the buffer works with small pages.
  ::madvise(data, bytes, MADV_HUGEPAGE);
  return UploadBufferPool::Mapping{data, bytes};
}

}  // namespace
}  // namespace deltaserve::server::internal

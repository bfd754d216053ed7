#include "server/internal/upload_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace deltaserve::server::internal {
namespace {
constexpr size_t kHugePage = 2u << 20;
}  // namespace

absl::Status UploadBuffer::Reserve(size_t capacity) {
  Release();
  if (capacity == 0) return absl::OkStatus();
  // One huge page more than asked for: the data start is aligned up to a boundary.
  const size_t bytes = (capacity + kHugePage - 1) / kHugePage * kHugePage + kHugePage;
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot map ", capacity,
                                                     " bytes for the upload: ",
                                                     std::strerror(errno)));
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(map);
  data_ = reinterpret_cast<uint8_t*>((start + kHugePage - 1) / kHugePage * kHugePage);
  // Advice only: without transparent huge pages the buffer works with small pages.
  ::madvise(data_, bytes - (reinterpret_cast<uintptr_t>(data_) - start), MADV_HUGEPAGE);
  map_ = map;
  map_bytes_ = bytes;
  capacity_ = capacity;
  return absl::OkStatus();
}

void UploadBuffer::Append(std::string_view data) {
  std::memcpy(data_ + size_, data.data(), data.size());
  size_ += data.size();
}

void UploadBuffer::Release() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  data_ = nullptr;
  size_ = capacity_ = 0;
}

}  // namespace deltaserve::server::internal

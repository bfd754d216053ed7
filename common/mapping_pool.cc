#include "common/mapping_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14+; older headers lack it
#endif

namespace deltaserve::common {
namespace {

constexpr size_t kPage = 4096;

// A new anonymous mapping of `bytes` (a multiple of kPage); null if refused.
void* MapFresh(size_t bytes) {
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return map == MAP_FAILED ? nullptr : map;
}

void UnmapAll(const std::vector<std::pair<size_t, void*>>& maps) {
  for (const auto& [bytes, p] : maps) ::munmap(p, bytes);
}

// Faults in bytes [0, bytes) of the fresh mapping `p` (bytes a multiple of kPage), one
// slice at a time; Cancelled once `stop` is set.
absl::Status FaultIn(void* p, size_t bytes, const std::atomic<bool>& stop) {
  auto* const base = static_cast<uint8_t*>(p);
  bool populate = true;
  for (size_t at = 0; at < bytes; at += kPreTouchSliceBytes) {
    if (stop.load(std::memory_order_relaxed)) return absl::CancelledError("pre-touch stopped");
    const size_t n = std::min(kPreTouchSliceBytes, bytes - at);
    // A kernel before 5.14 answers EINVAL: then each page is faulted in by a write (a
    // read would map the shared zero page, and the user's write would fault again).
    if (populate && ::madvise(base + at, n, MADV_POPULATE_WRITE) != 0) populate = false;
    if (!populate) {
      for (size_t i = 0; i < n; i += kPage) static_cast<volatile uint8_t*>(base)[at + i] = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace

MappingPool::~MappingPool() {
  absl::MutexLock lock(&mu_);
  for (const auto& [bytes, kept] : kept_) ::munmap(kept.p, bytes);
}

size_t MappingPool::RoundToPages(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

size_t MappingPool::LimitLocked() const {
  return max_kept_bytes_ + stats_.allowance_bytes -
         std::min(stats_.handed_out_bytes, stats_.allowance_bytes);
}

bool MappingPool::RoomLocked(size_t bytes) const {
  const size_t limit = LimitLocked();
  return bytes <= limit - std::min(limit, stats_.kept_bytes + pending_bytes_);
}

void MappingPool::KeepLocked(size_t bytes, void* p, uint64_t allowance) {
  kept_.emplace(bytes, Kept{p, allowance});
  stats_.kept_bytes += bytes;
  if (allowance != 0) stats_.pretouched_bytes += bytes;
}

MappingPool::KeptMap::iterator MappingPool::EraseKeptLocked(KeptMap::iterator it) {
  stats_.kept_bytes -= it->first;
  if (it->second.allowance != 0) stats_.pretouched_bytes -= it->first;
  return kept_.erase(it);
}

void MappingPool::TrimLocked(Unmaps* out) {
  const size_t limit = LimitLocked();
  while (stats_.kept_bytes + pending_bytes_ > limit && !kept_.empty()) {
    auto largest = std::prev(kept_.end());
    out->emplace_back(largest->first, largest->second.p);
    EraseKeptLocked(largest);
  }
}

void* MappingPool::Map(size_t bytes) {
  const size_t rounded = RoundToPages(bytes);
  Unmaps over;
  {
    absl::MutexLock lock(&mu_);
    stats_.handed_out_bytes += rounded;
    if (auto it = kept_.find(rounded); it != kept_.end()) {
      void* p = it->second.p;
      if (it->second.allowance != 0) ++stats_.pretouched_taken;
      EraseKeptLocked(it);
      ++stats_.reused;
      return p;
    }
    // A new mapping grows what is handed out: the limit of what is kept shrinks with it
    // (only while an allowance is set).
    TrimLocked(&over);
  }
  UnmapAll(over);
  void* p = MapFresh(rounded);
  // Faulted in at once rather than page by page by the user's writes (or a read(2) into
  // it); EINVAL (a kernel before 5.14) leaves that to the writes.
  if (p != nullptr && fresh_ == FreshPages::kPopulate) ::madvise(p, rounded, MADV_POPULATE_WRITE);
  absl::MutexLock lock(&mu_);
  if (p == nullptr) {
    stats_.handed_out_bytes -= rounded;
  } else {
    ++stats_.mapped;
  }
  return p;
}

void MappingPool::Unmap(void* p, size_t bytes) {
  const size_t rounded = RoundToPages(bytes);
  {
    absl::MutexLock lock(&mu_);
    stats_.handed_out_bytes -= std::min(stats_.handed_out_bytes, rounded);
    if (RoomLocked(rounded)) {
      // Kept as they are, not marked MADV_FREE: marking costs 0.05 s per GB and the
      // rewrite of marked pages 0.05 s per GB more than of plain ones (`madvise` then
      // memset of 256 MiB, the VM of issue 9), while the limit bounds what the kernel
      // could take.
      KeepLocked(rounded, p, 0);
      return;
    }
  }
  ::munmap(p, rounded);
}

uint64_t MappingPool::AddAllowance(size_t bytes) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_allowance_++;
  allowances_[id] = bytes;
  stats_.allowance_bytes += bytes;
  return id;
}

void MappingPool::RemoveAllowance(uint64_t id) {
  Unmaps drop;
  {
    absl::MutexLock lock(&mu_);
    auto a = allowances_.find(id);
    if (a == allowances_.end()) return;
    stats_.allowance_bytes -= a->second;
    allowances_.erase(a);
    for (auto it = kept_.begin(); it != kept_.end();) {
      if (it->second.allowance == id) {
        drop.emplace_back(it->first, it->second.p);
        it = EraseKeptLocked(it);
      } else {
        ++it;
      }
    }
    TrimLocked(&drop);
  }
  UnmapAll(drop);
}

absl::StatusOr<bool> MappingPool::PreTouch(uint64_t id, size_t bytes,
                                           const std::atomic<bool>& stop) {
  const size_t rounded = RoundToPages(bytes);
  {
    absl::MutexLock lock(&mu_);
    if (allowances_.count(id) == 0 || !RoomLocked(rounded)) return false;
    pending_bytes_ += rounded;  // counts against the limit while it is populated
  }
  void* p = MapFresh(rounded);
  absl::Status status = p == nullptr
                            ? absl::ResourceExhaustedError(absl::StrCat(
                                  "pre-touch: the kernel refused a mapping of ", rounded, " bytes"))
                            : FaultIn(p, rounded, stop);
  Unmaps over;
  {
    absl::MutexLock lock(&mu_);
    pending_bytes_ -= rounded;
    if (status.ok() && allowances_.count(id) == 0) {
      status = absl::CancelledError("pre-touch: its allowance was removed");
    }
    if (status.ok()) {
      KeepLocked(rounded, p, id);
      TrimLocked(&over);  // Maps may have lowered the limit meanwhile
    }
  }
  UnmapAll(over);
  if (!status.ok()) {
    if (p != nullptr) ::munmap(p, rounded);
    return status;
  }
  return true;
}

MappingPool::Stats MappingPool::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace deltaserve::common

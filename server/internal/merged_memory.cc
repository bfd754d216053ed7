#include "server/internal/merged_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace deltaserve::server::internal {
namespace {

constexpr size_t kPage = 4096;

size_t RoundToPages(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }  // bytes > 0

// A new anonymous mapping of `bytes` (a multiple of kPage); null if refused.
void* MapFresh(size_t bytes) {
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return map == MAP_FAILED ? nullptr : map;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14+; older headers lack it
#endif

// Faults in bytes [0, bytes) of the fresh mapping `p` (bytes a multiple of kPage), one
// slice at a time; Cancelled once `stop` is set.
absl::Status FaultIn(void* p, size_t bytes, const std::atomic<bool>& stop) {
  auto* const base = static_cast<uint8_t*>(p);
  bool populate = true;
  for (size_t at = 0; at < bytes; at += kPreTouchSliceBytes) {
    if (stop.load(std::memory_order_relaxed)) return absl::CancelledError("pre-touch stopped");
    const size_t n = std::min(kPreTouchSliceBytes, bytes - at);
    // A kernel before 5.14 answers EINVAL: then each page is faulted in by a write (a
    // read would map the shared zero page, and the merge's write would fault again).
    if (populate && madvise(base + at, n, MADV_POPULATE_WRITE) != 0) populate = false;
    if (!populate) {
      for (size_t i = 0; i < n; i += kPage) static_cast<volatile uint8_t*>(base)[at + i] = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace

MergedMemoryPool::~MergedMemoryPool() {
  absl::MutexLock lock(&mu_);
  for (const auto& [bytes, kept] : cached_) ::munmap(kept.p, bytes);
}

MergedMemoryPool& MergedMemoryPool::Process() {
  static MergedMemoryPool* pool = new MergedMemoryPool(kMergedPoolBytes);  // never destroyed
  return *pool;
}

size_t MergedMemoryPool::LimitLocked() const {
  return max_cached_bytes_ + allowance_bytes_ - std::min(handed_out_bytes_, allowance_bytes_);
}

std::multimap<size_t, MergedMemoryPool::Kept>::iterator MergedMemoryPool::EraseKeptLocked(
    std::multimap<size_t, Kept>::iterator it) {
  cached_bytes_ -= it->first;
  if (it->second.allowance != 0) pretouched_bytes_ -= it->first;
  return cached_.erase(it);
}

void MergedMemoryPool::TrimLocked(std::vector<std::pair<size_t, void*>>* out) {
  const size_t limit = LimitLocked();
  while (cached_bytes_ + pending_bytes_ > limit && !cached_.empty()) {
    auto largest = std::prev(cached_.end());
    out->emplace_back(largest->first, largest->second.p);
    EraseKeptLocked(largest);
  }
}

void* MergedMemoryPool::Map(size_t bytes) {
  const size_t rounded = RoundToPages(bytes);
  std::vector<std::pair<size_t, void*>> over;  // unmapped after the lock
  {
    absl::MutexLock lock(&mu_);
    handed_out_bytes_ += rounded;
    if (auto it = cached_.find(rounded); it != cached_.end()) {
      void* p = it->second.p;
      if (it->second.allowance != 0) ++pretouched_taken_;
      EraseKeptLocked(it);
      ++reused_;
      return p;
    }
    // A new mapping grows what is handed out: the limit of what is kept shrinks with it
    // (only while an allowance is set; see the class comment).
    TrimLocked(&over);
  }
  for (const auto& [n, q] : over) ::munmap(q, n);
  void* p = MapFresh(rounded);
  absl::MutexLock lock(&mu_);
  if (p == nullptr) {
    handed_out_bytes_ -= rounded;
  } else {
    ++mapped_;
  }
  return p;
}

void MergedMemoryPool::Unmap(void* p, size_t bytes) {
  const size_t rounded = RoundToPages(bytes);
  {
    absl::MutexLock lock(&mu_);
    handed_out_bytes_ -= std::min(handed_out_bytes_, rounded);
    if (cached_bytes_ + pending_bytes_ + rounded <= LimitLocked()) {
      // Kept as they are, not marked MADV_FREE: marking costs 0.05 s per GB and the
      // rewrite of marked pages 0.05 s per GB more than of plain ones (`madvise` then
      // memset of 256 MiB, this VM), while the cap bounds what the kernel could take.
      cached_.emplace(rounded, Kept{p, 0});
      cached_bytes_ += rounded;
      return;
    }
  }
  ::munmap(p, rounded);
}

uint64_t MergedMemoryPool::AddAllowance(size_t bytes) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_allowance_++;
  allowances_[id] = bytes;
  allowance_bytes_ += bytes;
  return id;
}

void MergedMemoryPool::RemoveAllowance(uint64_t id) {
  std::vector<std::pair<size_t, void*>> drop;  // unmapped after the lock
  {
    absl::MutexLock lock(&mu_);
    auto a = allowances_.find(id);
    if (a == allowances_.end()) return;
    allowance_bytes_ -= a->second;
    allowances_.erase(a);
    for (auto it = cached_.begin(); it != cached_.end();) {
      if (it->second.allowance == id) {
        drop.emplace_back(it->first, it->second.p);
        it = EraseKeptLocked(it);
      } else {
        ++it;
      }
    }
    TrimLocked(&drop);
  }
  for (const auto& [n, q] : drop) ::munmap(q, n);
}

absl::StatusOr<bool> MergedMemoryPool::PreTouch(uint64_t id, size_t bytes,
                                                const std::atomic<bool>& stop) {
  const size_t rounded = RoundToPages(bytes);
  {
    absl::MutexLock lock(&mu_);
    if (allowances_.count(id) == 0 || cached_bytes_ + pending_bytes_ + rounded > LimitLocked()) {
      return false;
    }
    pending_bytes_ += rounded;  // counts against the limit while it is populated
  }
  void* p = MapFresh(rounded);
  absl::Status status =
      p == nullptr ? absl::ResourceExhaustedError(
                         absl::StrCat("pre-touch: the kernel refused a mapping of ", rounded,
                                      " bytes"))
                   : FaultIn(p, rounded, stop);
  std::vector<std::pair<size_t, void*>> over;  // unmapped after the lock
  {
    absl::MutexLock lock(&mu_);
    pending_bytes_ -= rounded;
    if (status.ok() && allowances_.count(id) == 0) {
      status = absl::CancelledError("pre-touch: its allowance was removed");
    }
    if (status.ok()) {
      cached_.emplace(rounded, Kept{p, id});
      cached_bytes_ += rounded;
      pretouched_bytes_ += rounded;
      TrimLocked(&over);  // Maps may have lowered the limit meanwhile
    }
  }
  for (const auto& [n, q] : over) ::munmap(q, n);
  if (!status.ok()) {
    if (p != nullptr) ::munmap(p, rounded);
    return status;
  }
  return true;
}

size_t MergedMemoryPool::cached_bytes() const {
  absl::MutexLock lock(&mu_);
  return cached_bytes_;
}

size_t MergedMemoryPool::pretouched_bytes() const {
  absl::MutexLock lock(&mu_);
  return pretouched_bytes_;
}

size_t MergedMemoryPool::handed_out_bytes() const {
  absl::MutexLock lock(&mu_);
  return handed_out_bytes_;
}

size_t MergedMemoryPool::allowance_bytes() const {
  absl::MutexLock lock(&mu_);
  return allowance_bytes_;
}

uint64_t MergedMemoryPool::pretouched_taken() const {
  absl::MutexLock lock(&mu_);
  return pretouched_taken_;
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

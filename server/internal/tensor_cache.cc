#include "server/internal/tensor_cache.h"

#include <xxhash.h>

#include <cstdlib>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/internal/merged_memory.h"
#include "server/internal/metrics.h"

namespace deltaserve::server::internal {

template <class T>
void* MergedBufferAllocator<T>::AllocateBytes(size_t bytes) {
  void* p = bytes >= kMergedPoolMinBytes ? MergedMemoryPool::Process().Map(bytes)
                                      : std::malloc(bytes ? bytes : 1);
  if (p == nullptr) throw std::bad_alloc();  // as operator new does
  return p;
}

template <class T>
void MergedBufferAllocator<T>::FreeBytes(void* p, size_t bytes) {
  if (bytes >= kMergedPoolMinBytes) {
    MergedMemoryPool::Process().Unmap(p, bytes);
  } else {
    std::free(p);
  }
}

template struct MergedBufferAllocator<uint8_t>;

TensorFill::TensorFill(const uint8_t* data, uint64_t size)
    : data_(data), size_(size), hash_(XXH3_createState()) {
  if (hash_ == nullptr) throw std::bad_alloc();  // as operator new does
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(hash_));
}

TensorFill::~TensorFill() {
  absl::MutexLock lock(&mu_);
  XXH3_freeState(static_cast<XXH3_state_t*>(hash_));
}

void TensorFill::Publish(uint64_t begin, uint64_t end) {
  if (begin >= end) return;
  std::vector<std::function<void()>> wake;
  {
    absl::MutexLock lock(&mu_);
    pending_[begin] = end;
    uint64_t ready = ready_.load(std::memory_order_relaxed);
    const uint64_t before = ready;
    for (auto it = pending_.begin(); it != pending_.end() && it->first == ready;) {
      ready = it->second;
      it = pending_.erase(it);
    }
    if (ready == before) return;
    // Hashed here, in order, while the newest strip is likely still in cache: the
    // tensor's checksum is ready with its last byte, with no second pass over it.
    XXH3_64bits_update(static_cast<XXH3_state_t*>(hash_), data_ + before, ready - before);
    ready_.store(ready, std::memory_order_release);
    TakeWakeableLocked(&wake);
  }
  for (auto& w : wake) w();
}

absl::StatusOr<uint64_t> TensorFill::Digest() const {
  absl::MutexLock lock(&mu_);
  if (ready_.load(std::memory_order_relaxed) != size_) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor fill: ", ready_.load(), " of ", size_, " bytes published"));
  }
  return XXH3_64bits_digest(static_cast<XXH3_state_t*>(hash_));
}

void TensorFill::Finish(absl::Status status) {
  std::vector<std::function<void()>> wake;
  {
    absl::MutexLock lock(&mu_);
    if (done_) return;
    done_ = true;
    status_ = std::move(status);
    TakeWakeableLocked(&wake);
  }
  for (auto& w : wake) w();
}

uint64_t TensorFill::ready() const { return ready_.load(std::memory_order_acquire); }

bool TensorFill::done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

absl::Status TensorFill::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

bool TensorFill::ReadyOr(uint64_t bytes, bool need_done, std::function<void()> wake) {
  absl::MutexLock lock(&mu_);
  if (!status_.ok() || (done_ && ready_.load(std::memory_order_relaxed) == size_) ||
      (!need_done && ready_.load(std::memory_order_relaxed) >= bytes)) {
    return true;
  }
  waiters_.push_back(Waiter{bytes, need_done, std::move(wake)});
  return false;
}

void TensorFill::TakeWakeableLocked(std::vector<std::function<void()>>* out) {
  const uint64_t ready = ready_.load(std::memory_order_relaxed);
  auto keep = waiters_.begin();
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (done_ || (!it->need_done && ready >= it->bytes)) {
      out->push_back(std::move(it->wake));
    } else {
      *keep++ = std::move(*it);
    }
  }
  waiters_.erase(keep, waiters_.end());
}

TensorCache::TensorCache(uint64_t capacity_bytes, Metrics* metrics)
    : capacity_(capacity_bytes), metrics_(metrics) {}

void TensorCache::GetOrLoad(const std::string& group, const std::string& key,
                            const Loader& loader, Done done) {
  MergedTensorPtr hit;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      hit = it->second.value;
      if (metrics_) metrics_->cache_hits().Increment();
    } else if (auto flight = flights_.find(key); flight != flights_.end()) {
      // Someone is decoding this tensor right now: wait for its result, do not decode.
      if (metrics_) metrics_->cache_hits().Increment();
      flight->second.waiters.push_back(std::move(done));
      return;
    } else {
      if (metrics_) metrics_->cache_misses().Increment();
      flights_[key] = Flight{{}, group_epochs_[group]};
      flights_[key].waiters.push_back(std::move(done));
    }
  }
  if (hit) {
    done(hit, /*hit=*/true);
    return;
  }

  absl::StatusOr<MergedTensorPtr> result = loader();

  std::vector<Done> waiters;
  std::vector<MergedTensorPtr> evicted;  // freed after the lock
  {
    absl::MutexLock lock(&mu_);
    auto flight = flights_.find(key);
    waiters = std::move(flight->second.waiters);
    bool erased = flight->second.group_epoch != group_epochs_[group];
    flights_.erase(flight);
    if (result.ok() && !erased) InsertLocked(group, key, *result, &evicted);
  }
  for (size_t i = 0; i < waiters.size(); ++i) waiters[i](result, /*hit=*/i != 0);
}

void TensorCache::InsertLocked(const std::string& group, const std::string& key,
                               MergedTensorPtr value, std::vector<MergedTensorPtr>* evicted) {
  uint64_t size = value->data.size();
  bool pinned = pins_.count(group) > 0;
  // A tensor larger than the whole budget is served but not kept (unless pinned: the
  // pin was admitted against the budget by the caller).
  if (!pinned && size > capacity_) return;
  auto [it, inserted] = entries_.try_emplace(key);
  if (!inserted) return;  // cannot happen with single flight; keep the first
  lru_.push_front(key);
  it->second = Entry{group, std::move(value), lru_.begin(), size};
  bytes_ += size;
  EvictLocked(capacity_, evicted);
  PublishBytesLocked();
}

std::vector<MergedTensorPtr> TensorCache::MakeRoom(uint64_t bytes) {
  std::vector<MergedTensorPtr> evicted;
  if (bytes > capacity_) return evicted;
  absl::MutexLock lock(&mu_);
  EvictLocked(capacity_ - bytes, &evicted);
  PublishBytesLocked();
  return evicted;
}

void TensorCache::EvictLocked(uint64_t limit, std::vector<MergedTensorPtr>* evicted) {
  auto it = lru_.end();
  while (bytes_ > limit && it != lru_.begin()) {
    --it;
    auto entry = entries_.find(*it);
    if (pins_.count(entry->second.group)) continue;
    auto newer = std::next(it);  // `it` dies with the entry; resume from its neighbour
    if (evicted != nullptr) evicted->push_back(std::move(entry->second.value));
    RemoveLocked(entry);
    it = newer;
    if (metrics_) metrics_->cache_evictions().Increment();
  }
}

void TensorCache::RemoveLocked(std::unordered_map<std::string, Entry>::iterator it) {
  bytes_ -= it->second.bytes;
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

void TensorCache::PublishBytesLocked() {
  if (metrics_) metrics_->cache_bytes().Set(static_cast<double>(bytes_));
}

void TensorCache::EraseGroup(const std::string& group) {
  absl::MutexLock lock(&mu_);
  ++group_epochs_[group];
  const std::string prefix = group + "#";
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (it->first.compare(0, prefix.size(), prefix) == 0) RemoveLocked(it);
    it = next;
  }
  PublishBytesLocked();
}

void TensorCache::Pin(const std::string& group) {
  absl::MutexLock lock(&mu_);
  ++pins_[group];
}

bool TensorCache::Unpin(const std::string& group) {
  absl::MutexLock lock(&mu_);
  auto it = pins_.find(group);
  if (it == pins_.end()) return false;
  if (--it->second == 0) pins_.erase(it);
  EvictLocked(capacity_, nullptr);
  PublishBytesLocked();
  return true;
}

bool TensorCache::IsPinned(const std::string& group) const {
  absl::MutexLock lock(&mu_);
  return pins_.count(group) > 0;
}

uint64_t TensorCache::pinned_bytes() const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [key, entry] : entries_) {
    if (pins_.count(entry.group)) total += entry.bytes;
  }
  return total;
}

uint64_t TensorCache::group_bytes(const std::string& group) const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [key, entry] : entries_) {
    if (entry.group == group) total += entry.bytes;
  }
  return total;
}

uint64_t TensorCache::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

size_t TensorCache::entries() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace deltaserve::server::internal

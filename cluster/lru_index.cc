#include "cluster/lru_index.h"

namespace deltaserve::cluster {

std::vector<std::string> LruIndex::Touch(absl::string_view key, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(std::string(key));
  if (it != index_.end()) {
    bytes_ -= it->second->bytes;
    order_.erase(it->second);
    index_.erase(it);
  }
  order_.push_front(Entry{std::string(key), bytes});
  index_[order_.front().key] = order_.begin();
  bytes_ += bytes;
  std::vector<std::string> evicted;
  while (capacity_ > 0 && bytes_ > capacity_ && order_.size() > 1) {
    Entry& last = order_.back();
    bytes_ -= last.bytes;
    index_.erase(last.key);
    evicted.push_back(std::move(last.key));
    order_.pop_back();
  }
  return evicted;
}

void LruIndex::Remove(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(std::string(key));
  if (it == index_.end()) return;
  bytes_ -= it->second->bytes;
  order_.erase(it->second);
  index_.erase(it);
}

bool LruIndex::Contains(absl::string_view key) const {
  absl::MutexLock lock(&mu_);
  return index_.count(std::string(key)) > 0;
}

uint64_t LruIndex::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

size_t LruIndex::size() const {
  absl::MutexLock lock(&mu_);
  return order_.size();
}

std::vector<std::string> LruIndex::Keys() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const Entry& e : order_) keys.push_back(e.key);
  return keys;
}

}  // namespace deltaserve::cluster

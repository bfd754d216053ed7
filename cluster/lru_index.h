// LruIndex: which cached tasks a replica keeps, bounded by bytes, least recently used
// evicted first. Pure bookkeeping (no I/O): the caller deletes what Touch evicts from
// its local store. Keys are opaque ("tenant/task").
//
// Thread safety: thread-safe (one mutex).
#ifndef DELTASERVE_CLUSTER_LRU_INDEX_H_
#define DELTASERVE_CLUSTER_LRU_INDEX_H_

#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace deltaserve::cluster {

class LruIndex {
 public:
  // `capacity_bytes`: total bytes kept; 0 = unbounded.
  explicit LruIndex(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}

  // Records a use of `key` holding `bytes` (inserts it, or updates its size and makes
  // it the most recent). Returns the keys evicted to get back under the capacity, least
  // recent first; never `key` itself (an entry larger than the capacity stays alone).
  std::vector<std::string> Touch(absl::string_view key, uint64_t bytes);
  // Forgets `key` (no-op if absent).
  void Remove(absl::string_view key);
  bool Contains(absl::string_view key) const;
  uint64_t bytes() const;
  size_t size() const;
  // Keys from most to least recent.
  std::vector<std::string> Keys() const;

 private:
  struct Entry {
    std::string key;
    uint64_t bytes;
  };
  const uint64_t capacity_;
  mutable absl::Mutex mu_;
  std::list<Entry> order_ ABSL_GUARDED_BY(mu_);  // front = most recent
  std::unordered_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace deltaserve::cluster

#endif  // DELTASERVE_CLUSTER_LRU_INDEX_H_

// Ordered parallel map: items made on worker threads, consumed on the calling thread in
// index order, with a bounded number made ahead (CompressModel's pipeline).
#ifndef DELTASERVE_CODEC_INTERNAL_ORDERED_PARALLEL_H_
#define DELTASERVE_CODEC_INTERNAL_ORDERED_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace deltaserve::codec::internal {

// Calls make(i) for every i in [0, n) on `threads` threads (1: all on the calling
// thread, interleaved with consume) and consume(i, made) on the calling thread for i =
// 0, 1, ... in order. At most `window` (>= 1) items are made but not yet consumed, which
// bounds memory to `window` items. The first non-OK status of consume is returned at
// once: the workers finish the items they hold and stop. `make` must be thread-safe
// (it runs concurrently for different i).
template <typename T>
absl::Status OrderedParallel(size_t n, int threads, size_t window,
                             const std::function<T(size_t)>& make,
                             const std::function<absl::Status(size_t, T&&)>& consume) {
  window = std::max<size_t>(window, 1);
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) {
      absl::Status s = consume(i, make(i));
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  std::mutex mu;
  std::condition_variable made_cv, room_cv;
  std::map<size_t, T> ready;  // made, not consumed; guarded by mu
  size_t next_make = 0;       // guarded by mu
  size_t next_consume = 0;    // guarded by mu
  bool stop = false;          // guarded by mu
  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        room_cv.wait(lock,
                     [&] { return stop || next_make >= n || next_make < next_consume + window; });
        if (stop || next_make >= n) return;
        i = next_make++;
      }
      T item = make(i);
      {
        std::lock_guard<std::mutex> lock(mu);
        ready.emplace(i, std::move(item));
      }
      made_cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  absl::Status status;
  for (size_t i = 0; i < n && status.ok(); ++i) {
    std::optional<T> item;
    {
      std::unique_lock<std::mutex> lock(mu);
      made_cv.wait(lock, [&] { return ready.count(i) > 0; });
      auto it = ready.find(i);
      item.emplace(std::move(it->second));
      ready.erase(it);
    }
    status = consume(i, std::move(*item));
    {
      std::lock_guard<std::mutex> lock(mu);
      next_consume = i + 1;
      if (!status.ok()) stop = true;
    }
    room_cv.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  room_cv.notify_all();
  for (std::thread& t : pool) t.join();
  return status;
}

// Calls fn(i) for every i in [0, n) on min(max(threads, 1), n) new threads (never the
// calling one: what `fn` keeps in thread_local storage ends with the call), each taking
// the next index when it finishes one. `fn` must be thread-safe; it writes its results
// by index.
template <typename Fn>
void ParallelFor(size_t n, int threads, const Fn& fn) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> pool;
  for (size_t t = 0; t < std::min<size_t>(std::max(threads, 1), n); ++t) {
    pool.emplace_back(worker);
  }
  for (std::thread& t : pool) t.join();
}

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_ORDERED_PARALLEL_H_

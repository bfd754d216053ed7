// A fixed-size pool of worker threads running queued closures in FIFO order.
//
// The server hands every blocking or CPU-heavy step (RocksDB reads, decoding, merging,
// hashing) to this pool so that gRPC callback threads never block (STYLE.md,
// "Servers"). Thread-safe: Schedule may be called from any thread, including a worker.
#ifndef DELTASERVE_SERVER_INTERNAL_THREAD_POOL_H_
#define DELTASERVE_SERVER_INTERNAL_THREAD_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace deltaserve::server::internal {

class ThreadPool {
 public:
  // Starts `num_threads` workers, named `name` (at most 15 bytes are kept; shown by
  // top -H and perf, and read back by stream_bench to time the workers' CPU). REQUIRES:
  // num_threads >= 1.
  explicit ThreadPool(size_t num_threads, const std::string& name = "");
  // Runs every closure already queued, then joins the workers (Shutdown()).
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`. After Shutdown() began, `fn` still runs (inline in the caller) so that
  // no reactor is left unfinished.
  void Schedule(std::function<void()> fn);

  // Stops accepting work, lets queued closures finish and joins the workers.
  // Idempotent; must not be called from a worker thread.
  void Shutdown();

  size_t num_threads() const { return threads_.size(); }
  // Closures queued and not yet started (for metrics/tests).
  size_t queued() const;

 private:
  void WorkerLoop();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_THREAD_POOL_H_

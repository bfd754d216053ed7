// stream_bench's memory and CPU accounting (tests/bench/stream_bench.cc): the process's
// peak RSS, a sampler that breaks the highest RSS sample down by owner, and getrusage's
// CPU and page-fault counters. Linux only (/proc/self/status, mallinfo2).
#ifndef DELTASERVE_TESTS_BENCH_STREAM_BENCH_MEMORY_H_
#define DELTASERVE_TESTS_BENCH_STREAM_BENCH_MEMORY_H_

#include <atomic>
#include <cstddef>
#include <string>
#include <thread>

#include "server/server.h"

namespace deltaserve::bench {

// Peak RSS of the process so far (getrusage ru_maxrss), in MB of 2^20 bytes.
double PeakRssMb();

// Samples the process's RSS every 5 ms on a thread of its own and keeps, at the highest
// sample, what accounts for it: /proc/self/status (file-backed: the base mapping and the
// binaries; anonymous: the rest), the server's own memory (Server::MemoryUsage) and
// glibc's heap (mallinfo2, every arena). getrusage's peak is the kernel's exact high-water
// mark; a sample may miss a spike between two samples. `srv` must outlive the watch.
class PeakWatch {
 public:
  explicit PeakWatch(const server::Server* srv);
  ~PeakWatch();
  PeakWatch(const PeakWatch&) = delete;
  PeakWatch& operator=(const PeakWatch&) = delete;

  // Stops sampling; one line: the breakdown at the highest sample, in MiB.
  std::string Report();

 private:
  struct Sample {
    long rss_kb = 0, anon_kb = 0, file_kb = 0;
    server::Server::Memory server;
    size_t heap_in_use = 0, heap_free = 0;  // mallinfo2 uordblks + hblkhd, fordblks
  };

  void Run();
  static bool ReadStatus(Sample* s);

  const server::Server* srv_;
  std::atomic<bool> stop_{false};
  Sample peak_;
  std::thread thread_;
};

// The process's user and system CPU seconds and minor page faults so far.
struct Usage {
  double user = 0, sys = 0;
  long minor_faults = 0;
};
Usage ProcessUsage();

}  // namespace deltaserve::bench

#endif  // DELTASERVE_TESTS_BENCH_STREAM_BENCH_MEMORY_H_

#include "tests/bench/stream_bench_memory.h"

#include <malloc.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>

namespace deltaserve::bench {

double PeakRssMb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

PeakWatch::PeakWatch(const server::Server* srv) : srv_(srv), thread_([this] { Run(); }) {}

PeakWatch::~PeakWatch() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::string PeakWatch::Report() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  const Sample& s = peak_;
  const auto& m = s.server;
  const double mib = 1048576.0;
  const double known =
      (m.merged_live_bytes + m.merged_kept_bytes + m.upload_kept_bytes + m.store.block_cache_bytes +
       m.store.block_memory_kept_bytes + m.store.memtable_bytes + m.store.table_readers_bytes +
       s.heap_in_use + s.heap_free) /
      mib;
  char line[1024];
  std::snprintf(
      line, sizeof line,
      "highest RSS sample %.0f MiB: file-backed %.0f MiB (base mapping, binaries), "
      "anonymous %.0f MiB = merged tensors %.0f (in the cache %.0f, held by streams "
      "beyond it %.0f) + freed merged mappings kept %.0f + upload mappings kept %.0f + "
      "RocksDB block cache %.0f (pinned %.0f) + record blocks kept %.0f + memtables %.0f + "
      "table readers %.0f + malloc heap in use %.0f + free in arenas %.0f + rest %.0f",
      s.rss_kb / 1024.0, s.file_kb / 1024.0, s.anon_kb / 1024.0, m.merged_live_bytes / mib,
      m.cache_bytes / mib,
      (static_cast<double>(m.merged_live_bytes) - static_cast<double>(m.cache_bytes)) / mib,
      m.merged_kept_bytes / mib, m.upload_kept_bytes / mib, m.store.block_cache_bytes / mib,
      m.store.block_cache_pinned_bytes / mib, m.store.block_memory_kept_bytes / mib,
      m.store.memtable_bytes / mib, m.store.table_readers_bytes / mib, s.heap_in_use / mib,
      s.heap_free / mib, s.anon_kb / 1024.0 - known);
  return line;
}

void PeakWatch::Run() {
  while (!stop_) {
    Sample s;
    if (ReadStatus(&s) && s.rss_kb > peak_.rss_kb) {
      s.server = srv_->MemoryUsage();
      const struct mallinfo2 mi = mallinfo2();
      s.heap_in_use = mi.uordblks + mi.hblkhd;
      s.heap_free = mi.fordblks;
      peak_ = s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool PeakWatch::ReadStatus(Sample* s) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return false;
  char line[256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::sscanf(line, "VmRSS: %ld", &s->rss_kb);
    std::sscanf(line, "RssAnon: %ld", &s->anon_kb);
    std::sscanf(line, "RssFile: %ld", &s->file_kb);
  }
  std::fclose(f);
  return s->rss_kb > 0;
}

Usage ProcessUsage() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
          ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_minflt};
}

}  // namespace deltaserve::bench

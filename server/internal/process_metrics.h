// The standard Prometheus process metrics of deltaserved, read from Linux /proc at each
// scrape. Names and units follow the Prometheus client-library guidelines ("Writing
// client libraries", section "Process metrics"), as the Go and Python clients export
// them, so stock dashboards and alerts (CPU, RSS, descriptors in use vs the limit,
// restarts by start time) work unchanged:
//   process_cpu_seconds_total       counter  user + system CPU, seconds
//   process_resident_memory_bytes   gauge    resident set size, bytes
//   process_virtual_memory_bytes    gauge    virtual memory size, bytes
//   process_open_fds                gauge    open file descriptors
//   process_max_fds                 gauge    the soft RLIMIT_NOFILE
//   process_threads                 gauge    threads of the process
//   process_start_time_seconds      gauge    start time, seconds since the Unix epoch
// prometheus-cpp (Debian 12: 1.0.1) has no process collector.
#ifndef DELTASERVE_SERVER_INTERNAL_PROCESS_METRICS_H_
#define DELTASERVE_SERVER_INTERNAL_PROCESS_METRICS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace deltaserve::server::internal {

// The fields of /proc/<pid>/stat that the metrics use (proc(5)), in the units exported.
struct ProcStat {
  double cpu_seconds = 0;          // utime + stime, over the clock tick rate
  uint64_t threads = 0;            // num_threads
  double start_since_boot_seconds = 0;  // starttime, over the clock tick rate
  uint64_t virtual_bytes = 0;      // vsize
  uint64_t resident_bytes = 0;     // rss pages x page size
};

// Parses the text of /proc/<pid>/stat. The command name (field 2) is the text between
// the first '(' and the LAST ')': it may hold spaces and parentheses. Errors:
// InvalidArgument naming the field when the text is not in proc(5)'s format, or when
// ticks_per_second or page_bytes is not positive.
absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text, long ticks_per_second,
                                       long page_bytes);

// Parses the "btime" line (boot time, seconds since the Unix epoch) of /proc/stat.
// Errors: InvalidArgument if there is no such line or its value is not a number.
absl::StatusOr<uint64_t> ParseBootTime(absl::string_view proc_stat_text);

// A prometheus::Collectable of the families above for the calling process. Collect()
// reads /proc/self/stat, /proc/stat, /proc/self/fd and getrlimit each time (about
// 30 us for a few hundred descriptors); a family whose source cannot be read is left
// out of that scrape rather than reported wrong. Thread-safe (no state).
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// Collects each of `parts` in turn (a registry and a ProcessCollector): what the
// metrics endpoint serves. Thread-safe when every part is.
class CombinedCollectable : public prometheus::Collectable {
 public:
  explicit CombinedCollectable(std::vector<std::shared_ptr<prometheus::Collectable>> parts)
      : parts_(std::move(parts)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::vector<std::shared_ptr<prometheus::Collectable>> parts_;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_PROCESS_METRICS_H_

#include "server/internal/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace deltaserve::server::internal {
namespace {

// proc(5) field numbers (1-based) of /proc/<pid>/stat.
constexpr int kUtime = 14;
constexpr int kStime = 15;
constexpr int kThreads = 20;
constexpr int kStartTime = 22;
constexpr int kVsize = 23;
constexpr int kRss = 24;

absl::StatusOr<std::string> ReadText(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Open descriptors: the entries of /proc/self/fd other than "." and "..". The
// directory's own descriptor is counted while it is open: one less is reported.
absl::StatusOr<uint64_t> OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return absl::UnavailableError("cannot read /proc/self/fd");
  uint64_t n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n > 0 ? n - 1 : 0;
}

prometheus::MetricFamily One(const char* name, const char* help, prometheus::MetricType type,
                             double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text, long ticks_per_second,
                                       long page_bytes) {
  if (ticks_per_second <= 0 || page_bytes <= 0) {
    return absl::InvalidArgumentError("clock ticks per second and page size must be positive");
  }
  const size_t open = text.find('(');
  const size_t close = text.rfind(')');
  if (open == absl::string_view::npos || close == absl::string_view::npos || close < open) {
    return absl::InvalidArgumentError("/proc stat: no '(command)' field");
  }
  // Fields 3.. follow ") ".
  const std::vector<absl::string_view> rest = absl::StrSplit(
      absl::StripAsciiWhitespace(text.substr(close + 1)), ' ', absl::SkipEmpty());
  auto field = [&](int number, uint64_t* out) -> absl::Status {
    const size_t at = static_cast<size_t>(number - 3);
    if (at >= rest.size() || !absl::SimpleAtoi(rest[at], out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("/proc stat: field ", number, " is missing or not a number"));
    }
    return absl::OkStatus();
  };
  uint64_t utime = 0, stime = 0, threads = 0, start = 0, vsize = 0, rss = 0;
  for (auto [number, out] : {std::pair{kUtime, &utime}, std::pair{kStime, &stime},
                             std::pair{kThreads, &threads}, std::pair{kStartTime, &start},
                             std::pair{kVsize, &vsize}, std::pair{kRss, &rss}}) {
    if (absl::Status s = field(number, out); !s.ok()) return s;
  }
  ProcStat stat;
  const double ticks = static_cast<double>(ticks_per_second);
  stat.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  stat.threads = threads;
  stat.start_since_boot_seconds = static_cast<double>(start) / ticks;
  stat.virtual_bytes = vsize;
  stat.resident_bytes = rss * static_cast<uint64_t>(page_bytes);
  return stat;
}

absl::StatusOr<uint64_t> ParseBootTime(absl::string_view proc_stat_text) {
  for (absl::string_view line : absl::StrSplit(proc_stat_text, '\n')) {
    if (absl::ConsumePrefix(&line, "btime ")) {
      uint64_t seconds = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &seconds)) return seconds;
      return absl::InvalidArgumentError("/proc/stat: btime is not a number");
    }
  }
  return absl::InvalidArgumentError("/proc/stat: no btime line");
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  absl::StatusOr<std::string> text = ReadText("/proc/self/stat");
  absl::StatusOr<ProcStat> stat = text.ok() ? ParseProcStat(*text, sysconf(_SC_CLK_TCK),
                                                            sysconf(_SC_PAGESIZE))
                                            : absl::StatusOr<ProcStat>(text.status());
  if (stat.ok()) {
    out.push_back(One("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                      MetricType::Counter, stat->cpu_seconds));
    out.push_back(One("process_resident_memory_bytes", "Resident memory size in bytes.",
                      MetricType::Gauge, static_cast<double>(stat->resident_bytes)));
    out.push_back(One("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                      MetricType::Gauge, static_cast<double>(stat->virtual_bytes)));
    out.push_back(One("process_threads", "Number of OS threads in the process.",
                      MetricType::Gauge, static_cast<double>(stat->threads)));
    absl::StatusOr<std::string> system = ReadText("/proc/stat");
    absl::StatusOr<uint64_t> boot =
        system.ok() ? ParseBootTime(*system) : absl::StatusOr<uint64_t>(system.status());
    if (boot.ok()) {
      out.push_back(One("process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                        static_cast<double>(*boot) + stat->start_since_boot_seconds));
    }
  }
  if (absl::StatusOr<uint64_t> fds = OpenFds(); fds.ok()) {
    out.push_back(One("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
                      static_cast<double>(*fds)));
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out.push_back(One("process_max_fds", "Maximum number of open file descriptors.",
                      MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
  }
  return out;
}

std::vector<prometheus::MetricFamily> CombinedCollectable::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  for (const std::shared_ptr<prometheus::Collectable>& part : parts_) {
    std::vector<prometheus::MetricFamily> families = part->Collect();
    out.insert(out.end(), std::make_move_iterator(families.begin()),
               std::make_move_iterator(families.end()));
  }
  return out;
}

}  // namespace deltaserve::server::internal

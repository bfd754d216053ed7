// The process_* metrics (server/internal/process_metrics.h): the /proc parsers on known
// text, and the collector against what this test process does (descriptors opened,
// threads started, CPU burnt) between two collections.
#include "server/internal/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

// A /proc/<pid>/stat line (proc(5)) whose command name holds spaces and ')': fields
// 14/15 utime/stime 250/150 ticks, 20 threads 7, 22 starttime 1234 ticks, 23 vsize
// 4096000 bytes, 24 rss 300 pages.
constexpr char kStat[] =
    "4242 (deltaserved (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 "
    "1234 4096000 300 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

TEST(ProcStatTest, ParsesTheFieldsAfterTheLastParenthesis) {
  ASSERT_OK_AND_ASSIGN(ProcStat stat, ParseProcStat(kStat, 100, 4096));
  EXPECT_DOUBLE_EQ(stat.cpu_seconds, 4.0);  // (250 + 150) / 100
  EXPECT_EQ(stat.threads, 7u);
  EXPECT_DOUBLE_EQ(stat.start_since_boot_seconds, 12.34);
  EXPECT_EQ(stat.virtual_bytes, 4096000u);
  EXPECT_EQ(stat.resident_bytes, 300u * 4096);
}

TEST(ProcStatTest, MalformedTextIsInvalidArgumentNamingTheField) {
  EXPECT_THAT(ParseProcStat("4242 deltaserved S 1", 100, 4096),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(command)")));
  EXPECT_THAT(ParseProcStat("4242 (d) S 1 2 3", 100, 4096),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("field 14")));
  std::string bad_rss(kStat);
  bad_rss.replace(bad_rss.find(" 300 "), 5, " 3x0 ");
  EXPECT_THAT(ParseProcStat(bad_rss, 100, 4096),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("field 24")));
  EXPECT_THAT(ParseProcStat(kStat, 0, 4096), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseProcStat(kStat, 100, -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ProcStatTest, BootTimeIsTheBtimeLine) {
  ASSERT_OK_AND_ASSIGN(uint64_t btime,
                       ParseBootTime("cpu  1 2 3\nintr 5\nbtime 1764547200\nprocesses 9\n"));
  EXPECT_EQ(btime, 1764547200u);
  EXPECT_THAT(ParseBootTime("cpu 1\n"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("no btime")));
  EXPECT_THAT(ParseBootTime("btime soon\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a number")));
}

// name -> (type, value) of a collection.
std::map<std::string, std::pair<prometheus::MetricType, double>> Values() {
  std::map<std::string, std::pair<prometheus::MetricType, double>> out;
  for (const prometheus::MetricFamily& f : ProcessCollector().Collect()) {
    EXPECT_EQ(f.metric.size(), 1u) << f.name;
    const prometheus::ClientMetric& m = f.metric.at(0);
    out[f.name] = {f.type, f.type == prometheus::MetricType::Counter ? m.counter.value
                                                                     : m.gauge.value};
  }
  return out;
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

TEST(ProcessCollectorTest, FollowsWhatTheProcessDoes) {
  auto before = Values();
  ASSERT_EQ(before.size(), 7u);
  EXPECT_EQ(before["process_cpu_seconds_total"].first, prometheus::MetricType::Counter);
  EXPECT_EQ(before["process_open_fds"].first, prometheus::MetricType::Gauge);
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  EXPECT_EQ(before["process_max_fds"].second, static_cast<double>(limit.rlim_cur));
  EXPECT_GT(before["process_resident_memory_bytes"].second, 1e6);
  EXPECT_GE(before["process_virtual_memory_bytes"].second,
            before["process_resident_memory_bytes"].second);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(before["process_start_time_seconds"].second, now + 1);
  EXPECT_GT(before["process_start_time_seconds"].second, now - 3600);

  // 8 pipes (16 descriptors), one more thread, and at least 50 ms of CPU.
  std::vector<int> fds(16);
  for (int i = 0; i < 16; i += 2) ASSERT_EQ(pipe(&fds[i]), 0);
  absl::Notification done;
  std::thread extra([&] { done.WaitForNotification(); });
  const double cpu_start = CpuSeconds();
  volatile uint64_t sink = 0;
  while (CpuSeconds() - cpu_start < 0.05) {
    for (int i = 0; i < 100000; ++i) sink = sink + static_cast<uint64_t>(i);
  }
  auto after = Values();
  EXPECT_EQ(after["process_open_fds"].second, before["process_open_fds"].second + 16);
  EXPECT_EQ(after["process_threads"].second, before["process_threads"].second + 1);
  // Ticks are 10 ms: 50 ms of CPU advance the counter by at least 40 ms.
  EXPECT_GE(after["process_cpu_seconds_total"].second,
            before["process_cpu_seconds_total"].second + 0.04);
  EXPECT_EQ(after["process_start_time_seconds"].second,
            before["process_start_time_seconds"].second);
  done.Notify();
  extra.join();
  for (int fd : fds) close(fd);
  EXPECT_EQ(Values()["process_open_fds"].second, before["process_open_fds"].second);
}

TEST(CombinedCollectableTest, ServesTheRegistryThenTheProcessMetrics) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("deltaserve_x_total").Help("x").Register(*registry).Add({}).Increment(3);
  CombinedCollectable combined({registry, std::make_shared<ProcessCollector>()});
  const std::string text = prometheus::TextSerializer().Serialize(combined.Collect());
  EXPECT_THAT(text, HasSubstr("deltaserve_x_total 3"));
  EXPECT_THAT(text, HasSubstr("# TYPE process_cpu_seconds_total counter\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE process_resident_memory_bytes gauge\n"));
  EXPECT_LT(text.find("deltaserve_x_total"), text.find("process_cpu_seconds_total"));
}

}  // namespace
}  // namespace deltaserve::server::internal

// Where does decode+merge time go on a whole model? Times, per tensor and in total, on
// one thread: the container record read (checksum verified), codec::MergeTensor into a
// fresh buffer (as the server allocates one per tensor) and into a reused warm buffer,
// and XXH3 of the merged bytes (the server's tensor checksum). Times are thread CPU time.
// Usage: merge_profile BASE.safetensors TASK.dds [--top N]
// Run on one core for per-core figures: taskset -c 0 ./merge_profile ...
#include <xxhash.h>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "codec/container.h"
#include "codec/delta_codec.h"
#include "codec/safetensors.h"

namespace {

using namespace deltaserve;  // NOLINT: a measurement program

// Thread CPU time, not wall time: on a shared machine the wall clock also counts the
// time this thread waited for a core.
struct Clock {
  using time_point = double;
  static double now() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
  }
};

double Seconds(double a, double b) { return b - a; }

struct Row {
  std::string name;
  int64_t weights = 0;
  double read_s = 0, fresh_s = 0, warm_s = 0, hash_s = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s BASE.safetensors TASK.dds [--top N]\n", argv[0]);
    return 2;
  }
  int top = 8;
  if (argc >= 5 && std::string(argv[3]) == "--top") top = std::atoi(argv[4]);
  auto base = codec::ModelReader::Open(argv[1]);
  auto container = codec::MappedContainer::Open(argv[2]);
  if (!base.ok() || !container.ok()) {
    std::fprintf(stderr, "open: %s %s\n", base.status().ToString().c_str(),
                 container.status().ToString().c_str());
    return 1;
  }
  const codec::ContainerReader& reader = (*container)->reader();
  std::vector<Row> rows;
  std::vector<uint8_t> warm;
  Row total{"TOTAL"};
  for (size_t i = 0; i < reader.num_records(); ++i) {
    Row row;
    auto t0 = Clock::now();
    auto rec = reader.record(i);
    auto t1 = Clock::now();
    if (!rec.ok()) {
      std::fprintf(stderr, "record %zu: %s\n", i, rec.status().ToString().c_str());
      return 1;
    }
    row.name = rec->info.name;
    row.weights = rec->info.num_elements();
    row.read_s = Seconds(t0, t1);
    const codec::DType dt = rec->info.dtype;
    const size_t bytes = codec::MergedBytes(*rec, dt);
    t0 = Clock::now();
    std::vector<uint8_t> fresh(bytes);
    if (!codec::MergeTensor(base->get(), *rec, dt, absl::MakeSpan(fresh)).ok()) return 1;
    t1 = Clock::now();
    row.fresh_s = Seconds(t0, t1);
    warm.resize(std::max(warm.size(), bytes));
    t0 = Clock::now();
    if (!codec::MergeTensor(base->get(), *rec, dt, absl::MakeSpan(warm.data(), bytes)).ok()) {
      return 1;
    }
    t1 = Clock::now();
    row.warm_s = Seconds(t0, t1);
    t0 = Clock::now();
    volatile uint64_t h = XXH3_64bits(fresh.data(), fresh.size());
    (void)h;
    row.hash_s = Seconds(t0, Clock::now());
    total.weights += row.weights;
    total.read_s += row.read_s;
    total.fresh_s += row.fresh_s;
    total.warm_s += row.warm_s;
    total.hash_s += row.hash_s;
    rows.push_back(row);
  }
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.fresh_s > b.fresh_s; });
  auto print = [](const Row& r) {
    std::printf("%-44s %11lld  read %7.2f ms  merge fresh %8.2f ms (%6.1f Mw/s)  warm %8.2f ms "
                "(%6.1f Mw/s)  xxh3 %6.2f ms\n",
                r.name.c_str(), static_cast<long long>(r.weights), r.read_s * 1e3,
                r.fresh_s * 1e3, r.weights / r.fresh_s / 1e6, r.warm_s * 1e3,
                r.weights / r.warm_s / 1e6, r.hash_s * 1e3);
  };
  for (int i = 0; i < top && i < static_cast<int>(rows.size()); ++i) print(rows[i]);
  print(total);
  return 0;
}

// Delta-DCT throughput: encode (beside codec v2's, BM_EncodeEcq*), and decode+merge into an fp16 base, in weights per
// second, next to a memcpy of the merged output's size (the floor any merge pays); and
// codec v2 (ecq, codec/delta_ecq.h) decode+merge of the same delta rate-controlled to 1,
// 2 and 4 bits per weight (BM_DecodeMergeEcqF16/rows/cols/bits), and of a delta with
// low-rank structure that v2 codes as low-rank factors + residual
// (BM_DecodeMergeEcqLowRankF16/rows/cols/bits; counter `rank`); and the server's cold
// path around the kernel on Qwen2-0.5B shapes (fresh output pages + XXH3-64), beside
// the kernel and memcpy measured in the same run (BM_DecodeMergeF16ServerPath).
// Run on one core: OPENBLAS_NUM_THREADS=1 taskset -c 0 ./codec_bench
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "codec/delta_dct.h"
#include "codec/delta_ecq.h"
#include "codec/ecq_alloc.h"
#include "codec/internal/dct.h"
#include "codec/tensor.h"

namespace deltaserve::codec {
namespace {

// A synthetic fp16 base and float32 delta of one shape, built once per process.
struct Fixture {
  int64_t rows = 0, cols = 0;
  std::vector<float> delta;
  std::vector<uint8_t> base;     // F16
  std::vector<uint8_t> payload;  // default-params encoding of delta
  std::vector<uint8_t> mixed;    // MixedParams() encoding of delta
};

// A mixed-precision alternative: half the patches dropped (0 bits), half at 2 bits.
DctParams MixedParams() {
  DctParams p;
  p.patch_size = 16;
  p.schedule = BitSchedule::Parse("2:0.5,0:0.5").value();
  return p;
}

const Fixture& GetFixture(int64_t rows, int64_t cols) {
  static std::map<std::pair<int64_t, int64_t>, Fixture>* cache =
      new std::map<std::pair<int64_t, int64_t>, Fixture>;
  auto it = cache->find({rows, cols});
  if (it != cache->end()) return it->second;
  Fixture& f = (*cache)[{rows, cols}];
  f.rows = rows;
  f.cols = cols;
  std::mt19937 rng(42);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.3f, 3.0f);
  // Realistic spread: finetuning deltas ~1e-3 with per-row and per-column scales (some
  // output channels move much more than others); base weights ~N(0, 0.02).
  std::vector<float> row_scale(rows), col_scale(cols);
  for (auto& s : row_scale) s = u(rng);
  for (auto& s : col_scale) s = u(rng);
  f.delta.resize(rows * cols);
  std::vector<float> base(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      f.delta[r * cols + c] = 1e-3f * row_scale[r] * col_scale[c] * n(rng);
      base[r * cols + c] = 0.02f * n(rng);
    }
  }
  f.base.resize(rows * cols * 2);
  FromFloat32(base.data(), rows * cols, DType::kF16, f.base.data());
  f.payload = EncodeDctMatrix(f.delta.data(), rows, cols, DctParams()).value();
  f.mixed = EncodeDctMatrix(f.delta.data(), rows, cols, MixedParams()).value();
  return f;
}

void SetRate(benchmark::State& state, int64_t weights) {
  state.counters["weights_per_s"] = benchmark::Counter(
      static_cast<double>(weights) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_Encode(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  const DctParams params;
  for (auto _ : state) {
    auto payload = EncodeDctMatrix(f.delta.data(), f.rows, f.cols, params);
    benchmark::DoNotOptimize(payload->data());
  }
  SetRate(state, f.rows * f.cols);
  state.counters["payload_bits_per_weight"] =
      8.0 * static_cast<double>(f.payload.size()) / static_cast<double>(f.rows * f.cols);
}

void BM_DecodeMergeF16(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  std::vector<uint8_t> out(f.rows * f.cols * 2);
  for (auto _ : state) {
    auto st = DecodeDctMatrixMerge(f.payload, f.rows, f.cols, f.base.data(), DType::kF16,
                                   DType::kF16, out.data());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, f.rows * f.cols);
}

// The fixture's delta as one ecq payload at `bits` bits per weight (payload bytes only).
const std::vector<uint8_t>& EcqPayload(const Fixture& f, int bits) {
  static std::map<std::tuple<int64_t, int64_t, int>, std::vector<uint8_t>>* cache =
      new std::map<std::tuple<int64_t, int64_t, int>, std::vector<uint8_t>>;
  auto key = std::make_tuple(f.rows, f.cols, bits);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  auto t = EcqTensor::Prepare(f.delta.data(), f.rows, f.cols, EcqOptions()).value();
  const EcqTensor* ts[] = {t.get()};
  EcqPlan plan = PlanEcq(ts, static_cast<uint64_t>(f.rows * f.cols), 0.0, {double(bits), 0.0})
                     .value();
  return (*cache)[key] = std::move(plan.payloads[0]);
}

// The step of EcqPayload(f, bits)'s plan.
float EcqStep(const Fixture& f, int bits) {
  static std::map<std::tuple<int64_t, int64_t, int>, float>* cache =
      new std::map<std::tuple<int64_t, int64_t, int>, float>;
  auto key = std::make_tuple(f.rows, f.cols, bits);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  auto t = EcqTensor::Prepare(f.delta.data(), f.rows, f.cols, EcqOptions()).value();
  const EcqTensor* ts[] = {t.get()};
  return (*cache)[key] =
             PlanEcq(ts, static_cast<uint64_t>(f.rows * f.cols), 0.0, {double(bits), 0.0})
                 .value()
                 .step;
}

// Codec v2 encode of one tensor at the 1-bit step of its plan, as a large model codes
// it (EcqTensor::Summarize, Choose, EncodeDelta: one coding round; beside BM_Encode).
void BM_EncodeEcq(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  const float step = EcqStep(f, 1);
  size_t bytes = 0;
  for (auto _ : state) {
    auto t = EcqTensor::Summarize(f.delta.data(), f.rows, f.cols, EcqOptions()).value();
    auto payload = t->EncodeDelta(f.delta.data(), step, t->Choose(step));
    if (!payload.ok()) state.SkipWithError(payload.status().ToString().c_str());
    bytes = payload->size();
    benchmark::DoNotOptimize(payload->data());
  }
  SetRate(state, f.rows * f.cols);
  state.counters["payload_bits_per_weight"] =
      8.0 * static_cast<double>(bytes) / static_cast<double>(f.rows * f.cols);
}

// The same as a small model codes it (EcqTensor::Prepare: every candidate kept, Encode
// at the step: every rank's payload coded; no step search).
void BM_EncodeEcqExhaustive(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  const float step = EcqStep(f, 1);
  for (auto _ : state) {
    auto t = EcqTensor::Prepare(f.delta.data(), f.rows, f.cols, EcqOptions()).value();
    auto payload = t->Encode(step);
    if (!payload.ok()) state.SkipWithError(payload.status().ToString().c_str());
    benchmark::DoNotOptimize(payload->data());
  }
  SetRate(state, f.rows * f.cols);
}

void BM_DecodeMergeEcqF16(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  const std::vector<uint8_t>& payload = EcqPayload(f, static_cast<int>(state.range(2)));
  std::vector<uint8_t> out(f.rows * f.cols * 2);
  for (auto _ : state) {
    auto st = DecodeEcqMatrixMergeRows(payload, f.rows, f.cols, 0, f.rows, f.base.data(),
                                       DType::kF16, DType::kF16, out.data());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, f.rows * f.cols);
  state.counters["payload_bits_per_weight"] =
      8.0 * static_cast<double>(payload.size()) / static_cast<double>(f.rows * f.cols);
  state.counters["transform_dct"] = payload[5];
}

// A rank-16 delta (white factors, decaying weights) plus noise of a tenth of its RMS,
// on a base ~N(0, 0.02) in F16, as ecq at `bits` (the encoder picks factors + residual).
struct LowRankFixture {
  std::vector<uint8_t> base, payload;
};
const LowRankFixture& GetLowRankFixture(int64_t rows, int64_t cols, int bits) {
  static auto* cache = new std::map<std::tuple<int64_t, int64_t, int>, LowRankFixture>;
  auto key = std::make_tuple(rows, cols, bits);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  LowRankFixture& f = (*cache)[key];
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> delta(rows * cols, 0.0f), base(rows * cols), u(rows), v(cols);
  for (int k = 0; k < 16; ++k) {
    for (auto& x : u) x = n(rng);
    for (auto& x : v) x = n(rng);
    const float w = 1e-3f / (1.0f + k);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) delta[r * cols + c] += w * u[r] * v[c];
    }
  }
  for (auto& x : delta) x += 3e-4f * n(rng);
  for (auto& x : base) x = 0.02f * n(rng);
  f.base.resize(rows * cols * 2);
  FromFloat32(base.data(), rows * cols, DType::kF16, f.base.data());
  auto t = EcqTensor::Prepare(delta.data(), rows, cols, EcqOptions()).value();
  const EcqTensor* ts[] = {t.get()};
  f.payload = std::move(
      PlanEcq(ts, static_cast<uint64_t>(rows * cols), 0.0, {double(bits), 0.0}).value().payloads[0]);
  return f;
}

void BM_DecodeMergeEcqLowRankF16(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const LowRankFixture& f = GetLowRankFixture(rows, cols, static_cast<int>(state.range(2)));
  std::vector<uint8_t> out(rows * cols * 2);
  for (auto _ : state) {
    auto st = DecodeEcqMatrixMergeRows(f.payload, rows, cols, 0, rows, f.base.data(),
                                       DType::kF16, DType::kF16, out.data());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, rows * cols);
  state.counters["payload_bits_per_weight"] =
      8.0 * static_cast<double>(f.payload.size()) / static_cast<double>(rows * cols);
  // Flag bit 0: factors present; their rank is the u32 after the chunk table.
  const uint32_t chunks = f.payload[28] | f.payload[29] << 8 | f.payload[30] << 16;
  state.counters["rank"] =
      (f.payload[7] & 1) ? f.payload[32 + 4 * chunks] | f.payload[33 + 4 * chunks] << 8 : 0;
}

void BM_DecodeMergeBF16(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  std::vector<uint8_t> out(f.rows * f.cols * 2);
  for (auto _ : state) {
    auto st = DecodeDctMatrixMerge(f.payload, f.rows, f.cols, f.base.data(), DType::kF16,
                                   DType::kBF16, out.data());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, f.rows * f.cols);
}

// Same, for the mixed schedule (p = 16, "2:0.5,0:0.5"): half the patches are skipped.
void BM_DecodeMergeF16Mixed(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  std::vector<uint8_t> out(f.rows * f.cols * 2);
  for (auto _ : state) {
    auto st = DecodeDctMatrixMerge(f.mixed, f.rows, f.cols, f.base.data(), DType::kF16,
                                   DType::kF16, out.data());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, f.rows * f.cols);
  state.counters["payload_bits_per_weight"] =
      8.0 * static_cast<double>(f.mixed.size()) / static_cast<double>(f.rows * f.cols);
}

// memcpy of the merged output's bytes (fp16), for scale.
void BM_MemcpyOutput(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  std::vector<uint8_t> out(f.base.size());
  for (auto _ : state) {
    std::memcpy(out.data(), f.base.data(), f.base.size());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, f.rows * f.cols);
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Best of 3 single-core CPU times of `fn`.
template <class Fn>
double BestCpuSeconds(Fn fn) {
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const double t0 = ThreadCpuSeconds();
    fn();
    best = std::min(best, ThreadCpuSeconds() - t0);
  }
  return best;
}

// What the server's cold path does around the kernel, per tensor: decode+merge into a
// FRESH buffer (malloc'd, its pages faulted by the merge, freed after) and XXH3-64 of
// the output, strip by strip as the fill does. Counters, measured in this run on this
// thread: kernel_weights_per_s (the same merge into a warm, reused buffer, no hash),
// pct_of_kernel, and memcpy_weights_per_s (memcpy of the output's bytes), so that the
// figure reads beside its references. The first shape is Qwen2-0.5B's embedding.
void BM_DecodeMergeF16ServerPath(benchmark::State& state) {
  const Fixture& f = GetFixture(state.range(0), state.range(1));
  const size_t bytes = f.base.size();
  std::vector<uint8_t> warm(bytes, 1);
  auto kernel = [&] {
    (void)DecodeDctMatrixMerge(f.payload, f.rows, f.cols, f.base.data(), DType::kF16, DType::kF16,
                               warm.data());
  };
  const double kernel_s = BestCpuSeconds(kernel);
  const double memcpy_s = BestCpuSeconds([&] { std::memcpy(warm.data(), f.base.data(), bytes); });
  uint64_t hash = 0;
  double cpu = 0;
  for (auto _ : state) {
    const double t0 = ThreadCpuSeconds();
    auto* out = static_cast<uint8_t*>(std::malloc(bytes));
    XXH3_state_t* h = XXH3_createState();
    XXH3_64bits_reset(h);
    auto st = DecodeDctMatrixMergeRows(f.payload, f.rows, f.cols, 0, f.rows, f.base.data(),
                                       DType::kF16, DType::kF16, out, [&](int64_t r0, int64_t r1) {
                                         XXH3_64bits_update(h, out + r0 * f.cols * 2,
                                                            (r1 - r0) * f.cols * 2);
                                       });
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    hash ^= XXH3_64bits_digest(h);
    XXH3_freeState(h);
    std::free(out);
    cpu += ThreadCpuSeconds() - t0;
  }
  benchmark::DoNotOptimize(hash);
  SetRate(state, f.rows * f.cols);
  const double n = static_cast<double>(f.rows * f.cols);
  state.counters["kernel_weights_per_s"] = n / kernel_s;
  state.counters["memcpy_weights_per_s"] = n / memcpy_s;
  state.counters["pct_of_kernel"] = 100.0 * (kernel_s * state.iterations()) / cpu;
}
BENCHMARK(BM_DecodeMergeF16ServerPath)
    ->Args({151936, 896})
    ->Args({4864, 896})
    ->Args({896, 4864})
    ->Unit(benchmark::kMillisecond);

// The inverse 2-D DCT alone, patch after patch over a 4096-wide strip (weights/s).
void BM_InverseDct2d(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  const int64_t cols = 4096;
  const internal::DctBasis basis(p);
  std::vector<float> coef(static_cast<size_t>(p) * p, 0.01f), strip(static_cast<size_t>(p) * cols);
  for (size_t i = 0; i < coef.size(); ++i) coef[i] = 0.001f * static_cast<float>(i % 7);
  for (auto _ : state) {
    for (int64_t c0 = 0; c0 < cols; c0 += p) {
      internal::InverseDct2d(basis, coef.data(), p, strip.data() + c0, cols);
    }
    benchmark::DoNotOptimize(strip.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, static_cast<int64_t>(p) * cols);
}
BENCHMARK(BM_InverseDct2d)->Arg(8)->Arg(16)->Arg(32);

// The alternative the codec does not use: the same strip through two OpenBLAS sgemm
// calls (T = C^T Y over the p x cols strip, then the strip viewed as (p * cols/p) x p
// rows times C: each row segment is one patch row). Run with OPENBLAS_NUM_THREADS=1.
void BM_InverseDctSgemmStrip(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  const int64_t cols = 4096;
  const internal::DctBasis basis(p);
  std::vector<float> y(static_cast<size_t>(p) * cols), t(y.size()), x(y.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = 0.001f * static_cast<float>(i % 7);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p, cols, p, 1.0f, basis.ct.data(),
                p, y.data(), cols, 0.0f, t.data(), cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, p, p, 1.0f, t.data(), p,
                basis.c.data(), p, 0.0f, x.data(), p);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, static_cast<int64_t>(p) * cols);
}
BENCHMARK(BM_InverseDctSgemmStrip)->Arg(8)->Arg(16)->Arg(32);

#define DS_SHAPES ->Args({4096, 4096})->Args({4096, 11008})->Unit(benchmark::kMillisecond)
BENCHMARK(BM_Encode) DS_SHAPES;
BENCHMARK(BM_EncodeEcq) DS_SHAPES;
BENCHMARK(BM_EncodeEcqExhaustive)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeMergeF16) DS_SHAPES;
BENCHMARK(BM_DecodeMergeBF16) DS_SHAPES;
BENCHMARK(BM_DecodeMergeF16Mixed) DS_SHAPES;
BENCHMARK(BM_DecodeMergeEcqF16)
    ->Args({4096, 4096, 1})->Args({4096, 4096, 2})->Args({4096, 4096, 4})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeMergeEcqLowRankF16)
    ->Args({2048, 2048, 1})->Args({2048, 2048, 2})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MemcpyOutput) DS_SHAPES;
#undef DS_SHAPES

}  // namespace
}  // namespace deltaserve::codec

BENCHMARK_MAIN();

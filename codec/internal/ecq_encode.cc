#include "codec/internal/ecq_encode.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "codec/internal/dct.h"
#include "codec/internal/rans.h"
#include "common/coding.h"
#include "common/status_macros.h"

namespace deltaserve::codec::internal {
namespace {

// A chunk holds at least this many symbols (whole 64-row units): fewer chunks, less
// rANS table overhead; more chunks, finer parallel merges.
constexpr uint64_t kMinChunkSymbols = uint64_t{1} << 17;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Largest smaller dim of a matrix that tries low-rank factors: the Gram eigenproblem
// costs ~(4/3) n^3 flops (n = 2048: ~11 GFlop, seconds on one core; 4096 would take a
// minute per tensor).
constexpr int64_t kMaxLowRankDim = 2048;

// Order-0 entropy in bits of n symbols with histogram hist[256]; *used: symbols seen.
double EntropyBits(const uint64_t* hist, uint64_t n, int* used) {
  double bits = 0.0;
  for (int i = 0; i < 256; ++i) {
    if (hist[i] == 0) continue;
    ++*used;
    bits -= static_cast<double>(hist[i]) * std::log2(static_cast<double>(hist[i]) / n);
  }
  return bits;
}

}  // namespace

std::vector<int> EcqCandidateRanks(int64_t rows, int64_t cols, const EcqOptions& options) {
  std::vector<int> ranks;
  const int64_t small = std::min(rows, cols);
  if (!options.try_low_rank || small < 16 || small > kMaxLowRankDim) return ranks;
  const double per_rank_bits = 8.0 * static_cast<double>(rows + cols);
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  for (double bits : kEcqRankBits) {
    const int64_t r = std::min<int64_t>(
        {static_cast<int64_t>(bits * weights / per_rank_bits), small / 4, kMaxEcqRank});
    if (r >= 1 && (ranks.empty() || r > ranks.back())) ranks.push_back(static_cast<int>(r));
  }
  return ranks;
}

double SampledPlaneBytes(const uint64_t* hist, uint64_t n, uint64_t escapes, uint64_t full_count,
                         int64_t chunks) {
  int used = 0;
  const double bits = EntropyBits(hist, n, &used);
  const double scale = static_cast<double>(full_count) / static_cast<double>(n);
  // As ChunkBytes per chunk: the symbols, then per chunk a frequency table, the rANS
  // length field and the chunk-table entry; the escapes.
  return bits * scale / 8.0 + static_cast<double>(chunks) * (16.0 + 2.0 * used) +
         4.0 * static_cast<double>(escapes) * scale;
}

double GainAt(const QuantStats& st, float step, double bias, double w) {
  const double g = st.Gain(step, bias, w);
  return static_cast<double>(step) * g < static_cast<double>(kEcqMaxStep) * 0.5 ? g : 1.0;
}

namespace {

// One value of Quantize: adds its terms to `s`, counts an escape into *esc (appending the
// code to `escaped` if given), returns its symbol. Inlined into each caller, whose
// attributes decide the code (no fused multiply-adds in any of them).
__attribute__((always_inline)) inline uint8_t QuantizeOne(float v, float inv_step, float r,
                                                          QuantStats& s, uint64_t& esc,
                                                          std::vector<int32_t>* escaped) {
  const float a = std::fabs(v) * inv_step;
  const float m = std::floor(a + r);
  // Branch-free sums (whether a code is 0 is data-dependent): each sum gets the term
  // or an exact 0.0, so the sums are those of the branching form, bit for bit.
  const bool zero = m == 0.0f;
  const double e = static_cast<double>(a) - m;
  const double md = m;
  s.zero_sq += zero ? static_cast<double>(v) * v : 0.0;
  s.sum_e += zero ? 0.0 : e;
  s.sum_e2 += zero ? 0.0 : e * e;
  s.sum_m += md;  // m is 0 for a zero code
  s.sum_m2 += md * md;
  s.sum_em += zero ? 0.0 : e * md;
  s.nonzero += zero ? 0 : 1;
  if (m >= 128.0f) {  // |code| >= 128: the zigzag value is >= 255
    ++esc;
    if (escaped) escaped->push_back(v < 0 ? -static_cast<int32_t>(m) : static_cast<int32_t>(m));
    return kEcqEscape;
  }
  const int32_t mi = static_cast<int32_t>(m);
  return static_cast<uint8_t>(2 * mi - ((v < 0.0f) & (mi > 0)));
}

}  // namespace

// Quantize's passes get an x86-64-v3 clone (SSE4.1's roundss for the floor; the baseline
// calls a slow emulation) without fused multiply-adds: the same bits as the default
// clone. Only with GCC: clang ignores optimize("fp-contract=off") and would fuse the
// sums' products in that clone, so clang builds keep the baseline code.
// DS_NO_FP_CONTRACT: the same for a function without a clone (clang's baseline x86-64
// has no FMA to contract to).
#if defined(__clang__)
#define DS_ECQ_QUANT_CLONES
#define DS_NO_FP_CONTRACT
#else
#define DS_ECQ_QUANT_CLONES \
  __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("fp-contract=off")))
#define DS_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#endif

DS_ECQ_QUANT_CLONES void Quantize(const float* c, uint64_t n, float inv_step, float r,
                                  QuantStats* st, uint64_t* hist, uint64_t* escapes,
                                  uint8_t* symbols, std::vector<int32_t>* escaped,
                                  uint64_t stride) {
  QuantStats s;
  uint64_t esc = 0;
  for (uint64_t i = 0; i < n; i += stride) {
    const uint8_t sym = QuantizeOne(c[i], inv_step, r, s, esc, escaped);
    ++hist[sym];
    if (symbols) symbols[i] = sym;
  }
  st->Add(s);
  *escapes += esc;
}

EcqSortedSample SortEcqSample(const std::vector<float>& values) {
  EcqSortedSample out;
  out.value = values;
  std::stable_sort(out.value.begin(), out.value.end(),
                   [](float a, float b) { return std::fabs(a) < std::fabs(b); });
  out.square_prefix.resize(out.value.size() + 1);
  double sum = 0.0;
  out.square_prefix[0] = 0.0;
  for (size_t i = 0; i < out.value.size(); ++i) {
    sum += static_cast<double>(out.value[i]) * out.value[i];
    out.square_prefix[i + 1] = sum;
  }
  return out;
}

// The codes are non-decreasing along the sample (|v| * inv_step + r, each step rounded,
// then floor: all monotone), so the zero codes are a prefix found by bisection with the
// same float operations as QuantizeOne.
DS_ECQ_QUANT_CLONES void QuantizeSorted(const EcqSortedSample& sample, float inv_step, float r,
                                        QuantStats* st, uint64_t* hist, uint64_t* escapes) {
  const float* v = sample.value.data();
  uint64_t lo = 0, hi = sample.value.size();
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    const float a = std::fabs(v[mid]) * inv_step;
    if (std::floor(a + r) == 0.0f) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  QuantStats s;
  s.zero_sq = sample.square_prefix[lo];
  hist[0] += lo;
  uint64_t esc = 0;
  for (uint64_t i = lo; i < sample.value.size(); ++i) {
    ++hist[QuantizeOne(v[i], inv_step, r, s, esc, nullptr)];
  }
  st->Add(s);
  *escapes += esc;
}

namespace {

// The symbol of one value (Quantize's, without escapes: they become kEcqEscape); the
// escape flag is raised where |code| >= 128.
__attribute__((always_inline)) inline uint8_t SymbolOf(float v, float inv_step, float r,
                                                       int* any_escape) {
  const float a = std::fabs(v) * inv_step;
  const float m = std::floor(a + r);
  const int32_t mi = static_cast<int32_t>(std::min(m, 128.0f));
  const int32_t z = 2 * mi - ((v < 0.0f) & (mi > 0));
  *any_escape |= mi >= 128;
  return static_cast<uint8_t>(std::min(z, 255));
}

// No fused multiply-add: |c| / s + r rounds as in Quantize.
DS_ECQ_QUANT_CLONES int SymbolsPortable(const float* c, uint64_t n, float inv_step, float r,
                                        uint8_t* symbols) {
  int any_escape = 0;
  for (uint64_t i = 0; i < n; ++i) symbols[i] = SymbolOf(c[i], inv_step, r, &any_escape);
  return any_escape;
}

// The escaped codes of the kEcqEscape symbols, in order (rounded as in Quantize).
DS_NO_FP_CONTRACT void AppendEscapes(const float* c, uint64_t n, float inv_step, float r,
                                     const uint8_t* symbols, std::vector<int32_t>* escaped) {
  for (uint64_t i = 0; i < n; ++i) {
    if (symbols[i] != kEcqEscape) continue;
    const float v = c[i];
    const float m = std::floor(std::fabs(v) * inv_step + r);
    escaped->push_back(v < 0 ? -static_cast<int32_t>(m) : static_cast<int32_t>(m));
  }
}

#if defined(__x86_64__)
// SymbolsPortable 16 values at a time (GCC 12 leaves its clone scalar: floor and the
// float-to-int conversion do not vectorize there). Every step is the scalar one in
// IEEE single precision: |v| by clearing the sign, the product and the sum rounded
// separately (no FMA), floor, min(m, 128) (= (m < 128 ? m : 128), no NaN: finite
// inputs), truncation to int, then the zigzag with the sign where code > 0, and the
// 255 cap by unsigned saturation when packing.
// Eight values' zigzag codes (0..256; 255 and 256 mean escape) as 32-bit lanes; lanes
// with |code| >= 128 are set in *escapes.
__attribute__((target("avx2"), always_inline)) inline __m256i Codes8Avx2(const float* p, __m256 inv,
                                                                         __m256 r,
                                                                         __m256i* escapes) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 v = _mm256_loadu_ps(p);
  const __m256 a = _mm256_mul_ps(_mm256_and_ps(v, abs_mask), inv);
  const __m256 m = _mm256_min_ps(_mm256_floor_ps(_mm256_add_ps(a, r)), _mm256_set1_ps(128.0f));
  const __m256i mi = _mm256_cvttps_epi32(m);
  *escapes = _mm256_or_si256(*escapes, _mm256_cmpgt_epi32(mi, _mm256_set1_epi32(127)));
  const __m256i neg =
      _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ)),
                       _mm256_cmpgt_epi32(mi, _mm256_setzero_si256()));
  return _mm256_add_epi32(_mm256_slli_epi32(mi, 1), neg);  // neg lanes are -1
}

__attribute__((target("avx2"))) int SymbolsAvx2(const float* c, uint64_t n, float inv_step, float r,
                                                uint8_t* symbols) {
  const __m256 vinv = _mm256_set1_ps(inv_step), vr = _mm256_set1_ps(r);
  __m256i escapes = _mm256_setzero_si256();
  uint64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // z in [0, 256]: packs saturate 256 to 255 (unsigned), in lane order after the
    // cross-lane fix-up of the two 128-bit halves.
    const __m256i w = _mm256_packs_epi32(Codes8Avx2(c + i, vinv, vr, &escapes),
                                         Codes8Avx2(c + i + 8, vinv, vr, &escapes));
    const __m256i b = _mm256_permute4x64_epi64(w, 0xd8);
    const __m128i bytes =
        _mm_packus_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(symbols + i), bytes);
  }
  int any_escape = !_mm256_testz_si256(escapes, escapes);
  for (; i < n; ++i) symbols[i] = SymbolOf(c[i], inv_step, r, &any_escape);
  return any_escape;
}
#endif

}  // namespace

void QuantizeSymbols(const float* c, uint64_t n, float inv_step, float r, uint8_t* symbols,
                     std::vector<int32_t>* escaped) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  const int any_escape =
      avx2 ? SymbolsAvx2(c, n, inv_step, r, symbols) : SymbolsPortable(c, n, inv_step, r, symbols);
#else
  const int any_escape = SymbolsPortable(c, n, inv_step, r, symbols);
#endif
  if (any_escape) AppendEscapes(c, n, inv_step, r, symbols, escaped);
}

namespace {

constexpr int kMaxLanes = 8;

__attribute__((always_inline)) inline float LaneMaxAbs(const float* x, uint64_t n, float m) {
  float lane[kMaxLanes];
  for (float& l : lane) l = m;
  uint64_t i = 0;
  for (; i + kMaxLanes <= n; i += kMaxLanes) {
    for (int l = 0; l < kMaxLanes; ++l) {
      const float a = std::fabs(x[i + l]);
      lane[l] = a > lane[l] ? a : lane[l];
    }
  }
  for (; i < n; ++i) {
    const float a = std::fabs(x[i]);
    lane[0] = a > lane[0] ? a : lane[0];
  }
  for (float l : lane) m = l > m ? l : m;
  return m;
}

__attribute__((target_clones("arch=x86-64-v3", "default"))) float MaxAbsPortable(const float* x,
                                                                                 uint64_t n,
                                                                                 float m) {
  return LaneMaxAbs(x, n, m);
}

}  // namespace

float EcqMaxAbs(const float* x, uint64_t n, float m) { return MaxAbsPortable(x, n, m); }

double ChunkBytes(const uint64_t* hist, uint64_t n, uint64_t escapes) {
  int used = 0;
  const double bits = EntropyBits(hist, n, &used);
  return bits / 8.0 + 8.0 + 2.0 * used + 4.0 * static_cast<double>(escapes) + 8.0;
}

EcqHeader MakeEcqPlaneHeader(EcqTransform transform, int p, int64_t rows, int64_t cols) {
  EcqHeader h;
  h.transform = transform;
  h.patch_size = p;
  h.rows = rows;
  h.cols = cols;
  int64_t unit = std::lcm<int64_t>(p, 64);
  const int64_t padded_cols = CeilDiv(cols, p) * p;
  if (static_cast<uint64_t>(unit * padded_cols) > kMaxRansSymbols) unit = p;
  const int64_t per_unit = unit * padded_cols;
  const int64_t units = std::max<int64_t>(1, CeilDiv(kMinChunkSymbols, per_unit));
  h.chunk_rows = std::min<int64_t>(unit * units, CeilDiv(rows, unit) * unit);
  return h;
}

std::unique_ptr<EcqPlane> NewEcqPlane(int64_t rows, int64_t cols, EcqTransform transform,
                                      int patch_size, int rank,
                                      std::shared_ptr<const EcqFactors> factors) {
  auto pl = std::make_unique<EcqPlane>();
  const int p = transform == EcqTransform::kDct ? patch_size : 1;
  pl->header = MakeEcqPlaneHeader(transform, p, rows, cols);
  pl->header.rank = rank;
  pl->factors = std::move(factors);
  pl->factor_bytes = rank ? EcqFactorBytes(rank, rows, cols) : uint64_t{0};
  const int64_t chunks = EcqNumChunks(pl->header);
  pl->chunk_begin.assign(1, 0);
  for (int64_t c = 0; c < chunks; ++c) {
    pl->chunk_begin.push_back(pl->chunk_begin.back() + EcqChunkSymbols(pl->header, c));
  }
  return pl;
}

void EcqResidual(const float* delta, int64_t rows, int64_t cols, const EcqFactors& f,
                 std::vector<float>* residual) {
  residual->resize(static_cast<size_t>(rows) * static_cast<size_t>(cols));
  std::vector<float> low(static_cast<size_t>(cols));
  const std::vector<float> vf = EcqRightFactor(f, cols);
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(low.begin(), low.end(), 0.0f);
    AddEcqLowRankRows(f, vf.data(), r, r + 1, cols, low.data());
    for (int64_t c = 0; c < cols; ++c) (*residual)[r * cols + c] = delta[r * cols + c] - low[c];
  }
}

std::unique_ptr<EcqPlane> BuildEcqPlane(const float* src, int64_t rows, int64_t cols,
                                        EcqTransform transform, int patch_size, int rank,
                                        std::shared_ptr<const EcqFactors> factors, double* max_abs,
                                        std::vector<float>* storage) {
  auto pl = NewEcqPlane(rows, cols, transform, patch_size, rank, std::move(factors));
  if (storage != nullptr) pl->coef.swap(*storage);
  const int p = pl->header.patch_size;
  // max |value| in float (exact).
  float m = 0.0f;
  if (transform == EcqTransform::kIdentity) {
    const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
    pl->coef.assign(src, src + n);
    m = EcqMaxAbs(src, n);
    *max_abs = std::max<double>(*max_abs, m);
    return pl;
  }
  pl->coef.resize(pl->chunk_begin.back());
  const DctBasis basis(p);
  std::vector<float> patch(static_cast<size_t>(p) * p);
  const int64_t prows = CeilDiv(rows, p), pcols = CeilDiv(cols, p);
  float* dst = pl->coef.data();
  for (int64_t pr = 0; pr < prows; ++pr) {
    for (int64_t pc = 0; pc < pcols; ++pc) {
      const int64_t r0 = pr * p, c0 = pc * p;
      const int h = static_cast<int>(std::min<int64_t>(p, rows - r0));
      const int w = static_cast<int>(std::min<int64_t>(p, cols - c0));
      std::fill(patch.begin(), patch.end(), 0.0f);
      for (int r = 0; r < h; ++r) {
        std::memcpy(&patch[r * p], src + (r0 + r) * cols + c0, sizeof(float) * w);
      }
      ForwardDct2d(basis, patch.data(), p, dst, p);
      m = EcqMaxAbs(dst, static_cast<uint64_t>(p) * p, m);
      dst += p * p;
    }
  }
  *max_abs = std::max<double>(*max_abs, m);
  return pl;
}

absl::StatusOr<std::vector<uint8_t>> EncodeEcqPlane(const EcqPlane& plane, float step,
                                                    float rounding, double gain_weight,
                                                    EcqTrial* trial, uint64_t stats_stride) {
  return EncodeEcqCoefficients(plane, plane.coef.data(), step, rounding, gain_weight, trial,
                               stats_stride);
}

absl::StatusOr<std::vector<uint8_t>> EncodeEcqCoefficients(const EcqPlane& plane, const float* coef,
                                                           float step, float rounding,
                                                           double gain_weight, EcqTrial* trial,
                                                           uint64_t stats_stride) {
  const float inv = 1.0f / step;
  const int64_t chunks = static_cast<int64_t>(plane.chunk_begin.size()) - 1;
  // Pass 1: the bias of this choice.
  QuantStats st;
  std::vector<uint64_t> hist(256);
  uint64_t esc = 0;
  const uint64_t n = plane.chunk_begin.back();
  if (stats_stride > 0) {
    Quantize(coef, n, inv, rounding, &st, hist.data(), &esc, nullptr, nullptr, stats_stride);
  }
  if (stats_stride > 1) {
    st.Scale(static_cast<double>(n) / static_cast<double>((n + stats_stride - 1) / stats_stride));
  }
  EcqHeader h = plane.header;
  h.bias = static_cast<float>(st.BestBias());
  // The quantizer's step times the reconstruction gain: what the decoder scales codes by.
  const double gain = GainAt(st, step, h.bias, gain_weight);
  h.step = static_cast<float>(step * gain);
  // Pass 2: symbols, rANS streams and escapes per chunk.
  std::vector<uint8_t> body, symbols;
  std::vector<uint32_t> lengths;
  std::vector<int32_t> escaped;
  for (int64_t c = 0; c < chunks; ++c) {
    const uint64_t b = plane.chunk_begin[c], e = plane.chunk_begin[c + 1];
    symbols.resize(e - b);
    escaped.clear();
    QuantizeSymbols(coef + b, e - b, inv, rounding, symbols.data(), &escaped);
    std::vector<uint8_t> chunk(4);
    DS_RETURN_IF_ERROR(RansEncode(symbols, &chunk));
    common::EncodeFixed(chunk.data(), chunk.size() - 4, 4);
    common::ByteWriter<std::vector<uint8_t>> w(&chunk);
    for (int32_t q : escaped) w.U32(static_cast<uint32_t>(q));
    if (chunk.size() > 0xffffffffu) return absl::InvalidArgumentError("ecq chunk over 4 GiB");
    lengths.push_back(static_cast<uint32_t>(chunk.size()));
    body.insert(body.end(), chunk.begin(), chunk.end());
  }
  std::vector<uint8_t> out;
  AppendEcqHeader(h, lengths, &out);
  if (plane.factors) AppendEcqFactors(*plane.factors, &out);
  out.insert(out.end(), body.begin(), body.end());
  if (trial) {
    trial->bytes = static_cast<double>(out.size());
    trial->distortion = st.Distortion(step, h.bias, gain);
  }
  return out;
}

}  // namespace deltaserve::codec::internal

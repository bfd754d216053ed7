#include "codec/internal/ecq_encode.h"

#include <algorithm>
#include <cstring>
#include <numeric>

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

double SampledPlaneBytes(const uint64_t* hist, uint64_t n, uint64_t escapes,
                         uint64_t full_count, int64_t chunks) {
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

void Quantize(const float* c, uint64_t n, float inv_step, float r, QuantStats* st,
              uint64_t* hist, uint64_t* escapes, uint8_t* symbols,
              std::vector<int32_t>* escaped, uint64_t stride) {
  QuantStats s;
  uint64_t esc = 0;
  for (uint64_t i = 0; i < n; i += stride) {
    const float v = c[i];
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
    uint8_t sym = 0;
    if (m >= 128.0f) {  // |code| >= 128: the zigzag value is >= 255
      const int32_t q = v < 0 ? -static_cast<int32_t>(m) : static_cast<int32_t>(m);
      sym = kEcqEscape;
      ++esc;
      if (escaped) escaped->push_back(q);
    } else {
      const int32_t mi = static_cast<int32_t>(m);
      sym = static_cast<uint8_t>(2 * mi - ((v < 0.0f) & (mi > 0)));
    }
    ++hist[sym];
    if (symbols) symbols[i] = sym;
  }
  st->Add(s);
  *escapes += esc;
}

// The symbols of Quantize (stride 1) without its sums: vectorized (a code escapes iff
// its magnitude m >= 128). No fused multiply-add: |c| / s + r rounds as in Quantize.
__attribute__((target_clones("arch=x86-64-v3", "default"), optimize("fp-contract=off"))) void
QuantizeSymbols(const float* c, uint64_t n, float inv_step, float r, uint8_t* symbols,
                std::vector<int32_t>* escaped) {
  int any_escape = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const float v = c[i];
    const float a = std::fabs(v) * inv_step;
    const float m = std::floor(a + r);
    const int32_t mi = static_cast<int32_t>(std::min(m, 128.0f));
    const int32_t z = 2 * mi - ((v < 0.0f) & (mi > 0));
    symbols[i] = static_cast<uint8_t>(std::min(z, 255));
    any_escape |= mi >= 128;
  }
  if (!any_escape) return;
  for (uint64_t i = 0; i < n; ++i) {
    if (symbols[i] != kEcqEscape) continue;
    const float v = c[i];
    const float m = std::floor(std::fabs(v) * inv_step + r);
    escaped->push_back(v < 0 ? -static_cast<int32_t>(m) : static_cast<int32_t>(m));
  }
}

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
                                        std::shared_ptr<const EcqFactors> factors,
                                        double* max_abs, std::vector<float>* storage) {
  auto pl = NewEcqPlane(rows, cols, transform, patch_size, rank, std::move(factors));
  if (storage != nullptr) pl->coef.swap(*storage);
  const int p = pl->header.patch_size;
  // max |value| in float (exact), as x > m ? x : m so that it vectorizes.
  float m = 0.0f;
  if (transform == EcqTransform::kIdentity) {
    const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
    pl->coef.assign(src, src + n);
    for (uint64_t i = 0; i < n; ++i) {
      const float x = std::fabs(src[i]);
      m = x > m ? x : m;
    }
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
      for (int k = 0; k < p * p; ++k) {
        const float x = std::fabs(dst[k]);
        m = x > m ? x : m;
      }
      dst += p * p;
    }
  }
  *max_abs = std::max<double>(*max_abs, m);
  return pl;
}

absl::StatusOr<std::vector<uint8_t>> EncodeEcqPlane(const EcqPlane& plane, float step,
                                                    float rounding, double gain_weight,
                                                    EcqTrial* trial, uint64_t stats_stride) {
  const float inv = 1.0f / step;
  const int64_t chunks = static_cast<int64_t>(plane.chunk_begin.size()) - 1;
  // Pass 1: the bias of this choice.
  QuantStats st;
  std::vector<uint64_t> hist(256);
  uint64_t esc = 0;
  const uint64_t n = plane.coef.size();
  Quantize(plane.coef.data(), n, inv, rounding, &st, hist.data(), &esc, nullptr, nullptr,
           stats_stride);
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
    QuantizeSymbols(plane.coef.data() + b, e - b, inv, rounding, symbols.data(), &escaped);
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

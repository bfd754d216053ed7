#include "codec/internal/ecq_lowrank.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/internal/fp16.h"
#include "common/coding.h"

// Fortran BLAS / LAPACK (OpenBLAS provides both): column-major, arguments by pointer.
extern "C" {
void ssyrk_(const char* uplo, const char* trans, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* beta, float* c, const int* ldc);
void ssyevr_(const char* jobz, const char* range, const char* uplo, const int* n, float* a,
             const int* lda, const float* vl, const float* vu, const int* il, const int* iu,
             const float* abstol, int* m, float* w, float* z, const int* ldz, int* isuppz,
             float* work, const int* lwork, int* iwork, const int* liwork, int* info);
}

namespace deltaserve::codec::internal {
namespace {

// Scale max|x| / 127 and int8 codes round(x / scale) of one factor vector.
void QuantizeVector(const std::vector<float>& x, float* scale, int8_t* q, size_t stride) {
  float m = 0.0f;
  for (float v : x) m = std::max(m, std::fabs(v));
  *scale = m > 0.0f && m < kMaxEcqFactorScale * 127.0f ? m / 127.0f : 0.0f;
  for (size_t i = 0; i < x.size(); ++i) {
    q[i * stride] =
        *scale > 0.0f
            ? static_cast<int8_t>(std::clamp(std::nearbyint(x[i] / *scale), -127.0f, 127.0f))
            : 0;
  }
}

}  // namespace

uint64_t EcqFactorBytes(int rank, int64_t rows, int64_t cols) {
  return 4 + 8 * static_cast<uint64_t>(rank) +
         static_cast<uint64_t>(rank) * static_cast<uint64_t>(rows + cols);
}

void AppendEcqFactors(const EcqFactors& f, std::vector<uint8_t>* out) {
  common::ByteWriter w(out);
  w.U32(static_cast<uint32_t>(f.rank));
  for (float s : f.u_scale) w.U32(FloatBits(s));
  for (float s : f.v_scale) w.U32(FloatBits(s));
  w.Bytes(f.u.data(), f.u.size());
  w.Bytes(f.v.data(), f.v.size());
}

absl::StatusOr<EcqFactors> ParseEcqFactors(absl::Span<const uint8_t> data, int64_t rows,
                                           int64_t cols) {
  if (data.size() < 4) return absl::DataLossError("ecq factors truncated: no rank");
  const uint32_t rank = common::DecodeFixed32(data.data());
  const int64_t limit = std::min<int64_t>({rows, cols, kMaxEcqRank});
  if (rank == 0 || rank > limit) {
    return absl::DataLossError(
        absl::StrCat("ecq factors: rank ", rank, " outside [1, ", limit, "]"));
  }
  EcqFactors f;
  f.rank = static_cast<int>(rank);
  const uint64_t need = EcqFactorBytes(f.rank, rows, cols);
  if (need > data.size()) {
    return absl::DataLossError(absl::StrCat("ecq factors truncated: rank ", rank, " needs ", need,
                                            " bytes, ", data.size(), " left"));
  }
  const uint8_t* b = data.data() + 4;
  for (int k = 0; k < 2 * f.rank; ++k) {
    const float s = BitsFloat(common::DecodeFixed32(b + 4 * k));
    if (!std::isfinite(s) || s < 0.0f || s >= kMaxEcqFactorScale) {
      return absl::DataLossError(absl::StrCat("ecq factors: bad scale ", s));
    }
    (k < f.rank ? f.u_scale : f.v_scale).push_back(s);
  }
  b += 8 * f.rank;
  const size_t nu = static_cast<size_t>(rows) * rank, nv = static_cast<size_t>(cols) * rank;
  f.u.resize(nu);
  f.v.resize(nv);
  std::memcpy(f.u.data(), b, nu);
  std::memcpy(f.v.data(), b + nu, nv);
  return f;
}

std::vector<float> EcqRightFactor(const EcqFactors& f, int64_t cols) {
  const int64_t tiles = (cols + kEcqLowRankTile - 1) / kEcqLowRankTile;
  std::vector<float> vf(static_cast<size_t>(tiles * f.rank * kEcqLowRankTile), 0.0f);
  for (int k = 0; k < f.rank; ++k) {
    for (int64_t c = 0; c < cols; ++c) {
      vf[((c / kEcqLowRankTile) * f.rank + k) * kEcqLowRankTile + c % kEcqLowRankTile] =
          f.v_scale[k] * static_cast<float>(f.v[k * cols + c]);
    }
  }
  return vf;
}

// Every multiply-add is an explicit fused one, so the sum is defined to the bit on every
// CPU and in every clone (the baseline clone calls libm's fmaf: slow, only CPUs without
// FMA), as the DCT kernels (internal/dct.cc). A tile of W columns of one row is summed in
// registers over all k; the block's rows reuse the tile of vf from L1.
template <int W>
__attribute__((always_inline)) inline void LowRankTile(const float* a, int rank, const float* vf,
                                                       int64_t cols, float* xr) {
  float acc[W];
  for (int j = 0; j < W; ++j) acc[j] = xr[j];
  for (int k = 0; k < rank; ++k) {
    const float ak = a[k];
    if (ak == 0.0f) continue;
    const float* v = vf + k * cols;
    for (int j = 0; j < W; ++j) acc[j] = __builtin_fmaf(ak, v[j], acc[j]);
  }
  for (int j = 0; j < W; ++j) xr[j] = acc[j];
}

// The last w < W columns: the same sums, in place.
__attribute__((always_inline)) inline void LowRankTail(const float* a, int rank, const float* vf,
                                                       int64_t cols, int64_t w, float* xr) {
  for (int k = 0; k < rank; ++k) {
    const float ak = a[k];
    if (ak == 0.0f) continue;
    const float* v = vf + k * cols;
    for (int64_t j = 0; j < w; ++j) xr[j] = __builtin_fmaf(ak, v[j], xr[j]);
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
AddEcqLowRankRows(const EcqFactors& f, const float* vf, int64_t r0, int64_t r1, int64_t cols,
                  float* x) {
  constexpr int64_t kTile = kEcqLowRankTile;
  const int rank = f.rank;
  std::vector<float> a(static_cast<size_t>((r1 - r0) * rank));
  for (int64_t r = r0; r < r1; ++r) {
    for (int k = 0; k < rank; ++k) {
      a[(r - r0) * rank + k] = f.u_scale[k] * static_cast<float>(f.u[r * rank + k]);
    }
  }
  for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
    const int64_t w = std::min(kTile, cols - c0);
    for (int64_t r = r0; r < r1; ++r) {
      const float* ar = a.data() + (r - r0) * rank;
      float* xr = x + (r - r0) * cols + c0;
      const float* tile = vf + (c0 / kTile) * rank * kTile;  // rank x kTile, contiguous
      if (w == kTile) {
        LowRankTile<kTile>(ar, rank, tile, kTile, xr);
      } else {
        LowRankTail(ar, rank, tile, kTile, w, xr);
      }
    }
  }
}

absl::StatusOr<EcqFactors> TopEcqFactors(const float* a, int64_t rows, int64_t cols, int rank) {
  // Eigenvectors of the smaller Gram matrix: G = A^T A (n = cols) or A A^T (n = rows).
  // Row-major A is column-major X = A^T (cols x rows, ld cols).
  const bool by_cols = cols <= rows;
  const int n = static_cast<int>(by_cols ? cols : rows);
  const int k = static_cast<int>(by_cols ? rows : cols);
  const int lda = static_cast<int>(cols);
  std::vector<float> g(static_cast<size_t>(n) * n, 0.0f);
  const float one = 1.0f, zero = 0.0f;
  ssyrk_("U", by_cols ? "N" : "T", &n, &k, &one, a, &lda, &zero, g.data(), &n);
  const int il = n - rank + 1, iu = n;
  const float vl = 0.0f, vu = 0.0f, abstol = 0.0f;
  int m = 0, info = 0, lwork = -1, liwork = -1, iwork_query = 0;
  float work_query = 0.0f;
  std::vector<float> w(n), z(static_cast<size_t>(n) * rank);
  std::vector<int> isuppz(2 * static_cast<size_t>(rank));
  ssyevr_("V", "I", "U", &n, g.data(), &n, &vl, &vu, &il, &iu, &abstol, &m, w.data(), z.data(), &n,
          isuppz.data(), &work_query, &lwork, &iwork_query, &liwork, &info);
  if (info != 0) return absl::InvalidArgumentError(absl::StrCat("ssyevr query: info ", info));
  lwork = static_cast<int>(work_query) + 1;
  liwork = iwork_query;
  std::vector<float> work(lwork);
  std::vector<int> iwork(liwork);
  ssyevr_("V", "I", "U", &n, g.data(), &n, &vl, &vu, &il, &iu, &abstol, &m, w.data(), z.data(), &n,
          isuppz.data(), work.data(), &lwork, iwork.data(), &liwork, &info);
  if (info != 0 || m != rank) {
    return absl::InvalidArgumentError(absl::StrCat("ssyevr: info ", info, ", ", m, " of ", rank));
  }
  EcqFactors f;
  f.rank = rank;
  f.u_scale.resize(rank);
  f.v_scale.resize(rank);
  f.u.resize(static_cast<size_t>(rows) * rank);
  f.v.resize(static_cast<size_t>(cols) * rank);
  std::vector<float> left(rows), right(cols);
  for (int j = 0; j < rank; ++j) {
    const float* e = z.data() + static_cast<size_t>(rank - 1 - j) * n;  // descending
    if (by_cols) {                                                      // right = e, left = A e
      std::copy(e, e + cols, right.begin());
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0.0;
        for (int64_t c = 0; c < cols; ++c) s += static_cast<double>(a[r * cols + c]) * e[c];
        left[r] = static_cast<float>(s);
      }
    } else {  // left = e, right = A^T e
      std::copy(e, e + rows, left.begin());
      std::fill(right.begin(), right.end(), 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) right[c] += e[r] * a[r * cols + c];
      }
    }
    QuantizeVector(left, &f.u_scale[j], f.u.data() + j, rank);
    QuantizeVector(right, &f.v_scale[j], f.v.data() + static_cast<size_t>(j) * cols, 1);
  }
  return f;
}

EcqFactors TruncateEcqFactors(const EcqFactors& f, int rank, int64_t rows) {
  EcqFactors t;
  t.rank = rank;
  t.u_scale.assign(f.u_scale.begin(), f.u_scale.begin() + rank);
  t.v_scale.assign(f.v_scale.begin(), f.v_scale.begin() + rank);
  const size_t cols = f.v.size() / f.rank;
  t.v.assign(f.v.begin(), f.v.begin() + static_cast<size_t>(rank) * cols);
  t.u.resize(static_cast<size_t>(rows) * rank);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(t.u.data() + r * rank, f.u.data() + r * f.rank, rank);
  }
  return t;
}

}  // namespace deltaserve::codec::internal

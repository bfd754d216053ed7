#include "codec/internal/ecq_lowrank.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

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
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
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

bool EcqLowRankMayPay(const float* a, int64_t rows, int64_t cols, int rank, double energy) {
  if (rows > (1 << 30) / (rank + 4) || cols > (1 << 30) / (rank + 4)) return true;  // int dims
  const int l = rank + 4;
  const int m = static_cast<int>(rows), n = static_cast<int>(cols);
  const float one = 1.0f, zero = 0.0f;
  // W^T (l x cols, column-major): +-1 from a fixed generator (SplitMix64).
  std::vector<float> wt(static_cast<size_t>(l) * cols);
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (float& w : wt) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    w = ((z ^ (z >> 31)) & 1) ? 1.0f : -1.0f;
  }
  // Y = A W (rows x l, row-major = column-major l x rows).
  std::vector<float> y(static_cast<size_t>(l) * rows);
  sgemm_("N", "N", &l, &m, &n, &one, wt.data(), &l, a, &n, &zero, y.data(), &l);
  // Q: orthonormal columns of Y (modified Gram-Schmidt, in double; a dependent column
  // becomes 0).
  std::vector<double> col(rows);
  for (int j = 0; j < l; ++j) {
    for (int64_t r = 0; r < rows; ++r) col[r] = y[r * l + j];
    for (int i = 0; i < j; ++i) {
      double d = 0.0;
      for (int64_t r = 0; r < rows; ++r) d += col[r] * y[r * l + i];
      for (int64_t r = 0; r < rows; ++r) col[r] -= d * y[r * l + i];
    }
    double norm = 0.0;
    for (int64_t r = 0; r < rows; ++r) norm += col[r] * col[r];
    norm = std::sqrt(norm);
    const double inv = norm > 0.0 ? 1.0 / norm : 0.0;
    for (int64_t r = 0; r < rows; ++r) y[r * l + j] = static_cast<float>(col[r] * inv);
  }
  // C = Q^T A (column-major l x cols), G = C C^T (l x l).
  std::vector<float> c(static_cast<size_t>(l) * cols);
  sgemm_("N", "T", &l, &n, &m, &one, y.data(), &l, a, &n, &zero, c.data(), &l);
  std::vector<double> g(static_cast<size_t>(l) * l, 0.0);
  for (int64_t k = 0; k < cols; ++k) {
    const float* ck = c.data() + k * l;
    for (int i = 0; i < l; ++i) {
      for (int j = 0; j <= i; ++j) g[i * l + j] += static_cast<double>(ck[i]) * ck[j];
    }
  }
  for (int i = 0; i < l; ++i) {
    for (int j = 0; j < i; ++j) g[j * l + i] = g[i * l + j];
  }
  // Eigenvalues of G (cyclic Jacobi): the squared singular values of C.
  for (int sweep = 0; sweep < 50; ++sweep) {
    double off = 0.0;
    for (int i = 0; i < l; ++i) {
      for (int j = i + 1; j < l; ++j) off += g[i * l + j] * g[i * l + j];
    }
    if (off <= 1e-24 * (energy * energy)) break;
    for (int p = 0; p < l; ++p) {
      for (int q = p + 1; q < l; ++q) {
        const double apq = g[p * l + q];
        if (apq == 0.0) continue;
        const double theta = (g[q * l + q] - g[p * l + p]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double cs = 1.0 / std::sqrt(t * t + 1.0), sn = t * cs;
        for (int k = 0; k < l; ++k) {  // G <- J^T G J
          const double gkp = g[k * l + p], gkq = g[k * l + q];
          g[k * l + p] = cs * gkp - sn * gkq;
          g[k * l + q] = sn * gkp + cs * gkq;
        }
        for (int k = 0; k < l; ++k) {
          const double gpk = g[p * l + k], gqk = g[q * l + k];
          g[p * l + k] = cs * gpk - sn * gqk;
          g[q * l + k] = sn * gpk + cs * gqk;
        }
      }
    }
  }
  std::vector<double> ev(l);
  for (int i = 0; i < l; ++i) ev[i] = g[i * l + i];
  std::sort(ev.begin(), ev.end(), std::greater<double>());
  double top = 0.0;
  for (int i = 0; i < rank; ++i) top += std::max(0.0, ev[i]);
  const double f = top / energy;
  const double b = 8.0 * static_cast<double>(EcqFactorBytes(rank, rows, cols)) /
                   (static_cast<double>(rows) * static_cast<double>(cols));
  return f >= kEcqLowRankMinGain * b;
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

#include "codec/internal/dct.h"

#include <cassert>
#include <cmath>

namespace deltaserve::codec::internal {
namespace {

// out = M in N for p x p matrices M, N (contiguous) and strided in/out. Rows are
// processed as whole vectors: the compiler keeps a patch row in one register for the
// fixed sizes. Every output element sums its products in the same order on every call.
template <int P>
__attribute__((always_inline)) inline void TripleProductFixed(const float* m, const float* n,
                                                              const float* in,
                                                              int64_t in_stride, float* out,
                                                              int64_t out_stride) {
  float t[P][P];
  for (int i = 0; i < P; ++i) {
    float acc[P] = {};
    for (int j = 0; j < P; ++j) {
      const float w = m[i * P + j];
      const float* row = in + j * in_stride;
      for (int c = 0; c < P; ++c) acc[c] += w * row[c];
    }
    for (int c = 0; c < P; ++c) t[i][c] = acc[c];
  }
  for (int i = 0; i < P; ++i) {
    float acc[P] = {};
    for (int j = 0; j < P; ++j) {
      const float w = t[i][j];
      const float* row = n + j * P;
      for (int c = 0; c < P; ++c) acc[c] += w * row[c];
    }
    float* o = out + i * out_stride;
    for (int c = 0; c < P; ++c) o[c] = acc[c];
  }
}

__attribute__((always_inline)) inline void TripleProductAny(int p, const float* m,
                                                            const float* n, const float* in,
                                                            int64_t in_stride, float* out,
                                                            int64_t out_stride) {
  float t[kMaxDctPatch * kMaxDctPatch];
  float acc[kMaxDctPatch];
  for (int i = 0; i < p; ++i) {
    for (int c = 0; c < p; ++c) acc[c] = 0.0f;
    for (int j = 0; j < p; ++j) {
      const float w = m[i * p + j];
      const float* row = in + j * in_stride;
      for (int c = 0; c < p; ++c) acc[c] += w * row[c];
    }
    for (int c = 0; c < p; ++c) t[i * p + c] = acc[c];
  }
  for (int i = 0; i < p; ++i) {
    for (int c = 0; c < p; ++c) acc[c] = 0.0f;
    for (int j = 0; j < p; ++j) {
      const float w = t[i * p + j];
      const float* row = n + j * p;
      for (int c = 0; c < p; ++c) acc[c] += w * row[c];
    }
    float* o = out + i * out_stride;
    for (int c = 0; c < p; ++c) o[c] = acc[c];
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
TripleProduct(int p, const float* m, const float* n, const float* in, int64_t in_stride,
              float* out, int64_t out_stride) {
  switch (p) {
    case 8:
      return TripleProductFixed<8>(m, n, in, in_stride, out, out_stride);
    case 16:
      return TripleProductFixed<16>(m, n, in, in_stride, out, out_stride);
    case 32:
      return TripleProductFixed<32>(m, n, in, in_stride, out, out_stride);
    default:
      return TripleProductAny(p, m, n, in, in_stride, out, out_stride);
  }
}


// Inverse only, p even: the DCT basis is symmetric, C[k][p-1-n] = (-1)^k C[k][n], so
// each 1-D inverse splits into even-k and odd-k half sums, E +- O (one butterfly
// level): half the multiply-adds of the plain product.
template <int P>
__attribute__((always_inline)) inline void InverseEvenOdd(const float* c, const float* in,
                                                          int64_t in_stride, float* out,
                                                          int64_t out_stride) {
  constexpr int H = P / 2;
  float t[P][P];
  // Columns: t = C^T in, row pairs (n, P-1-n).
  for (int n = 0; n < H; ++n) {
    float e[P] = {}, o[P] = {};
    for (int k = 0; k < P; k += 2) {
      const float we = c[k * P + n], wo = c[(k + 1) * P + n];
      const float* re = in + k * in_stride;
      const float* ro = in + (k + 1) * in_stride;
      for (int x = 0; x < P; ++x) {
        e[x] += we * re[x];
        o[x] += wo * ro[x];
      }
    }
    for (int x = 0; x < P; ++x) {
      t[n][x] = e[x] + o[x];
      t[P - 1 - n][x] = e[x] - o[x];
    }
  }
  // Rows: out = t C, column pairs (m, P-1-m).
  for (int i = 0; i < P; ++i) {
    float e[H] = {}, o[H] = {};
    for (int k = 0; k < P; k += 2) {
      const float we = t[i][k], wo = t[i][k + 1];
      const float* ce = c + k * P;
      const float* co = c + (k + 1) * P;
      for (int m = 0; m < H; ++m) {
        e[m] += we * ce[m];
        o[m] += wo * co[m];
      }
    }
    float* row = out + i * out_stride;
    for (int m = 0; m < H; ++m) row[m] = e[m] + o[m];
    for (int m = 0; m < H; ++m) row[P - 1 - m] = e[m] - o[m];
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) bool
InverseFast(int p, const float* c, const float* in, int64_t in_stride, float* out,
            int64_t out_stride) {
  switch (p) {
    case 8:
      InverseEvenOdd<8>(c, in, in_stride, out, out_stride);
      return true;
    case 16:
      InverseEvenOdd<16>(c, in, in_stride, out, out_stride);
      return true;
    case 32:
      InverseEvenOdd<32>(c, in, in_stride, out, out_stride);
      return true;
    default:
      return false;
  }
}

}  // namespace

DctBasis::DctBasis(int p_in) : p(p_in), c(static_cast<size_t>(p_in) * p_in),
                               ct(static_cast<size_t>(p_in) * p_in) {
  assert(p >= 1 && p <= kMaxDctPatch);
  const double pi = std::acos(-1.0);
  for (int k = 0; k < p; ++k) {
    const double a = std::sqrt((k == 0 ? 1.0 : 2.0) / p);
    for (int n = 0; n < p; ++n) {
      const float v = static_cast<float>(a * std::cos(pi * (2 * n + 1) * k / (2.0 * p)));
      c[k * p + n] = v;
      ct[n * p + k] = v;
    }
  }
}

void ForwardDct2d(const DctBasis& basis, const float* in, int64_t in_stride, float* out,
                  int64_t out_stride) {
  TripleProduct(basis.p, basis.c.data(), basis.ct.data(), in, in_stride, out, out_stride);
}

void InverseDct2d(const DctBasis& basis, const float* in, int64_t in_stride, float* out,
                  int64_t out_stride) {
  if (InverseFast(basis.p, basis.c.data(), in, in_stride, out, out_stride)) return;
  TripleProduct(basis.p, basis.ct.data(), basis.c.data(), in, in_stride, out, out_stride);
}

}  // namespace deltaserve::codec::internal

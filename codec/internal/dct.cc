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
  TripleProduct(basis.p, basis.ct.data(), basis.c.data(), in, in_stride, out, out_stride);
}

}  // namespace deltaserve::codec::internal

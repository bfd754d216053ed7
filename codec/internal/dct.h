// Orthonormal 2-D DCT-II / DCT-III (inverse) of square p x p patches.
//
// C is the p x p orthonormal DCT-II matrix, C[k][n] = a_k cos(pi (2n + 1) k / (2p)),
// a_0 = sqrt(1/p), a_k = sqrt(2/p): C C^T = I. The 2-D transform of a patch X is
// Y = C X C^T and its inverse X = C^T Y C (JPEG's DCT, e.g. Wallace 1992, eq. 1-2).
// Kernels are hand-written separable matrix products, specialised for p = 8, 16, 32
// (whole patch rows as vectors) and generic otherwise; the inverse for p = 8/16/32 uses
// one even/odd butterfly level (half the multiply-adds; it measured faster than both
// the plain product and an AVX-512 intrinsics version of it). OpenBLAS sgemm over a
// whole strip (codec_bench BM_InverseDctSgemmStrip) is no faster at p = 32 (665 vs 645
// M weights/s, one core), slower at 16, and cannot skip dropped patches; so no BLAS. They are compiled for
// x86-64-v4 (AVX-512), v3 (AVX2+FMA) and baseline and chosen once per process by the
// CPU, so a given machine always produces the same bits. Pure, thread-safe.
#ifndef DELTASERVE_CODEC_INTERNAL_DCT_H_
#define DELTASERVE_CODEC_INTERNAL_DCT_H_

#include <cstdint>
#include <vector>

namespace deltaserve::codec::internal {

// Largest patch edge the kernels accept.
inline constexpr int kMaxDctPatch = 64;

// The p x p DCT-II matrix C (row-major) and its transpose. REQUIRES: 1 <= p <= 64.
struct DctBasis {
  int p = 0;
  std::vector<float> c;   // C[k * p + n]
  std::vector<float> ct;  // C^T
  explicit DctBasis(int p);
};

// out = C in C^T. `in` and `out` are p x p with row strides in_stride / out_stride
// (in floats); they must not overlap.
void ForwardDct2d(const DctBasis& basis, const float* in, int64_t in_stride, float* out,
                  int64_t out_stride);
// out = C^T in C (DCT-III, the exact inverse of ForwardDct2d up to rounding).
void InverseDct2d(const DctBasis& basis, const float* in, int64_t in_stride, float* out,
                  int64_t out_stride);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_DCT_H_

// Orthonormal 2-D DCT-II / DCT-III (inverse) of square p x p patches.
//
// C is the p x p orthonormal DCT-II matrix, C[k][n] = a_k cos(pi (2n + 1) k / (2p)),
// a_0 = sqrt(1/p), a_k = sqrt(2/p): C C^T = I. The 2-D transform of a patch X is
// Y = C X C^T and its inverse X = C^T Y C (JPEG's DCT, e.g. Wallace 1992, eq. 1-2).
// Kernels are hand-written separable matrix products, specialised for p = 8, 16, 32
// (whole patch rows as vectors) and generic otherwise; the inverse for p = 8/16/32 uses
// one even/odd butterfly level (half the multiply-adds); at p = 32 it uses explicit fused
// multiply-adds so that its bits are defined on every CPU, and on AVX-512 CPUs a
// register-blocked intrinsics version of it runs instead (same bits; 16 independent
// multiply-add chains in each pass so that two FMA ports stay busy: codec_bench
// BM_InverseDct2d/32 712 -> 1056 M weights/s against 2 n / 4 rows at a time, one shared
// core, load ~7; ~10x the compiled one). OpenBLAS sgemm over a
// whole strip (codec_bench BM_InverseDctSgemmStrip) is no faster at p = 32 (665 vs 645
// M weights/s, one core), slower at 16, and cannot skip dropped patches; so no BLAS. They are compiled for
// x86-64-v4 (AVX-512), v3 (AVX2+FMA) and baseline and chosen once per process by the
// CPU; the p = 32 inverse gives the same bits on every CPU. Pure, thread-safe.
#ifndef DELTASERVE_CODEC_INTERNAL_DCT_H_
#define DELTASERVE_CODEC_INTERNAL_DCT_H_

#include <cstdint>
#include <vector>

#include "codec/tensor.h"

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
// At p = 32 on an AVX-512 CPU this runs a hand-blocked intrinsics kernel that gives the
// same bits as InverseDct2dPortable on that CPU (measured 3-4x faster in codec_bench
// BM_InverseDct2d/32: the compiled row pass is dominated by lane permutes).
void InverseDct2d(const DctBasis& basis, const float* in, int64_t in_stride, float* out,
                  int64_t out_stride);
// Whether InverseDct2dMerge runs for patch edge p and `dtype` on this CPU: p = 32 with
// AVX-512F (+ FMA, F16C), dtype F16 or BF16.
bool CanInverseDct2dMerge(int p, DType dtype);
// The inverse fused with the merge into a 16-bit float base of the same dtype:
// out[r][c] = MergeRow's result (dtype -> dtype) of base[r][c] + X[r][c] for the p x p
// patch X = C^T in C, where `in` is contiguous (row stride p) and base/out are `dtype`
// rows with strides base_stride / out_stride (in elements). The same bits as
// InverseDct2d into floats followed by MergeRow on each row (dct_test checks it); the
// float patch never goes to memory. Returns the number of values saturated.
// REQUIRES: CanInverseDct2dMerge(basis.p, dtype).
int64_t InverseDct2dMerge(const DctBasis& basis, const float* in, DType dtype,
                          const uint16_t* base, int64_t base_stride, uint16_t* out,
                          int64_t out_stride);
// The compiled (target_clones) inverse, without the intrinsics kernel: the reference
// for tests that the fast path is bit-identical.
void InverseDct2dPortable(const DctBasis& basis, const float* in, int64_t in_stride,
                          float* out, int64_t out_stride);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_DCT_H_

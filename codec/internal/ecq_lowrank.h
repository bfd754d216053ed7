// Low-rank factors of an ecq payload (codec/FORMAT.md, "Entropy-coded payload
// (encoding 3)", flag bit 0): the delta is coded as L + R, L = sum_k a_k b_k^T of rank K
// (a_k = su_k * u_k, b_k = sv_k * v_k, u and v int8, su and sv float32 per component)
// and R the ecq-coded residual. Encoder side: the top singular factors of a matrix
// (LAPACK ssyevr on its Gram matrix, OpenBLAS); both sides: the factor bytes and the
// one function that adds a row of L (so encoder and decoder agree).
#ifndef DELTASERVE_CODEC_INTERNAL_ECQ_LOWRANK_H_
#define DELTASERVE_CODEC_INTERNAL_ECQ_LOWRANK_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace deltaserve::codec::internal {

// Largest rank a payload may carry, and the bound on a factor scale (|L| stays far from
// float32's overflow: 1024 x 127^2 x 2^40 x 2^40 < 2^105).
inline constexpr int kMaxEcqRank = 1024;
inline constexpr float kMaxEcqFactorScale = 1099511627776.0f;  // 2^40

// Factor costs, in bits per weight of the tensor, of the ranks an encoder tries
// (EcqCandidateRanks, internal/ecq_encode.h): 1/16, then steps of 1/8 up to 1. Steps
// this fine let the rate-distortion choice (the rank rule in codec/delta_ecq.cc) give a
// near-low-rank tensor factors that fill most of a 0.25 or 0.5 bit budget, where the
// older grid (1/16, 1/4, 1) offered only all or almost nothing.
inline constexpr double kEcqRankBits[] = {1.0 / 16, 1.0 / 8, 2.0 / 8, 3.0 / 8, 4.0 / 8,
                                          5.0 / 8,  6.0 / 8, 7.0 / 8, 1.0};

// Quantized factors: u is rows x rank and v rank x cols, both row-major.
struct EcqFactors {
  int rank = 0;
  std::vector<float> u_scale, v_scale;  // rank each, finite, in [0, 2^40)
  std::vector<int8_t> u, v;
};

// Bytes of a factor section of rank `rank`: 4 + 8 rank + rank (rows + cols).
uint64_t EcqFactorBytes(int rank, int64_t rows, int64_t cols);

// Appends the factor section (FORMAT.md). REQUIRES: consistent sizes.
void AppendEcqFactors(const EcqFactors& f, std::vector<uint8_t>* out);

// Reads a factor section from the start of `data` (which may hold more bytes after
// it). DataLoss for a rank of 0 or above min(rows, cols, kMaxEcqRank), a section running
// past `data`, or a scale that is not finite or outside [0, 2^40).
absl::StatusOr<EcqFactors> ParseEcqFactors(absl::Span<const uint8_t> data, int64_t rows,
                                           int64_t cols);

// Columns per tile of the low-rank kernel: 4 (AVX-512) or 8 (AVX2) FMA chains.
inline constexpr int64_t kEcqLowRankTile = 64;

// The dequantized right factor sv_k v[k][c], in tiles of kEcqLowRankTile columns: tile t
// holds rank x kEcqLowRankTile floats (row k: columns t*64 .., zero past cols), so that a
// tile is contiguous (rows of 2^k floats apart would alias in L1).
std::vector<float> EcqRightFactor(const EcqFactors& f, int64_t cols);

// x[r - r0][0, cols) += row r of L for r in [r0, r1) (x has row stride cols): for
// k = 0 .. rank-1 in order, skipping a = su_k u[r][k] = 0, x[c] = fma(a, vf[k][c], x[c])
// (float32, one rounding: the same bits on every CPU).
// The decoder's definition of L, the same whatever the row range; the encoder builds its
// residual with it. Tiled over columns so that the tile of vf stays in L1 across rows.
void AddEcqLowRankRows(const EcqFactors& f, const float* vf, int64_t r0, int64_t r1, int64_t cols,
                       float* x);

// Top `rank` singular pairs of a[rows x cols] (row-major float32), as int8 factors with
// a scale per component (max |.| / 127). Computed from the eigenvectors of the smaller
// Gram matrix (A^T A or A A^T, OpenBLAS ssyrk + LAPACK ssyevr), accurate for the leading
// components that low-rank coding uses. REQUIRES: 1 <= rank <= min(rows, cols), rank <=
// kMaxEcqRank. InvalidArgument if LAPACK fails. Not thread-hostile: LAPACK calls are
// reentrant (run with OPENBLAS_NUM_THREADS=1 for one core each).
absl::StatusOr<EcqFactors> TopEcqFactors(const float* a, int64_t rows, int64_t cols, int rank);

// Whether low-rank factors of rank >= `rank` may pay on a[rows x cols] (energy: its sum
// of squares, > 0), judged from a randomized sketch (Halko, Martinsson & Tropp 2011):
// the top `rank` singular values of Q^T A, Q an orthonormal basis of A W with W a fixed
// +-1 matrix of rank + 4 columns (two OpenBLAS sgemm passes over A, ~4 (rank + 4) flops
// per weight). They may pay when the energy fraction f they hold is at least
// kEcqLowRankMinGain times their factor bits per weight b: rank-r factors reduce the
// error of the rest of the payload by a fraction f, worth about 2 ln 2 f bits per weight
// at high rates (D ~ 2^-2R), so f / b < 1 / (2 ln 2) = 0.72 never pays; 0.5 leaves a
// margin for the sketch's underestimate. An i.i.d. noise delta gives f / b <= 0.25
// (top singular value (sqrt(rows) + sqrt(cols))^2 sigma^2 per component). As f / b of the
// leading components falls with the rank, no larger rank pays either when this one
// cannot. REQUIRES: 1 <= rank <= min(rows, cols) - 4.
bool EcqLowRankMayPay(const float* a, int64_t rows, int64_t cols, int rank, double energy);
inline constexpr double kEcqLowRankMinGain = 0.5;

// The first `rank` components of `f` (its leading singular pairs).
EcqFactors TruncateEcqFactors(const EcqFactors& f, int rank, int64_t rows);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_ECQ_LOWRANK_H_

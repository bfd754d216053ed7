// Delta-DCT: JPEG-style compression of one 2-D delta matrix.
//
// Source: Huang et al., "Seeing Delta Parameters as JPEG Images: Data-Free Delta
// Compression with Discrete Cosine Transform", arXiv 2503.06676, Section 3:
//   1. cut the [rows, cols] delta into p x p patches (zero-padded at the edges);
//   2. importance of a patch = its L2 (Frobenius) norm; rank patches, most important
//      first, and give them bit-widths from a mixed-precision schedule (0-bit patches
//      are dropped);
//   3. orthonormal 2-D DCT-II of each kept patch; uniform quantization of its
//      coefficients with the patch's bit-width and per-patch parameters; bit-pack.
// Decode = unpack, dequantize, inverse DCT (DCT-III), crop. The choices the paper
// leaves open are documented, with measurements, in codec/FORMAT.md.
//
// The payload produced here is self-describing (it records p, the bit-width table and
// quantizer mode), so decoding needs only the payload and the matrix shape.
// All functions are thread-safe; they allocate only their own scratch.
#ifndef DELTASERVE_CODEC_DELTA_DCT_H_
#define DELTASERVE_CODEC_DELTA_DCT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/tensor.h"

namespace deltaserve::codec {

// Mixed-precision schedule: (bit-width, fraction of patches), most important first.
// Text form "b1:f1,b2:f2,..." e.g. "2:0.5,0:0.5" or "4:0.25,2:0.25,0:0.5".
struct BitSchedule {
  // Most levels a schedule (and a payload's bit-width table) may have.
  static constexpr int kMaxLevels = 16;

  std::vector<std::pair<int, double>> levels;

  // Same checks as Parse, on `levels`.
  absl::Status Validate() const;

  // InvalidArgument: empty, more than kMaxLevels levels, bit-width outside [0, 8],
  // fraction <= 0, fractions not summing to 1 (within 1e-6), or a malformed token
  // (message quotes it). Spaces around tokens are ignored.
  static absl::StatusOr<BitSchedule> Parse(std::string_view text);
  std::string ToString() const;
  // Number of patches at each level for `num_patches` patches: floor of the cumulative
  // fraction boundaries, so counts always sum to num_patches. Deterministic.
  std::vector<int64_t> Counts(int64_t num_patches) const;
  // Average bits per coefficient, sum(b_i * f_i).
  double MeanBits() const;
};

// How coefficients are quantized inside a patch. Numeric values are stored in payloads.
enum class Quantizer : uint8_t {
  kMinMax = 0,     // uniform over [min, max] of the patch's coefficients
  kSymmetric = 1,  // uniform over [-absmax, absmax] (stores only the scale)
  kClipped = 2,    // uniform over the sub-range of [min, max] with least squared error
};

// The default schedule, "1:1" (a function, not a braced initializer: GCC 12 warns
// falsely about initializer_list members of default-constructed structs).
inline BitSchedule DefaultDctSchedule() {
  BitSchedule s;
  s.levels.emplace_back(1, 1.0);
  return s;
}

struct DctParams {
  // Edge of a square patch, in weights. Larger: fewer per-patch parameters (4 bytes per
  // kept patch), coarser bit allocation, more zero padding on thin matrices. Must be in
  // [2, 64]. Default: 32 (the study in codec/FORMAT.md, on the faceres pair).
  int patch_size = 32;
  // Bit-widths per importance rank. Default: "1:1", every patch at 1 bit: on the real
  // pair the patch norms vary little, and spending the ~1 bit/weight budget evenly beat
  // every mixed schedule measured (codec/FORMAT.md). Mixed schedules such as
  // "2:0.5,0:0.5" stay available.
  BitSchedule schedule = DefaultDctSchedule();
  // Default: kClipped (lowest error at the same size; kMinMax at 1 bit is worse than
  // dropping the patch).
  Quantizer quantizer = Quantizer::kClipped;
  // Store each kept patch's DC coefficient apart (bf16) and quantize only the AC ones.
  // Default: false (2 more bytes per patch for < 0.5% less error).
  bool separate_dc = false;

  absl::Status Validate() const;
};

// 2-D view of an N-D tensor shape used for DCT coding: [prod(shape[:k]), prod(shape[k:])]
// with k in [1, n-1] chosen to minimize the zero-padded area at patch size p (ties go to
// the larger k, i.e. HWIO kernels become [kh*kw*in, out]). A 1-D or scalar shape has no
// 2-D view (InvalidArgument). Example: depthwise [3, 3, C, 1] -> [9, C], not [9C, 1].
absl::StatusOr<std::pair<int64_t, int64_t>> MatrixView(absl::Span<const int64_t> shape,
                                                       int patch_size);

// Encodes delta[rows x cols] (row-major float32). InvalidArgument on bad params or
// rows/cols <= 0. `threads` > 1 encodes that many pieces of whole patch rows at once (on
// threads of its own) and joins them: the same bytes as threads = 1.
absl::StatusOr<std::vector<uint8_t>> EncodeDctMatrix(const float* delta, int64_t rows, int64_t cols,
                                                     const DctParams& params, int threads = 1);

// Decodes a payload into out[rows x cols] (overwritten). InvalidArgument/DataLoss if the
// payload is malformed or its recorded sizes do not match rows x cols; never over-reads.
absl::Status DecodeDctMatrix(absl::Span<const uint8_t> payload, int64_t rows, int64_t cols,
                             float* out);

// Fused decode + merge, the serving hot path:
//   out[i] = cast<out_dtype>(to_f32(base[i]) + delta_hat[i])
// base holds rows*cols elements of base_dtype; out holds rows*cols of out_dtype. A
// finite sum that the cast would make infinite saturates to out_dtype's largest finite
// value instead (FORMAT.md, "Decoding").
// Deterministic: the same bytes on every run and thread count. Same errors as
// DecodeDctMatrix.
absl::Status DecodeDctMatrixMerge(absl::Span<const uint8_t> payload, int64_t rows,
                                  int64_t cols, const uint8_t* base, DType base_dtype,
                                  DType out_dtype, uint8_t* out);

// DecodeDctMatrixMerge restricted to matrix rows [row_begin, row_end): writes exactly
// those rows of `out` (out still points at row 0 of the whole rows x cols matrix; other
// rows are untouched) and reads only the patch-row strips covering them, so disjoint
// ranges can run on different threads into one buffer. The union of any ranges that
// cover [0, rows) is byte-identical to DecodeDctMatrixMerge. Ranges aligned to the
// payload's patch size (a multiple of 64 rows always is) decode each strip once; an
// unaligned boundary strip is decoded by both neighbours. Cost of the seek to
// row_begin: none for single-level schedules, one pass over the level map otherwise.
// Errors: those of DecodeDctMatrix; InvalidArgument unless
// 0 <= row_begin <= row_end <= rows (an empty range is OK and writes nothing).
// `on_rows`, if given, is called on this thread after each patch-row strip is written,
// with the rows [r0, r1) now final, in increasing order, covering [row_begin, row_end)
// exactly (lets a caller hash or send the rows while they are still in cache).
// `saturated`, if given, is incremented by the number of merged values that saturated
// to out_dtype's range instead of becoming infinite (see DecodeDctMatrixMerge).
using RowsDoneFn = std::function<void(int64_t r0, int64_t r1)>;
absl::Status DecodeDctMatrixMergeRows(absl::Span<const uint8_t> payload, int64_t rows, int64_t cols,
                                      int64_t row_begin, int64_t row_end, const uint8_t* base,
                                      DType base_dtype, DType out_dtype, uint8_t* out,
                                      const RowsDoneFn& on_rows = nullptr,
                                      int64_t* saturated = nullptr);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_DELTA_DCT_H_

// Fused "add a float32 delta to a base row and cast" used by Delta-DCT decode+merge, and
// the saturation rule every cast to a narrower float dtype follows.
#ifndef DELTASERVE_CODEC_INTERNAL_MERGE_H_
#define DELTASERVE_CODEC_INTERNAL_MERGE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "codec/tensor.h"

namespace deltaserve::codec::internal {

// F16's largest finite value (0x7BFF) and the smallest magnitude that rounds to Inf
// (65520: halfway to 2^16, ties to even = Inf); see SaturateForCast.
inline constexpr float kF16MaxFinite = 65504.0f;
inline constexpr float kF16Overflow = 65520.0f;
// BF16's, as float32 bits: 0x7F7F (3.3895e38) and 0x7F7F8000 (halfway above it, ties to
// even = 0x7F80, Inf).
inline constexpr uint32_t kBf16MaxFiniteBits = 0x7F7F0000u;
inline constexpr uint32_t kBf16OverflowBits = 0x7F7F8000u;

// The argument checks every *MatrixMergeRows decoder shares: InvalidArgument when `base`
// or `out` is null or [row_begin, row_end) is not inside [0, rows].
absl::Status CheckMergeRowsArgs(const uint8_t* base, const uint8_t* out, int64_t rows,
                                int64_t row_begin, int64_t row_end);

// The saturation rule (FORMAT.md, "Decoding"): a finite float32 value that a cast to
// `out_dtype` would round to +-Inf (|v| >= 65520 for F16, >= 0x7F7F8000 as float32
// for BF16) becomes the dtype's largest finite value of the same sign (+-65504 for F16,
// +-3.3895e38 for BF16). Inf and NaN stay as they are; other dtypes are never touched.
// Rewrites v[0, n) in place; returns how many values it changed.
int64_t SaturateForCast(float* v, int64_t n, DType out_dtype);

// out[i] = cast<out_dtype>(to_f32(base[i]) + delta[i]) for i < n, bit-identical to
// ToFloat32 + float add + SaturateForCast + FromFloat32: a lossy delta's overshoot
// must not turn a finite weight infinite. delta == nullptr means a zero delta (each
// element still goes through "+ 0.0f"). `scratch` holds n floats (unused by fused
// paths). Returns the number of values saturated.
int64_t MergeRow(const uint8_t* base, DType base_dtype, const float* delta, int64_t n,
                 DType out_dtype, uint8_t* out, float* scratch);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_MERGE_H_

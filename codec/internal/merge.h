// Fused "add a float32 delta to a base row and cast" used by Delta-DCT decode+merge.
#ifndef DELTASERVE_CODEC_INTERNAL_MERGE_H_
#define DELTASERVE_CODEC_INTERNAL_MERGE_H_

#include <cstdint>

#include "codec/tensor.h"

namespace deltaserve::codec::internal {

// out[i] = cast<out_dtype>(to_f32(base[i]) + delta[i]) for i < n, bit-identical to
// ToFloat32 + float add + FromFloat32, except that a sum beyond the largest finite
// F16/BF16 value saturates to it (+-65504 for F16) instead of becoming Inf: a lossy
// delta's overshoot must not turn a finite weight infinite. NaN stays NaN. delta == nullptr means a
// zero delta (each element still goes through "+ 0.0f"). `scratch` holds n floats (unused by fused
// paths).
void MergeRow(const uint8_t* base, DType base_dtype, const float* delta, int64_t n,
              DType out_dtype, uint8_t* out, float* scratch);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_MERGE_H_

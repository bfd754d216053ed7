// Uniform scalar quantization of one patch's DCT coefficients.
//
// A b-bit code q in [0, 2^b - 1] stands for offset + q * scale. Parameters are stored
// as bfloat16 (8-bit exponent: any delta magnitude keeps its relative precision) and the
// encoder quantizes with the *rounded* parameters, so the decoder reproduces exactly
// what the encoder measured. Range choice per mode (codec/delta_dct.h, Quantizer):
//   kMinMax:    levels span [min, max]; |error| <= scale / 2 for every coefficient.
//   kSymmetric: levels span [-absmax, absmax], offset = -(2^b - 1) / 2 * scale (only
//               the scale is stored); |error| <= scale / 2.
//   kClipped:   start from the MSE-optimal uniform grid of a Gaussian with the patch's
//               mean and deviation (at >= 3 bits: or the min-max grid if its squared
//               error is lower), then up to 3 Lloyd steps restricted to uniform grids
//               (least-squares fit of offset and scale to the assigned codes) while the
//               error drops; tails are clamped. Stored like kMinMax.
// Pure functions, thread-safe.
#ifndef DELTASERVE_CODEC_INTERNAL_QUANTIZE_H_
#define DELTASERVE_CODEC_INTERNAL_QUANTIZE_H_

#include <cstdint>

#include "codec/delta_dct.h"

namespace deltaserve::codec::internal {

struct QuantParams {
  float offset = 0.0f;  // value of code 0 (exactly a bfloat16 value)
  float scale = 0.0f;   // step between codes, >= 0 (exactly a bfloat16 value)
};

// Number of bf16 parameters stored per kept patch for `mode`: 2 (offset, scale) or 1.
int NumStoredParams(Quantizer mode);

// Rounds to a bfloat16 value toward -inf / +inf (finite inputs stay finite unless they
// exceed the bf16 range).
float Bf16Down(float x);
float Bf16Up(float x);

// Chooses parameters for n coefficients at `bits` (1..8). REQUIRES: values finite.
QuantParams ChooseQuantParams(const float* v, int n, int bits, Quantizer mode);
// codes[i] = clamp(round((v[i] - offset) / scale), 0, 2^bits - 1) (0 when scale == 0).
void QuantizeValues(const float* v, int n, int bits, const QuantParams& qp, uint8_t* codes);
// out[i] = offset + float(codes[i]) * scale: the decoder's reconstruction (vectorized;
// FMA-contracted on CPUs that have FMA).
void DequantizeCodes(const uint8_t* codes, int n, float offset, float scale, float* out);
// The one-bit case of UnpackCodes + DequantizeCodes in one pass: out[i] = the
// DequantizeCodes value of code ((packed[i / 8] >> (i % 8)) & 1), i < n (the two values
// are computed by DequantizeCodes itself, so the bits are the same). Reads (n + 7) / 8
// bytes of `packed`. 16 codes per AVX-512 mask blend on CPUs that have it.
void DequantizeBits1(const uint8_t* packed, int n, float offset, float scale, float* out);
// Sum over i of (v[i] - dequantized code)^2, for the chosen parameters.
double QuantizationSquaredError(const float* v, int n, int bits, const QuantParams& qp);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_QUANTIZE_H_

// Byte layout of a Delta-DCT payload (codec/FORMAT.md, "Delta-DCT payload"): writing the
// header and validating a whole payload before any decoding touches it.
#ifndef DELTASERVE_CODEC_INTERNAL_DCT_PAYLOAD_H_
#define DELTASERVE_CODEC_INTERNAL_DCT_PAYLOAD_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/delta_dct.h"

namespace deltaserve::codec::internal {

inline constexpr uint8_t kDctMagic[4] = {'D', 'D', 'C', 'T'};
inline constexpr uint8_t kDctVersion = 1;
// rows and cols are stored as uint32.
inline constexpr int64_t kMaxPayloadDim = 0xffffffffLL;
// Fixed part of the header, before the bit-width table.
inline constexpr size_t kFixedHeaderBytes = 17;

struct PayloadHeader {
  int patch_size = 0;
  Quantizer quantizer = Quantizer::kMinMax;
  bool separate_dc = false;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int> widths;  // bit-width of each level, 1..16 entries in [0, 8]
};

// Bits per allocation-map entry for `num_levels` levels: ceil(log2(num_levels)).
int LevelIndexBits(int num_levels);

// Appends magic, version, fields and bit-width table. REQUIRES: a valid header.
void AppendPayloadHeader(const PayloadHeader& h, std::vector<uint8_t>* out);

// A payload whose every length and value has been checked against its size and the
// expected shape. Pointers alias the payload.
struct ParsedPayload {
  PayloadHeader header;
  int64_t prows = 0, pcols = 0;
  // Level index of patch i (row-major patch order); all 0 when there is one level.
  uint8_t LevelOf(uint64_t i) const { return level_of.empty() ? 0 : level_of[i]; }
  std::vector<uint8_t> level_of;  // empty when there is one level
  const uint8_t* params = nullptr;
  uint64_t params_size = 0;
  const uint8_t* codes = nullptr;
  uint64_t codes_size = 0;
};

// InvalidArgument if rows/cols are out of range or differ from the recorded ones;
// DataLoss for a bad magic, unknown version, bad field, truncation, trailing bytes,
// non-zero padding bits or a non-finite / negative stored parameter.
absl::StatusOr<ParsedPayload> ParsePayload(absl::Span<const uint8_t> payload, int64_t rows,
                                           int64_t cols);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_DCT_PAYLOAD_H_

// Byte layout of an entropy-coded ("ecq", container encoding 3) payload
// (codec/FORMAT.md, "Entropy-coded payload (encoding 3)"): writing the fixed header and
// validating a whole payload's framing before any decoding touches it.
#ifndef DELTASERVE_CODEC_INTERNAL_ECQ_PAYLOAD_H_
#define DELTASERVE_CODEC_INTERNAL_ECQ_PAYLOAD_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/delta_ecq.h"

namespace deltaserve::codec::internal {

inline constexpr uint8_t kEcqMagic[4] = {'D', 'E', 'C', 'Q'};
inline constexpr uint8_t kEcqVersion = 1;
// Bytes before the chunk-length table.
inline constexpr size_t kEcqFixedHeaderBytes = 32;
// Symbol 255 escapes a code whose zigzag value does not fit below it.
inline constexpr uint8_t kEcqEscape = 255;

struct EcqHeader {
  EcqTransform transform = EcqTransform::kDct;
  int patch_size = 1;    // 1 for the identity transform
  int64_t rows = 0, cols = 0;
  float step = 0.0f;     // finite, > 0
  float bias = 0.0f;     // finite, in [0, 1)
  int64_t chunk_rows = 0;  // > 0, a multiple of patch_size
  int rank = 0;            // of the low-rank factor section (flag bit 0); 0: none
};

// Number of chunks of a header: ceil(rows / chunk_rows).
int64_t EcqNumChunks(const EcqHeader& h);
// Number of coded symbols of chunk `c` (its rows rounded up to whole patches, times the
// padded width, for the DCT; its rows times cols for the identity).
uint64_t EcqChunkSymbols(const EcqHeader& h, int64_t c);

// Appends the fixed header (chunk_lengths.size() must be EcqNumChunks(h)) and the chunk
// length table. REQUIRES: a valid header.
void AppendEcqHeader(const EcqHeader& h, absl::Span<const uint32_t> chunk_lengths,
                     std::vector<uint8_t>* out);

// A payload whose header fields and chunk framing have been checked against its size
// and the expected shape. `chunk_offset[c]` is the payload offset of chunk c and
// `chunk_offset[num_chunks]` the payload size. Chunk contents (rANS streams, escapes)
// are checked by the decoder.
struct ParsedEcq {
  EcqHeader header;
  uint64_t factor_offset = 0;  // payload offset of the factor section if header.rank > 0
  std::vector<uint64_t> chunk_offset;
};

// InvalidArgument if rows/cols are out of range or differ from the recorded ones;
// DataLoss for a bad magic, unknown version or transform, a bad field, truncation or
// trailing bytes.
absl::StatusOr<ParsedEcq> ParseEcqPayload(absl::Span<const uint8_t> payload, int64_t rows,
                                          int64_t cols);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_ECQ_PAYLOAD_H_

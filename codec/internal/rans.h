// Entropy coding of byte symbols with htscodecs' static rANS (Bonfield, "The htscodecs
// library", Bioinformatics 2022; the CRAM 3.1 "rans4x16" codec), Debian's
// libhtscodecs-dev. Chosen for decode speed: its order-0 and order-1 decoders are
// interleaved 4- or 32-way with SSE4/AVX2/AVX-512 paths picked at run time by the CPU,
// and it is hardened against hostile input (fuzzed as part of htslib's CRAM reader).
// A stream is self-describing (order, frequency tables, symbol count); its bytes are
// htscodecs' own format (htscodecs docs/rans4x16.tex), not redefined here.
// Thread-safe: no shared state besides htscodecs' one-time CPU detection.
#ifndef DELTASERVE_CODEC_INTERNAL_RANS_H_
#define DELTASERVE_CODEC_INTERNAL_RANS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace deltaserve::codec::internal {

// Largest number of symbols one stream may hold (htscodecs counts in unsigned int).
inline constexpr uint64_t kMaxRansSymbols = uint64_t{1} << 30;

// Appends to `out` the smallest of the order-0 and order-1 rANS streams of `symbols`
// (32-way SIMD layout chosen by htscodecs for large inputs). Only the order that
// empirical entropies show to be smaller by a margin is coded; both where they cannot
// tell (rans.cc, PickOrders: on the chunks measured, the same stream as coding both). REQUIRES:
// symbols.size() <= kMaxRansSymbols. InternalError if htscodecs fails (out of memory).
absl::Status RansEncode(absl::Span<const uint8_t> symbols, std::vector<uint8_t>* out);

// Decodes `stream` into exactly out.size() symbols. DataLoss if the stream is malformed
// or holds another number of symbols. Never writes outside `out`.
absl::Status RansDecode(absl::Span<const uint8_t> stream, absl::Span<uint8_t> out);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_RANS_H_

#include "codec/internal/rans.h"

#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"

extern "C" {
#include <htscodecs/rANS_static4x16.h>
}

namespace deltaserve::codec::internal {
namespace {

struct FreeDeleter {
  void operator()(unsigned char* p) const { std::free(p); }
};

}  // namespace

absl::Status RansEncode(absl::Span<const uint8_t> symbols, std::vector<uint8_t>* out) {
  if (symbols.size() > kMaxRansSymbols) {
    return absl::InvalidArgumentError(
        absl::StrCat("rANS stream of ", symbols.size(), " symbols exceeds ", kMaxRansSymbols));
  }
  // htscodecs takes a non-const input pointer but only reads it.
  unsigned char* in = const_cast<unsigned char*>(symbols.data());
  static const unsigned char kEmpty = 0;
  if (in == nullptr) in = const_cast<unsigned char*>(&kEmpty);
  const unsigned int n = static_cast<unsigned int>(symbols.size());
  std::unique_ptr<unsigned char, FreeDeleter> best;
  unsigned int best_size = 0;
  for (int order : {0, 1}) {
    unsigned int size = 0;
    std::unique_ptr<unsigned char, FreeDeleter> s(
        rans_compress_4x16(in, n, &size, order | RANS_ORDER_SIMD_AUTO));
    if (s == nullptr) return absl::InternalError("rans_compress_4x16 failed");
    if (best == nullptr || size < best_size) {
      best = std::move(s);
      best_size = size;
    }
  }
  out->insert(out->end(), best.get(), best.get() + best_size);
  return absl::OkStatus();
}

absl::Status RansDecode(absl::Span<const uint8_t> stream, absl::Span<uint8_t> out) {
  if (out.size() > kMaxRansSymbols || stream.size() > 0xffffffffu) {
    return absl::DataLossError("rANS stream too large");
  }
  if (stream.empty()) return absl::DataLossError("empty rANS stream");
  unsigned int size = static_cast<unsigned int>(out.size());
  // An empty `out` still needs a valid pointer for htscodecs.
  uint8_t dummy = 0;
  unsigned char* dst = out.empty() ? &dummy : out.data();
  unsigned char* got = rans_uncompress_to_4x16(const_cast<unsigned char*>(stream.data()),
                                               static_cast<unsigned int>(stream.size()), dst,
                                               &size);
  if (got == nullptr) return absl::DataLossError("malformed rANS stream");
  if (got != dst) {  // htscodecs allocated a buffer of its own: not expected with `dst`
    std::free(got);
    return absl::DataLossError("malformed rANS stream");
  }
  if (size != out.size()) {
    return absl::DataLossError(
        absl::StrCat("rANS stream holds ", size, " symbols, expected ", out.size()));
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::codec::internal

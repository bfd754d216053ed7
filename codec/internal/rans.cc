#include "codec/internal/rans.h"

#include <cmath>
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

// Which of htscodecs' orders to code: both (the smaller kept) where the estimates below
// cannot tell.
enum class Orders { kZero, kOne, kBoth };

// x log2 x (0 for x = 0).
double XLog2X(uint64_t x) {
  return x == 0 ? 0.0 : static_cast<double>(x) * std::log2(static_cast<double>(x));
}

// Picks the order from the symbols' empirical entropies, in bytes: H0 (order 0) and
// H1 (of each symbol given the one before it), so gain = H0 - H1 >= 0, against the
// order-1 stream's larger frequency tables, `extra` more (context, symbol) pairs than
// order 0 has symbols. Measured on the 510 chunks that faceres and a USE-lite pair
// code at 0.25-4 bits per weight, the order-1 stream's size minus order 0's is
// -gain + T with T between 0.9 extra - 15 and 2 extra + 85 bytes. Every one of those
// chunks is given the order that coding both keeps, by at least 16 bytes (order 0) and
// 97 bytes (order 1) on the right side of the bounds below; so are the 3486 chunks of
// the stream_bench-shaped models (their containers are byte-identical to coding both).
Orders PickOrders(const uint8_t* in, uint64_t n) {
  // Pair counts c1[prev][sym], in 4 interleaved quarters (independent increments);
  // every pair is counted once (each quarter starts from the symbol before it). The
  // rows used are zeroed again after use: the table stays zero between calls.
  thread_local std::vector<uint32_t> c1(4 * 256 * 256, 0);
  const uint64_t q = n / 4;
  uint32_t* t[4] = {&c1[0], &c1[65536], &c1[2 * 65536], &c1[3 * 65536]};
  uint32_t prev[4] = {0, 0, 0, 0};
  for (int k = 1; k < 4; ++k) prev[k] = q > 0 ? in[k * q - 1] : 0;
  for (uint64_t i = 0; i < q; ++i) {
    for (int k = 0; k < 4; ++k) {
      const uint32_t s = in[k * q + i];
      ++t[k][prev[k] * 256 + s];
      prev[k] = s;
    }
  }
  for (uint64_t i = 4 * q; i < n; ++i) {  // the tail, in the last quarter's table
    const uint32_t s = in[i];
    ++t[3][prev[3] * 256 + s];
    prev[3] = s;
  }
  // Contexts are 0 (the first) and symbols: the rows to read, found from the symbols
  // seen (a symbol is seen in some context's row: the first pass finds them in row 0's
  // and each seen symbol's row, transitively, starting from context 0).
  bool seen[256] = {false};
  int stack[256], top = 0;
  seen[0] = true;
  stack[top++] = 0;
  uint64_t c0[256] = {0};
  double h1 = 0.0;  // in bits
  int pairs = 0;
  while (top > 0) {
    const int a = stack[--top];
    uint64_t row = 0;
    for (int b = 0; b < 256; ++b) {
      const size_t at = static_cast<size_t>(a) * 256 + b;
      const uint64_t c = uint64_t{t[0][at]} + t[1][at] + t[2][at] + t[3][at];
      if (c == 0) continue;
      for (int k = 0; k < 4; ++k) t[k][at] = 0;
      c0[b] += c;
      row += c;
      h1 -= XLog2X(c);
      ++pairs;
      if (!seen[b]) {
        seen[b] = true;
        stack[top++] = b;
      }
    }
    h1 += XLog2X(row);
  }
  double h0 = XLog2X(n);
  int symbols = 0;
  for (uint64_t c : c0) {
    h0 -= XLog2X(c);
    symbols += c > 0;
  }
  const double gain = (h0 - h1) / 8.0;
  const double extra = pairs - symbols;
  if (gain < 0.8 * extra - 4.0) return Orders::kZero;
  if (gain > 2.0 * extra + 80.0) return Orders::kOne;
  return Orders::kBoth;
}

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
  const Orders pick = PickOrders(in, n);
  for (int order : {0, 1}) {
    if ((order == 0 && pick == Orders::kOne) || (order == 1 && pick == Orders::kZero)) continue;
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

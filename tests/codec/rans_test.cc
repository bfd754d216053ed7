// The rANS wrapper (codec/internal/rans.h): RansEncode keeps the smaller of htscodecs'
// order-0 and order-1 streams while coding only the order its entropy estimates pick.
#include "codec/internal/rans.h"

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

extern "C" {
#include <htscodecs/rANS_static4x16.h>
}

namespace deltaserve::codec::internal {
namespace {

using ::deltaserve::testing::IsOk;

// Size of htscodecs' stream of `s` at `order`, as RansEncode asks for it.
unsigned int CodedSize(const std::vector<uint8_t>& s, int order) {
  unsigned int size = 0;
  unsigned char* out = rans_compress_4x16(const_cast<unsigned char*>(s.data()),
                                          static_cast<unsigned int>(s.size()), &size,
                                          order | RANS_ORDER_SIMD_AUTO);
  EXPECT_NE(out, nullptr);
  std::free(out);
  return size;
}

// n symbols: kind 0 near-iid codes of a quantized Gaussian (ecq's usual chunk, order 0
// smaller by its tables); kind 1 a Markov chain whose next symbol is mostly the previous
// one plus 1 (order 1 far smaller); kind 2 iid over a few symbols, short (close call).
std::vector<uint8_t> Symbols(int kind, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> s(n);
  std::normal_distribution<double> g(0.0, 1.2);
  uint8_t prev = 0;
  for (size_t i = 0; i < n; ++i) {
    if (kind == 1) {
      prev = static_cast<uint8_t>(rng() % 8 == 0 ? rng() % 40 : (prev + 1) % 40);
      s[i] = prev;
    } else if (kind == 2) {
      s[i] = static_cast<uint8_t>(rng() % 3);
    } else {
      const long q = std::lround(g(rng));
      s[i] = static_cast<uint8_t>(q > 0 ? 2 * q : -2 * q - (q < 0 ? 1 : 0));
    }
  }
  return s;
}

TEST(RansTest, KeepsTheSmallerOrderAndDecodes) {
  struct Case {
    int kind;
    size_t n;
    unsigned int smaller_order;  // which order htscodecs codes smaller for this source
  };
  const Case cases[] = {{0, 172032, 0}, {0, 4096, 0}, {1, 131072, 1}, {1, 20000, 1},
                        {2, 300, 0}};
  for (const Case& c : cases) {
    for (uint32_t seed : {1u, 2u}) {
      const std::vector<uint8_t> s = Symbols(c.kind, c.n, seed);
      const unsigned int o0 = CodedSize(s, 0), o1 = CodedSize(s, 1);
      EXPECT_EQ(o0 <= o1 ? 0u : 1u, c.smaller_order) << c.kind << " " << c.n << " " << o0 << " " << o1;
      std::vector<uint8_t> out = {7, 7};  // RansEncode appends
      ASSERT_THAT(RansEncode(s, &out), IsOk());
      EXPECT_EQ(out.size() - 2, std::min(o0, o1)) << c.kind << " " << c.n;
      std::vector<uint8_t> back(s.size());
      ASSERT_THAT(RansDecode(absl::MakeConstSpan(out).subspan(2), absl::MakeSpan(back)), IsOk());
      EXPECT_EQ(back, s);
    }
  }
  std::vector<uint8_t> out;
  ASSERT_THAT(RansEncode({}, &out), IsOk());
  std::vector<uint8_t> none;
  EXPECT_THAT(RansDecode(out, absl::MakeSpan(none)), IsOk());
}

}  // namespace
}  // namespace deltaserve::codec::internal

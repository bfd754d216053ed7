#include "codec/internal/bitpack.h"

#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"

namespace deltaserve::codec::internal {
namespace {

TEST(BitpackTest, RoundTripEveryWidthAndOddCounts) {
  std::mt19937 rng(1);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t n : {0, 1, 3, 7, 13, 64, 255, 1001}) {
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      std::vector<uint8_t> buf;
      {
        BitWriter w(&buf);
        w.Write(codes.data(), n, bits);
        EXPECT_EQ(w.bit_count(), static_cast<uint64_t>(n * bits));
      }
      ASSERT_EQ(buf.size(), PackedBytes(n, bits)) << bits << " " << n;
      std::vector<uint8_t> back(n, 0xee);
      UnpackCodes(buf.data(), buf.size(), 0, n, bits, back.data());
      EXPECT_EQ(back, codes) << "bits " << bits << " n " << n;
    }
  }
}

TEST(BitpackTest, LsbFirstLayout) {
  std::vector<uint8_t> buf;
  const uint8_t codes[] = {1, 2, 3, 0, 3};
  {
    BitWriter w(&buf);
    w.Write(codes, 5, 2);
  }
  // 01 | 10 | 11 | 00 -> 0b00111001, then 11 -> 0b00000011.
  ASSERT_EQ(buf.size(), 2u);
  EXPECT_EQ(buf[0], 0x39);
  EXPECT_EQ(buf[1], 0x03);
}

TEST(BitpackTest, MixedWidthsAndUnalignedOffsets) {
  std::mt19937 rng(2);
  struct Run {
    int bits;
    std::vector<uint8_t> codes;
    uint64_t offset;
  };
  std::vector<Run> runs;
  std::vector<uint8_t> buf;
  {
    BitWriter w(&buf);
    for (int i = 0; i < 200; ++i) {
      Run r;
      r.bits = 1 + rng() % 8;
      r.codes.resize(rng() % 40);
      for (auto& c : r.codes) c = static_cast<uint8_t>(rng() & ((1u << r.bits) - 1));
      r.offset = w.bit_count();
      w.Write(r.codes.data(), r.codes.size(), r.bits);
      runs.push_back(std::move(r));
    }
  }
  for (const Run& r : runs) {
    std::vector<uint8_t> back(r.codes.size());
    UnpackCodes(buf.data(), buf.size(), r.offset, back.size(), r.bits, back.data());
    EXPECT_EQ(back, r.codes);
  }
}

TEST(BitpackTest, UnpackStopsAtBufferEnd) {
  // 3 codes of 5 bits = 15 bits in exactly 2 bytes; reading must not touch byte 3.
  std::vector<uint8_t> buf;
  const uint8_t codes[] = {31, 0, 17};
  {
    BitWriter w(&buf);
    w.Write(codes, 3, 5);
  }
  ASSERT_EQ(buf.size(), 2u);
  std::vector<uint8_t> exact(buf);  // a heap block of exactly 2 bytes (ASan checks)
  uint8_t back[3];
  UnpackCodes(exact.data(), exact.size(), 0, 3, 5, back);
  EXPECT_EQ(back[0], 31);
  EXPECT_EQ(back[1], 0);
  EXPECT_EQ(back[2], 17);
}

TEST(BitpackTest, AppendBitsJoinsStreamsAsOneWriterWouldWrite) {
  // Three streams of 13 one-bit, 7 three-bit and 9 one-bit codes (odd bit counts, so
  // every join is unaligned), written in one go and joined from their own buffers.
  std::vector<uint8_t> codes(64);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>((i * 7 + 3) % 8);
  auto ones = [&](size_t at) {
    std::vector<uint8_t> c(codes.begin() + at, codes.begin() + at + 13);
    for (uint8_t& x : c) x &= 1;
    return c;
  };
  const std::vector<uint8_t> a = ones(0), b(codes.begin() + 20, codes.begin() + 27), c = ones(40);
  std::vector<uint8_t> whole;
  {
    BitWriter w(&whole);
    w.Write(a.data(), 13, 1);
    w.Write(b.data(), 7, 3);
    w.Write(c.data(), 9, 1);
  }
  std::vector<uint8_t> joined;
  {
    BitWriter w(&joined);
    for (const auto& [piece, n, bits] :
         {std::tuple(&a, 13, 1), std::tuple(&b, 7, 3), std::tuple(&c, 9, 1)}) {
      std::vector<uint8_t> own;
      BitWriter pw(&own);
      pw.Write(piece->data(), n, bits);
      const uint64_t nbits = pw.bit_count();
      pw.Flush();
      w.AppendBits(own.data(), nbits);
    }
    EXPECT_EQ(w.bit_count(), 13u + 21u + 9u);
  }
  EXPECT_EQ(joined, whole);
  EXPECT_EQ(joined.size(), 6u);  // 43 bits
}

}  // namespace
}  // namespace deltaserve::codec::internal

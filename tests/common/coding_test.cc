#include "common/coding.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace deltaserve::common {
namespace {

TEST(CodingTest, EncodeDecodeFixedIsLittleEndian) {
  uint8_t b[8];
  EncodeFixed(b, 0x0102030405060708ull, 8);
  EXPECT_EQ(b[0], 0x08);
  EXPECT_EQ(b[7], 0x01);
  EXPECT_EQ(DecodeFixed64(b), 0x0102030405060708ull);
  EXPECT_EQ(DecodeFixed32(b), 0x05060708u);
  EXPECT_EQ(DecodeFixed(b, 3), 0x060708u);
  EncodeFixed(b, 0xabcd, 2);
  EXPECT_EQ(b[0], 0xcd);
  EXPECT_EQ(b[1], 0xab);
}

TEST(CodingTest, WriterBytesAreTheSameForStringAndVector) {
  std::string s;
  std::vector<uint8_t> v;
  for (auto write : {0, 1}) {
    auto fill = [](auto& w) {
      w.U8(0x7f);
      w.U16(0x1234);
      w.U32(0xdeadbeef);
      w.U64(0x1122334455667788ull);
      w.I64(-2);
      w.Str("tensor");
      w.Bytes("xy", 2);
    };
    if (write == 0) {
      ByteWriter w(&s);
      fill(w);
    } else {
      ByteWriter w(&v);
      fill(w);
    }
  }
  ASSERT_EQ(s.size(), 1u + 2 + 4 + 8 + 8 + 4 + 6 + 2);
  EXPECT_EQ(std::string(v.begin(), v.end()), s);
  EXPECT_EQ(static_cast<uint8_t>(s[1]), 0x34);  // little-endian u16
  EXPECT_EQ(static_cast<uint8_t>(s[2]), 0x12);
}

TEST(CodingTest, ReaderReadsWhatWriterWrote) {
  std::string s;
  ByteWriter w(&s);
  w.U16(65535);
  w.U32(7);
  w.I64(-123456789012345);
  w.Str("name");
  ByteReader r(s);
  uint16_t a;
  uint32_t b;
  int64_t c;
  std::string d;
  ASSERT_TRUE(r.U16(&a) && r.U32(&b) && r.I64(&c) && r.Str(&d));
  EXPECT_EQ(a, 65535);
  EXPECT_EQ(b, 7u);
  EXPECT_EQ(c, -123456789012345);
  EXPECT_EQ(d, "name");
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(CodingTest, ReaderNeverReadsPastTheEndAndKeepsPosition) {
  std::string s;
  ByteWriter w(&s);
  w.U32(100);  // a string length that runs past the input
  w.Bytes("abc", 3);
  ByteReader r(s);
  std::string str;
  EXPECT_FALSE(r.Str(&str));
  EXPECT_EQ(r.position(), 0u);  // a failed Str leaves the reader where it was
  uint64_t u64;
  EXPECT_FALSE(r.U64(&u64));  // 7 bytes left
  uint32_t u32 = 0;
  EXPECT_TRUE(r.U32(&u32));
  EXPECT_EQ(u32, 100u);
  std::string_view rest;
  EXPECT_FALSE(r.Bytes(4, &rest));
  EXPECT_TRUE(r.Bytes(3, &rest));
  EXPECT_EQ(rest, "abc");
  uint8_t u8;
  EXPECT_FALSE(r.U8(&u8));
}

}  // namespace
}  // namespace deltaserve::common

#include "codec/internal/bitpack.h"

#include <cstring>

namespace deltaserve::codec::internal {

void BitWriter::Write(const uint8_t* codes, int64_t n, int bits) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    acc_ |= (codes[i] & mask) << acc_bits_;
    acc_bits_ += bits;
    if (acc_bits_ >= 32) {
      for (int k = 0; k < 4; ++k) out_->push_back(static_cast<uint8_t>(acc_ >> (8 * k)));
      acc_ >>= 32;
      acc_bits_ -= 32;
    }
  }
  bit_count_ += static_cast<uint64_t>(n) * bits;
}

void BitWriter::Flush() {
  while (acc_bits_ > 0) {
    out_->push_back(static_cast<uint8_t>(acc_));
    acc_ >>= 8;
    acc_bits_ = acc_bits_ > 8 ? acc_bits_ - 8 : 0;
  }
  acc_ = 0;
}

void UnpackCodes(const uint8_t* data, size_t size, uint64_t bit_offset, int64_t n, int bits,
                 uint8_t* codes) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  // Each 8-byte load yields at least 57 valid bits after the sub-byte shift.
  const int per_load = 56 / bits;
  int64_t i = 0;
  uint64_t pos = bit_offset;
  while (i + per_load <= n && (pos >> 3) + 8 <= size) {
    uint64_t word;
    std::memcpy(&word, data + (pos >> 3), 8);
    word >>= (pos & 7);
    for (int k = 0; k < per_load; ++k) {
      codes[i + k] = static_cast<uint8_t>(word & mask);
      word >>= bits;
    }
    i += per_load;
    pos += static_cast<uint64_t>(per_load) * bits;
  }
  for (; i < n; ++i, pos += bits) {  // tail: byte-wise, never past data + size
    const size_t byte = pos >> 3;
    uint32_t v = data[byte];
    if (byte + 1 < size) v |= static_cast<uint32_t>(data[byte + 1]) << 8;
    codes[i] = static_cast<uint8_t>((v >> (pos & 7)) & mask);
  }
}

}  // namespace deltaserve::codec::internal

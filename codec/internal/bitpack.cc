#include "codec/internal/bitpack.h"

#include <cstring>

namespace deltaserve::codec::internal {

void BitWriter::Put(uint64_t v, int width) {
  acc_ |= v << acc_bits_;
  acc_bits_ += width;
  if (acc_bits_ >= 32) {
    const uint8_t word[4] = {static_cast<uint8_t>(acc_), static_cast<uint8_t>(acc_ >> 8),
                             static_cast<uint8_t>(acc_ >> 16), static_cast<uint8_t>(acc_ >> 24)};
    out_->insert(out_->end(), word, word + 4);
    acc_ >>= 32;
    acc_bits_ -= 32;
  }
}

void BitWriter::Write(const uint8_t* codes, int64_t n, int bits) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  int64_t i = 0;
  if (bits == 1) {
    // Eight one-bit codes at once: bit 0 of byte k of x lands on bit 56 + k of the
    // product (the multiplier's terms 2^(56 - 7k) put no two bits on one position).
    for (; i + 8 <= n; i += 8) {
      uint64_t x;
      std::memcpy(&x, codes + i, 8);
      Put(((x & 0x0101010101010101ull) * 0x0102040810204080ull) >> 56, 8);
    }
  }
  for (; i < n; ++i) Put(codes[i] & mask, bits);
  bit_count_ += static_cast<uint64_t>(n) * bits;
}

void BitWriter::AppendBits(const uint8_t* data, uint64_t nbits) {
  const uint64_t whole = nbits / 8;
  for (uint64_t k = 0; k < whole; ++k) Put(data[k], 8);
  const int rest = static_cast<int>(nbits % 8);
  if (rest > 0) Put(data[whole] & ((1u << rest) - 1), rest);
  bit_count_ += nbits;
}

void BitWriter::Flush() {
  while (acc_bits_ > 0) {
    out_->push_back(static_cast<uint8_t>(acc_));
    acc_ >>= 8;
    acc_bits_ = acc_bits_ > 8 ? acc_bits_ - 8 : 0;
  }
  acc_ = 0;
}

namespace {

// Byte -> its 8 one-bit codes (LSB first) / its 4 two-bit codes, as bytes.
struct ExpandTables {
  uint64_t one[256];
  uint32_t two[256];
  ExpandTables() {
    for (int b = 0; b < 256; ++b) {
      uint64_t v = 0;
      for (int k = 0; k < 8; ++k) v |= static_cast<uint64_t>((b >> k) & 1) << (8 * k);
      one[b] = v;
      uint32_t w = 0;
      for (int k = 0; k < 4; ++k) w |= static_cast<uint32_t>((b >> (2 * k)) & 3) << (8 * k);
      two[b] = w;
    }
  }
};
const ExpandTables& Tables() {
  static const ExpandTables* t = new ExpandTables;
  return *t;
}

}  // namespace

void UnpackCodes(const uint8_t* data, size_t size, uint64_t bit_offset, int64_t n, int bits,
                 uint8_t* codes) {
  if (n <= 0) return;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  // Byte-aligned fast paths (the common case: p*p codes per patch, p even).
  if ((bit_offset & 7) == 0 && (bits == 1 || bits == 2 || bits == 8)) {
    const uint8_t* src = data + (bit_offset >> 3);
    const int64_t per_byte = 8 / bits;
    const int64_t whole = n / per_byte;
    const ExpandTables& t = Tables();
    if (bits == 8) {
      std::memcpy(codes, src, static_cast<size_t>(n));
      return;
    }
    if (bits == 1) {
      for (int64_t i = 0; i < whole; ++i) std::memcpy(codes + 8 * i, &t.one[src[i]], 8);
    } else {
      for (int64_t i = 0; i < whole; ++i) std::memcpy(codes + 4 * i, &t.two[src[i]], 4);
    }
    const int64_t done = whole * per_byte;
    if (done == n) return;
    codes += done;
    n -= done;
    bit_offset += static_cast<uint64_t>(done) * bits;
  }
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

// LSB-first bit packing of small unsigned codes (1..8 bits each).
//
// Code i of a stream starting at bit `bit_offset` occupies bits
// [bit_offset + i * bits, bit_offset + (i + 1) * bits) of the byte buffer, where bit k
// is bit (k % 8) of byte k / 8 (little-endian bit order, as in DEFLATE). Pure / owned
// state only; thread-compatible.
#ifndef DELTASERVE_CODEC_INTERNAL_BITPACK_H_
#define DELTASERVE_CODEC_INTERNAL_BITPACK_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace deltaserve::codec::internal {

// Appends codes to a growing byte vector.
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>* out) : out_(out) {}
  ~BitWriter() { Flush(); }
  // Appends the low `bits` bits of each code. REQUIRES: 1 <= bits <= 8 and every code
  // < 2^bits.
  void Write(const uint8_t* codes, int64_t n, int bits);
  // Appends the first `nbits` bits of `data` (bit k = bit k % 8 of byte k / 8), e.g. a
  // stream another BitWriter wrote. REQUIRES: data holds ceil(nbits / 8) bytes.
  void AppendBits(const uint8_t* data, uint64_t nbits);
  // Writes the partial last byte (zero-padded). Idempotent; called by the destructor.
  void Flush();
  // Bits written so far.
  uint64_t bit_count() const { return bit_count_; }

 private:
  // Appends the low `width` (<= 8) bits of v; whole 32-bit words leave as 4 bytes.
  void Put(uint64_t v, int width);

  std::vector<uint8_t>* out_;
  uint64_t acc_ = 0;
  int acc_bits_ = 0;
  uint64_t bit_count_ = 0;
};

// Number of bytes holding `n` codes of `bits` bits: ceil(n * bits / 8).
inline uint64_t PackedBytes(uint64_t n, int bits) { return (n * bits + 7) / 8; }

// Reads n codes of `bits` bits starting at bit `bit_offset` of data[0, size).
// REQUIRES (checked by the caller): 1 <= bits <= 8 and bit_offset + n * bits <= 8 * size.
// Never reads outside data[0, size).
void UnpackCodes(const uint8_t* data, size_t size, uint64_t bit_offset, int64_t n, int bits,
                 uint8_t* codes);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_BITPACK_H_

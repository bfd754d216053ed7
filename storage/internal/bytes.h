// Little-endian field writer/reader for the storage value formats (key_schema.h).
#ifndef DELTASERVE_STORAGE_INTERNAL_BYTES_H_
#define DELTASERVE_STORAGE_INTERNAL_BYTES_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace deltaserve::storage {

// Appends fixed-width little-endian integers and length-prefixed strings to `out`.
class ByteWriter {
 public:
  explicit ByteWriter(std::string* out) : out_(out) {}
  void Bytes(std::string_view b) { out_->append(b); }
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Fixed(v, 2); }
  void U32(uint32_t v) { Fixed(v, 4); }
  void U64(uint64_t v) { Fixed(v, 8); }
  void I64(int64_t v) { Fixed(static_cast<uint64_t>(v), 8); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Bytes(s);
  }

 private:
  void Fixed(uint64_t v, int width) {
    for (int i = 0; i < width; ++i) out_->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string* out_;
};

// Reads what ByteWriter wrote. Every getter returns false when the input has too few
// bytes left (the reader is then unusable); it never reads outside the input.
class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}
  size_t remaining() const { return in_.size() - pos_; }
  size_t position() const { return pos_; }
  bool Bytes(size_t n, std::string_view* out) {
    if (remaining() < n) return false;
    *out = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool U8(uint8_t* v) {
    uint64_t x;
    if (!Fixed(1, &x)) return false;
    *v = static_cast<uint8_t>(x);
    return true;
  }
  bool U16(uint16_t* v) {
    uint64_t x;
    if (!Fixed(2, &x)) return false;
    *v = static_cast<uint16_t>(x);
    return true;
  }
  bool U32(uint32_t* v) {
    uint64_t x;
    if (!Fixed(4, &x)) return false;
    *v = static_cast<uint32_t>(x);
    return true;
  }
  bool U64(uint64_t* v) { return Fixed(8, v); }
  bool I64(int64_t* v) {
    uint64_t x;
    if (!Fixed(8, &x)) return false;
    *v = static_cast<int64_t>(x);
    return true;
  }
  bool Str(std::string* s) {
    uint32_t n;
    std::string_view b;
    if (!U32(&n) || !Bytes(n, &b)) return false;
    s->assign(b);
    return true;
  }

 private:
  bool Fixed(int width, uint64_t* v) {
    if (remaining() < static_cast<size_t>(width)) return false;
    uint64_t x = 0;
    for (int i = 0; i < width; ++i) {
      x |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += width;
    *v = x;
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_BYTES_H_

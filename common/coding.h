// Little-endian fixed-width integers: the one encoder/decoder for every byte format of
// the project (codec/FORMAT.md containers and payloads, storage/key_schema.h values).
// Header-only, no state; every function and class here is thread-compatible.
#ifndef DELTASERVE_COMMON_CODING_H_
#define DELTASERVE_COMMON_CODING_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/types/span.h"

namespace deltaserve::common {

// The `width` (1..8) low bytes of `v`, least significant first, written to dst[0..width).
inline void EncodeFixed(uint8_t* dst, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) dst[i] = static_cast<uint8_t>(v >> (8 * i));
}

// The little-endian integer in src[0..width) (width 1..8).
inline uint64_t DecodeFixed(const uint8_t* src, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v |= uint64_t{src[i]} << (8 * i);
  return v;
}

inline uint32_t DecodeFixed32(const uint8_t* src) {
  return static_cast<uint32_t>(DecodeFixed(src, 4));
}
inline uint64_t DecodeFixed64(const uint8_t* src) { return DecodeFixed(src, 8); }

// Appends little-endian fields to `Out`: std::string or std::vector<uint8_t> (anything
// with push_back/insert of bytes). The writer does not own `out`.
template <typename Out>
class ByteWriter {
 public:
  explicit ByteWriter(Out* out) : out_(out) {}
  void Bytes(const void* p, size_t n) {
    const auto* b = static_cast<const typename Out::value_type*>(p);
    if constexpr (std::is_same_v<Out, std::string>) {
      // insert(end(), b, b + n) on a string draws GCC 12's false -Wrestrict (bug 105329)
      // where it inlines; append does the same.
      out_->append(b, n);
    } else {
      out_->insert(out_->end(), b, b + n);
    }
  }
  void Bytes(std::string_view b) { Bytes(b.data(), b.size()); }
  void U8(uint8_t v) { Fixed(v, 1); }
  void U16(uint16_t v) { Fixed(v, 2); }
  void U32(uint32_t v) { Fixed(v, 4); }
  void U64(uint64_t v) { Fixed(v, 8); }
  void I64(int64_t v) { Fixed(static_cast<uint64_t>(v), 8); }
  // A u32 length, then the bytes.
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Bytes(s);
  }

 private:
  void Fixed(uint64_t v, int width) {
    uint8_t b[8];
    EncodeFixed(b, v, width);
    Bytes(b, width);
  }
  Out* out_;
};

// Reads what ByteWriter wrote. Every getter returns false, and leaves the position as it
// was, when the input has too few bytes left; it never reads outside the input. The
// input must outlive the reader and every view it hands out.
class ByteReader {
 public:
  explicit ByteReader(absl::Span<const uint8_t> in) : in_(in) {}
  explicit ByteReader(std::string_view in)
      : in_(reinterpret_cast<const uint8_t*>(in.data()), in.size()) {}

  size_t remaining() const { return in_.size() - pos_; }
  size_t position() const { return pos_; }

  bool U8(uint8_t* v) { return Fixed(v, 1); }
  bool U16(uint16_t* v) { return Fixed(v, 2); }
  bool U32(uint32_t* v) { return Fixed(v, 4); }
  bool U64(uint64_t* v) { return Fixed(v, 8); }
  bool I64(int64_t* v) { return Fixed(v, 8); }
  bool Bytes(uint64_t n, absl::Span<const uint8_t>* out) {
    if (n > remaining()) return false;
    *out = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool Bytes(uint64_t n, std::string_view* out) {
    absl::Span<const uint8_t> b;
    if (!Bytes(n, &b)) return false;
    *out = std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
    return true;
  }
  // What ByteWriter::Str wrote.
  bool Str(std::string* s) {
    const size_t start = pos_;
    uint32_t n;
    std::string_view b;
    if (!U32(&n) || !Bytes(n, &b)) {
      pos_ = start;
      return false;
    }
    s->assign(b);
    return true;
  }

 private:
  template <typename T>
  bool Fixed(T* v, int width) {
    if (remaining() < static_cast<size_t>(width)) return false;
    *v = static_cast<T>(DecodeFixed(in_.data() + pos_, width));
    pos_ += width;
    return true;
  }
  absl::Span<const uint8_t> in_;
  size_t pos_ = 0;
};

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_CODING_H_

#include "codec/container_checks.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if none starts there.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;  // overlong
    if (c == 0xed) hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;  // overlong
    if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xbf) return 0;
  }
  return len;
}

uint64_t LoadLe(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string Utf8OrEscaped(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) {
      absl::StrAppendFormat(&out, "\\x%02x", static_cast<uint8_t>(s[i]));
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

absl::Status CheckUtf8(std::string_view s, std::string_view what) {
  if (IsValidUtf8(s)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(absl::string_view(what.data(), what.size()), " '",
                                                 Utf8OrEscaped(s), "' is not valid UTF-8"));
}

absl::Status CheckRecordStorable(std::string_view name, uint64_t record_bytes) {
  if (record_bytes <= kMaxStoredRecordBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "tensor '%s': its record of %d bytes (%.2f GiB) exceeds the %d-byte limit of one stored "
      "record (4 GiB - 1); store it in parts or leave it out",
      Utf8OrEscaped(name), record_bytes, static_cast<double>(record_bytes) / (1ull << 30),
      kMaxStoredRecordBytes));
}

absl::Status CheckContainerStorable(const ContainerReader& reader) {
  for (const auto& [key, value] : reader.header().metadata) {
    DS_RETURN_IF_ERROR(CheckUtf8(key, "container metadata key"));
    DS_RETURN_IF_ERROR(
        CheckUtf8(value, absl::StrCat("container metadata value of '", Utf8OrEscaped(key), "':")));
  }
  for (size_t i = 0; i < reader.num_records(); ++i) {
    // Framing was checked by Parse: magic, u64 length, u16 name length, name.
    absl::Span<const uint8_t> rec = reader.record_bytes(i);
    const size_t name_len = LoadLe(rec.data() + 12, 2);
    if (14 + name_len > rec.size()) continue;  // record(i) reports it
    const std::string_view name(reinterpret_cast<const char*>(rec.data()) + 14, name_len);
    DS_RETURN_IF_ERROR(CheckUtf8(name, absl::StrCat("record ", i, ": tensor name")));
    DS_RETURN_IF_ERROR(CheckRecordStorable(name, rec.size()));
  }
  return absl::OkStatus();
}

absl::Status ContainerUploadScanner::Feed(absl::Span<const uint8_t> prefix) {
  // Header: magic (8), version (4), header_length (4); records: magic (4), length (8),
  // name length (2), name (FORMAT.md).
  constexpr size_t kRecordPrefix = 14;
  if (stopped_) return absl::OkStatus();
  if (next_ == 0) {
    if (prefix.size() < 16) return absl::OkStatus();
    next_ = LoadLe(prefix.data() + 12, 4);
    if (next_ == 0) stopped_ = true;
  }
  while (!stopped_ && prefix.size() >= next_ + kRecordPrefix) {
    const uint8_t* rec = prefix.data() + next_;
    if (std::memcmp(rec, "DRec", 4) != 0) {
      stopped_ = true;  // the trailer, or not a record: Parse reports what is wrong
      break;
    }
    const uint64_t len = LoadLe(rec + 4, 8);
    if (len > kMaxStoredRecordBytes) {
      const size_t name_len = LoadLe(rec + 12, 2);
      if (prefix.size() < next_ + kRecordPrefix + name_len) return absl::OkStatus();
      return CheckRecordStorable(
          std::string_view(reinterpret_cast<const char*>(rec) + kRecordPrefix, name_len), len);
    }
    if (len < kRecordPrefix) {
      stopped_ = true;  // a lying length: Parse reports it
      break;
    }
    spans_.emplace_back(next_, len);
    next_ += len;
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::codec

#include "codec/container_checks.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

uint64_t LoadLe(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace

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
  if (!error_.ok()) return error_;
  if (stopped_) return absl::OkStatus();
  if (next_ == 0) {
    size_t header_size = 0;
    absl::StatusOr<std::optional<ContainerHeader>> header =
        ParseContainerHeaderPrefix(prefix, &header_size);
    if (!header.ok()) return error_ = header.status();
    if (!header->has_value()) return absl::OkStatus();
    header_ = std::move(**header);
    next_ = header_size;
  }
  while (!stopped_ && prefix.size() >= next_ + kRecordPrefix) {
    const uint8_t* rec = prefix.data() + next_;
    if (std::memcmp(rec, "DRec", 4) != 0) {
      stopped_ = true;
      if (std::memcmp(rec, "DEnd", 4) == 0) break;  // the trailer: Parse checks it
      return error_ = absl::DataLossError(absl::StrCat(
                 "record ", spans_.size(), " at offset ", next_, ": truncated or bad magic"));
    }
    const uint64_t len = LoadLe(rec + 4, 8);
    if (len > kMaxStoredRecordBytes) {
      const size_t name_len = LoadLe(rec + 12, 2);
      if (prefix.size() < next_ + kRecordPrefix + name_len) return absl::OkStatus();
      return error_ = CheckRecordStorable(
                 std::string_view(reinterpret_cast<const char*>(rec) + kRecordPrefix, name_len),
                 len);
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

// What a container must meet to be stored and served, beyond being well-formed
// (codec/container.h): text that reaches protobuf `string` fields is valid UTF-8, and
// each record fits one storage value. Checked where containers are made (CompressModel,
// ContainerWriter) and where they enter the server (PutDelta). All functions are pure
// and thread-safe.
#ifndef DELTASERVE_CODEC_CONTAINER_CHECKS_H_
#define DELTASERVE_CODEC_CONTAINER_CHECKS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "codec/container.h"
#include "common/utf8.h"

namespace deltaserve::codec {

// Largest record storage keeps (one RocksDB value; its lengths are 32-bit): 4 GiB - 1.
inline constexpr uint64_t kMaxStoredRecordBytes = (uint64_t{1} << 32) - 1;

// UTF-8 validity and escaping, shared with messages outside the codec (common/utf8.h).
using common::IsValidUtf8;
using common::Utf8OrEscaped;

// InvalidArgument "<what> '<escaped>' is not valid UTF-8" unless IsValidUtf8(s).
absl::Status CheckUtf8(std::string_view s, std::string_view what);

// InvalidArgument naming the tensor and the size in bytes and GiB if a record of
// `record_bytes` exceeds kMaxStoredRecordBytes.
absl::Status CheckRecordStorable(std::string_view name, uint64_t record_bytes);

// Every metadata key and value and every record name of `reader` valid UTF-8, every
// record at most kMaxStoredRecordBytes. InvalidArgument naming the key or tensor.
// Reads only record framing (no checksum is verified here).
absl::Status CheckContainerStorable(const ContainerReader& reader);

// Checks a container while its bytes arrive (an upload), so that bytes that cannot make a
// container are refused before the rest is sent (new-user trial: 1 GiB of random bytes
// were all buffered, 1.1 GB of server memory, before "bad magic" came back). Feed()
// takes the whole prefix received so far (each call a longer prefix of the same bytes):
// the header as ParseContainerHeaderPrefix checks it (the magic from the first bytes,
// then the whole header), then the record framing as far as it reaches:
// InvalidArgument (CheckRecordStorable's) for a record above the limit, DataLoss for a
// record that is neither a record nor the trailer ("record N at offset X: bad magic").
// Framing it cannot judge without the whole container (a length running past the end)
// is left to ContainerReader::Parse (Feed stops walking and returns OK). Once an error
// is returned, every later Feed returns it too. Not thread-safe.
//
// It also tells where the records it walked lie (record_spans), so that a receiver can
// handle each record as soon as it is complete (PutDelta stages them for storage); a
// span is what ContainerReader::record_bytes will hold if the container parses.
class ContainerUploadScanner {
 public:
  absl::Status Feed(absl::Span<const uint8_t> prefix);

  // Offset and length of each record walked so far, in order (a record may not have
  // arrived whole yet: compare offset + length with the prefix size).
  const std::vector<std::pair<uint64_t, uint64_t>>& record_spans() const { return spans_; }

  // The container header once it has arrived whole and parsed; nullopt before.
  const std::optional<ContainerHeader>& header() const { return header_; }

 private:
  uint64_t next_ = 0;  // offset of the next record; 0 until the header length is known
  bool stopped_ = false;
  absl::Status error_;
  std::optional<ContainerHeader> header_;
  std::vector<std::pair<uint64_t, uint64_t>> spans_;
};

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_CONTAINER_CHECKS_H_

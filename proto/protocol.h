// Facts of the deltaserve.v1 protocol that both ends must agree on, in one place: chunk
// sizes, the largest message, and dtype conversions between the wire and codec::DType.
// Server and client both use these; nothing else in the tree restates them.
// Thread-safe (no state).
#ifndef DELTASERVE_PROTO_PROTOCOL_H_
#define DELTASERVE_PROTO_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "codec/tensor.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "google/protobuf/message.h"

namespace deltaserve::proto {

// Data bytes per streamed message (StreamWeights and StreamDelta chunks, PutDelta
// chunks): the allowed range and the default of both ends.
// The maximum is 4 MiB less 1 KiB kept for the message's own framing (oneof tag,
// lengths, offset, totals: under 64 bytes), so that every message fits a default gRPC
// client's 4 MiB receive limit (4 MiB of data made 4,194,314-byte messages).
inline constexpr uint32_t kMinChunkBytes = 4u << 10;                    // 4 KiB
inline constexpr uint32_t kMaxChunkBytes = (4u << 20) - (1u << 10);     // 4 MiB - 1 KiB
inline constexpr uint32_t kDefaultChunkBytes = 1u << 20;                // 1 MiB

// The largest message either end sends or accepts, bytes: a kMaxChunkBytes chunk plus
// its framing with room to spare. Server and client set gRPC's send and receive limits
// to this.
inline constexpr int kMaxMessageBytes = 16 << 20;

// Request metadata a client adds to every call about one task: "<tenant>/<task>" (the
// tenant as the client names it, "" for its default). Only routing reads it (a load
// balancer hashing on it: deploy/haproxy/haproxy.cfg); the server goes by the request.
inline constexpr char kTaskRouteHeader[] = "x-deltaserve-task";

// OK if kMinChunkBytes <= `bytes` <= kMaxChunkBytes, else InvalidArgument naming `what`
// (the option or flag) and the range.
absl::Status ValidateChunkBytes(uint32_t bytes, absl::string_view what);

// The chunk size a stream uses: `requested` (0: `server_default`) clamped into
// [kMinChunkBytes, kMaxChunkBytes].
uint32_t EffectiveChunkBytes(uint32_t requested, uint32_t server_default);

// codec::DType -> wire.
v1::DType ToProtoDType(codec::DType dtype);

// Wire -> codec::DType for a field that must name a dtype (TensorHeader.dtype,
// TensorSummary.dtype): DTYPE_UNSPECIFIED and unknown numbers are InvalidArgument.
absl::StatusOr<codec::DType> FromProtoDType(v1::DType dtype);

// Wire -> requested output dtype (StreamWeightsRequest.out_dtype, PinTaskRequest
// .out_dtype): DTYPE_UNSPECIFIED is nullopt, "keep each tensor's recorded dtype";
// unknown numbers and dtypes other than F32, F16 and BF16 are InvalidArgument.
absl::StatusOr<std::optional<codec::DType>> FromProtoOutDType(v1::DType dtype);

// Text on the wire. Request fields that carry names or patterns (tenant, task, include,
// include_regex, resume_from_name, dir, side file names) are `bytes`, wire-compatible
// with `string`, so that protobuf's parser accepts any bytes and the server itself
// refuses invalid UTF-8 with a message naming the field (a `string` field made the server answer
// UNIMPLEMENTED with no message). kBinaryFields lists the `bytes` fields that are data;
// every other `bytes` and `string` field of the protocol holds UTF-8 text.
inline constexpr const char* kBinaryFields[] = {
    "deltaserve.v1.PutDeltaRequest.chunk",      "deltaserve.v1.PutDeltaRequest.side_file_chunk",
    "deltaserve.v1.TensorChunk.data",           "deltaserve.v1.StreamDeltaResponse.data",
    "deltaserve.v1.GetSideFileResponse.data",   "deltaserve.v1.PutDeltaMetadata.base_hash",
};

// OK if every set text field of `message` (string fields, and bytes fields not in
// kBinaryFields), in nested messages, repeated fields and maps too, is valid UTF-8
// (codec::IsValidUtf8). Otherwise InvalidArgument "<label>: <field name>[<index>]
// '<text, bad bytes as \xNN>' is not valid UTF-8" for the first. The client checks each
// request before sending it; the server checks each request it receives.
absl::Status CheckTextFieldsUtf8(const google::protobuf::Message& message, std::string_view label);

// OK if `regex` compiles as the server compiles StreamWeightsRequest.include_regex (RE2,
// RE2::Quiet options: RE2 syntax, UTF-8, default memory budget); else InvalidArgument
// with RE2's reason, e.g. "missing ): (". The one rule for the server (each request),
// the client library (before any call) and deltactl --include-regex (a usage error).
absl::Status CheckIncludeRegex(std::string_view regex);

}  // namespace deltaserve::proto

#endif  // DELTASERVE_PROTO_PROTOCOL_H_

// StreamWeightsResponse messages as the bytes gRPC sends, without copying tensor data.
//
// StreamWeights is served through the raw (grpc::ByteBuffer) callback API so that a
// TensorChunk's data goes onto the wire from the merged tensor itself: the buffer holds
// a slice over the tensor's bytes that keeps the tensor alive until gRPC has sent it.
// With the generated (proto-typed) API every chunk byte was copied twice on the server
// (TensorChunk::set_data, then serialization into gRPC's slices): perf of a cold
// stream_bench stream put 40% of the gRPC threads' samples in memmove. The bytes are
// exactly protobuf's serialization of the same message (weights_wire_test checks it),
// so clients see no difference.
#ifndef DELTASERVE_SERVER_INTERNAL_WEIGHTS_WIRE_H_
#define DELTASERVE_SERVER_INTERNAL_WEIGHTS_WIRE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "grpcpp/support/byte_buffer.h"

namespace deltaserve::server::internal {

// The serialized `msg` in one buffer (copied: headers, begin and end are small).
grpc::ByteBuffer EncodeWeightsMessage(const v1::StreamWeightsResponse& msg);

// The serialization of a StreamWeightsResponse whose chunk is `chunk` with its data
// field set to `data`, in three slices: the framing, `data` itself (not copied) and the
// rest of the chunk. `owner` is held until gRPC releases the data slice; it must keep
// `data` alive and unchanged until then. REQUIRES: chunk.data() is empty.
grpc::ByteBuffer EncodeWeightsChunk(const v1::TensorChunk& chunk, absl::Span<const uint8_t> data,
                                    std::shared_ptr<const void> owner);

// Parses a StreamWeightsRequest from the raw request bytes. InvalidArgument if they
// are not a valid serialization.
absl::Status DecodeWeightsRequest(const grpc::ByteBuffer& raw, v1::StreamWeightsRequest* request);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_WEIGHTS_WIRE_H_

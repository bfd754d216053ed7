// WeightsSink: where DeltaClient::PullWeightsToSink (client/client.h) delivers a
// verified weight stream; implemented by in-tree consumers that place tensors in memory
// of their own (the Python binding, python/codec/pull_module.cc) and by the client's own
// sinks (client/internal/weights_stream.h).
#ifndef DELTASERVE_CLIENT_WEIGHTS_SINK_H_
#define DELTASERVE_CLIENT_WEIGHTS_SINK_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "codec/tensor.h"
#include "deltaserve/v1/delta_service.pb.h"

namespace deltaserve::client {

// Receives a verified weight stream. Data() calls of one tensor come between its
// TensorBegin() and TensorEnd(); TensorEnd() comes after the tensor's checksum matched.
// DropUnfinished() forgets a tensor begun but not ended (its stream failed; a resumed
// stream sends it again from its first byte). Continue(offset) instead says that the
// stream of a tensor begun but not ended failed after `offset` bytes and a resumed
// stream goes on from there (StreamWeightsRequest.resume_from_offset): the sink keeps
// those bytes, and the next Data() calls (no new TensorBegin) bring the rest; the
// tensor is dropped later (DropUnfinished) if the resumed stream fails for good.
class WeightsSink {
 public:
  virtual ~WeightsSink() = default;
  virtual absl::Status Begin(const v1::StreamBegin& begin) = 0;
  virtual absl::Status TensorBegin(const codec::TensorInfo& info) = 0;
  virtual absl::Status Data(absl::Span<const uint8_t> data) = 0;
  virtual absl::Status TensorEnd() { return absl::OkStatus(); }
  virtual void DropUnfinished() {}
  virtual void Continue(uint64_t /*offset*/) {}
};

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_WEIGHTS_SINK_H_

// The plan of one StreamWeights call and the message sequence that carries it.
//
// PlanStream decides which tensors a request sends (filter, resume) and how many data
// bytes that is; StreamCursor then yields the messages after `begin`: for each planned
// tensor one TensorHeader followed by its bytes in TensorChunks of at most chunk_bytes
// (none for a zero-byte tensor), then one StreamEnd. The protocol is documented in
// proto/deltaserve/v1/delta_service.proto (StreamWeightsResponse).
//
// Pure: no I/O, no locks, no gRPC calls. The reactor (stream_weights.cc) owns one plan
// and one cursor per call and drives them under its own lock; not thread-safe.
#ifndef DELTASERVE_SERVER_INTERNAL_STREAM_PLAN_H_
#define DELTASERVE_SERVER_INTERNAL_STREAM_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/tensor.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "server/internal/tensor_cache.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

struct StreamPlan {
  std::vector<uint32_t> tensors;  // container indices of the tensors to send, in send order
  std::vector<uint64_t> bytes;    // data bytes of each of them in the output dtype
  uint64_t total_bytes = 0;       // their sum, less first_offset
  // Bytes of tensors[0] not sent (StreamWeightsRequest.resume_from_offset).
  uint64_t first_offset = 0;
};

// The tensors `req` asks for out of `info`, in container order, with their bytes in
// `out_dtype` (nullopt: each tensor's recorded dtype). `include` globs (fnmatch, any
// one matches) and `include_regex` (RE2, whole name) both apply; resume skips every
// tensor before the named/indexed one, end_index (if not 0) every tensor from that
// index on; resume_from_offset skips the first bytes of the resume tensor. Errors:
// InvalidArgument (bad regex; an offset without a resume tensor, or whose tensor the
// filter drops), NotFound (resume name), OutOfRange (resume index >= number of tensors;
// end_index > number of tensors or <= the first; offset > the tensor's bytes).
absl::StatusOr<StreamPlan> PlanStream(const v1::StreamWeightsRequest& req,
                                      const storage::TaskInfo& info,
                                      std::optional<codec::DType> out_dtype);

// Fills the StreamBegin message of `plan`: task info (without per-tensor details),
// counts, and the safetensors metadata offline `decompress` writes for this task.
void FillStreamBegin(const StreamPlan& plan, const storage::TaskInfo& info, bool pinned,
                     v1::StreamBegin* begin);

// Walks the messages that follow `begin`. Usage: while (!done()), if needs_tensor()
// get the merged tensor of plan position position(), wait until its fill (if any) has
// what NextNeeds says, then Next(...). position() advances once the last message of
// that tensor has been produced.
//
// With `checksum_after_data` (the request's opt-in), a tensor that is not complete when
// its header is produced gets checksum_follows: its chunks go out as their bytes
// become final and the last one carries tensor_xxh3_64. Otherwise (and for a complete
// or empty tensor) the header carries xxh3_64, so it waits for the whole tensor.
class StreamCursor {
 public:
  // `first_offset`: bytes of the first tensor not sent (StreamPlan::first_offset); that
  // tensor's header always carries its checksum. REQUIRES: chunk_bytes >= 1.
  StreamCursor(size_t num_tensors, uint32_t chunk_bytes, bool checksum_after_data = false,
               uint64_t first_offset = 0)
      : num_tensors_(num_tensors),
        chunk_bytes_(chunk_bytes),
        checksum_after_data_(checksum_after_data),
        first_offset_(first_offset) {}

  // What the next message of `tensor` waits for: its first `bytes` bytes final and,
  // when `done`, the whole tensor with its checksum. REQUIRES: needs_tensor().
  struct Need {
    uint64_t bytes = 0;
    bool done = false;
  };
  Need NextNeeds(const MergedTensor& tensor) const;

  // Plan position of the tensor whose messages come next (num_tensors once all are out).
  size_t position() const { return pos_; }
  // The next message belongs to tensor position(): Next needs that tensor.
  bool needs_tensor() const { return pos_ < num_tensors_; }
  // Every message, StreamEnd included, has been produced.
  bool done() const { return end_sent_; }
  // Data bytes produced so far (the sum of chunk payloads).
  uint64_t sent_bytes() const { return sent_bytes_; }

  // Fills `msg` with the next message and returns its data bytes (0 for a header or the
  // end). `tensor` is the merged tensor at position() when needs_tensor() (ignored
  // otherwise), with what NextNeeds asks for final; bytes sent never change. With
  // `data` set, a chunk's bytes are not copied into msg: *data points at them in
  // `tensor` and msg's chunk has empty data (the reactor sends them from the tensor,
  // weights_wire.h); *data is empty for other messages.
  // REQUIRES: !done().
  size_t Next(const MergedTensor* tensor, v1::StreamWeightsResponse* msg,
              absl::Span<const uint8_t>* data = nullptr);

 private:
  // The next message belongs to the first tensor, resumed at first_offset_.
  bool resuming() const { return pos_ == 0 && first_offset_ > 0; }
  const size_t num_tensors_;
  const uint32_t chunk_bytes_;
  const bool checksum_after_data_;
  const uint64_t first_offset_;
  size_t pos_ = 0;
  bool header_sent_ = false;       // for tensor pos_
  bool checksum_follows_ = false;  // tensor pos_'s header had checksum_follows
  uint64_t offset_ = 0;       // bytes of tensor pos_ already produced
  uint64_t sent_bytes_ = 0;
  bool end_sent_ = false;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_STREAM_PLAN_H_

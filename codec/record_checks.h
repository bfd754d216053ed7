// Whether a delta's records fit the base they merge into (codec/FORMAT.md, "Record" and
// "Decoding"). ParseRecord checks a record on its own (its payload against its own shape
// and dtype); these check it against the base tensor it names, so that a merge writes
// every byte of its output or fails before writing any: a record that claims
// `unchanged` in another dtype than its base tensor's, a shape the base tensor lacks, or
// a lossy code over a base tensor no float could be read from would otherwise leave its
// output buffer unwritten (a reused buffer: someone else's merged bytes, sent as if
// merged). All functions are pure and thread-safe.
#ifndef DELTASERVE_CODEC_RECORD_CHECKS_H_
#define DELTASERVE_CODEC_RECORD_CHECKS_H_

#include "absl/status/status.h"
#include "codec/container.h"
#include "codec/safetensors.h"
#include "codec/tensor.h"

namespace deltaserve::codec {

// OK if `record` merges into `base_tensor`, the base's tensor named record.base_tensor()
// (null: the base has none of that name). Every message names the tensor.
//   kRaw: reads nothing of the base; always OK (ParseRecord sized its payload).
//   Other encodings:
//     NotFound "tensor 'x': not in the base model" (or "its tied base tensor 'y' is not
//       in the base model") when `base_tensor` is null;
//     InvalidArgument when the base tensor's shape differs from record.base_shape
//       ("transposed?" for a reversed rank-2 shape);
//     kUnchanged: InvalidArgument unless record.info.dtype is the base tensor's dtype (an
//       unchanged tensor is the base tensor bit for bit: CompressModel writes it only
//       for identical dtype, shape and bytes);
//     kDct/kEcq: InvalidArgument unless the base dtype is F32, F16 or BF16 (the decoder
//       adds a float delta to it).
absl::Status CheckRecordFitsBase(const TensorRecord& record, const TensorInfo* base_tensor);

// The same, looking record.base_tensor() up in `base`; `base` may be null only for
// kRaw records (InvalidArgument "... record needs the base model" otherwise).
absl::Status CheckRecordFitsBase(const TensorRecord& record, const ModelReader* base);

// Every record of `container` (verified: ContainerReader::record) fits `base`
// (CheckRecordFitsBase), and each lossy record's payload header parses for its 2-D view
// (DescribePayload: no decoding). The first error, prefixed "record I: ", with the
// message naming the tensor: InvalidArgument for every record that does not fit (also
// one absent from the base, and a payload header that does not parse: the container
// claims a base it does not fit), DataLoss for a record whose checksum fails, the
// base's own errors. Reads every record once (checksums).
absl::Status CheckContainerFitsBase(const ContainerReader& container, const ModelReader& base);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_RECORD_CHECKS_H_

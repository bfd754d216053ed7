// What a lossy record's payload is made of, for reports (`deltactl inspect` / `eval`):
// the transform its coefficients are coded in, the DCT patch size and the rank of
// low-rank factors (codec/FORMAT.md, "Payload (encoding 2)" and "Entropy-coded payload
// (encoding 3)"). Reads the payload header only (no decoding). Thread-safe.
#ifndef DELTASERVE_CODEC_PAYLOAD_INFO_H_
#define DELTASERVE_CODEC_PAYLOAD_INFO_H_

#include <string>

#include "absl/status/statusor.h"
#include "codec/container.h"

namespace deltaserve::codec {

struct PayloadInfo {
  std::string transform;  // "dct" or "identity"
  int patch_size = 0;     // DCT patch edge; 0 for the identity
  int rank = 0;           // of the low-rank factors (encoding 3); 0: none

  // "dct p32", "identity", "identity + rank 12": the report's short form.
  std::string ToString() const;
};

// The payload of a kDct or kEcq record. InvalidArgument for another encoding; DataLoss
// (or InvalidArgument for a shape mismatch) for a payload whose header does not parse,
// as decoding would report.
absl::StatusOr<PayloadInfo> DescribePayload(const TensorRecord& record);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_PAYLOAD_INFO_H_

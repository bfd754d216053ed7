#include "codec/payload_info.h"

#include "absl/strings/str_cat.h"
#include "codec/internal/dct_payload.h"
#include "codec/internal/ecq_payload.h"
#include "common/status_macros.h"

namespace deltaserve::codec {

std::string PayloadInfo::ToString() const {
  std::string s = patch_size > 0 ? absl::StrCat(transform, " p", patch_size) : transform;
  if (rank > 0) absl::StrAppend(&s, " + rank ", rank);
  return s;
}

absl::StatusOr<PayloadInfo> DescribePayload(const TensorRecord& record) {
  PayloadInfo info;
  if (record.encoding == Encoding::kDct) {
    DS_ASSIGN_OR_RETURN(internal::ParsedPayload pp,
                        internal::ParsePayload(record.payload, record.rows, record.cols));
    info.transform = "dct";
    info.patch_size = pp.header.patch_size;
    return info;
  }
  if (record.encoding == Encoding::kEcq) {
    DS_ASSIGN_OR_RETURN(internal::ParsedEcq pe,
                        internal::ParseEcqPayload(record.payload, record.rows, record.cols));
    const bool dct = pe.header.transform == EcqTransform::kDct;
    info.transform = dct ? "dct" : "identity";
    info.patch_size = dct ? pe.header.patch_size : 0;
    info.rank = pe.header.rank;
    return info;
  }
  return absl::InvalidArgumentError(absl::StrCat("tensor '", record.info.name, "' is stored ",
                                                 std::string(EncodingName(record.encoding)),
                                                 ", not lossy: no transform"));
}

}  // namespace deltaserve::codec

#include "proto/protocol.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace deltaserve::proto {

absl::Status ValidateChunkBytes(uint32_t bytes, absl::string_view what) {
  if (bytes < kMinChunkBytes || bytes > kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must be in [", kMinChunkBytes, ", ", kMaxChunkBytes,
        "] bytes (4 MiB less 1 KiB for framing, so that messages fit a default gRPC "
        "client's 4 MiB receive limit), got ", bytes));
  }
  return absl::OkStatus();
}

uint32_t EffectiveChunkBytes(uint32_t requested, uint32_t server_default) {
  return std::clamp<uint32_t>(requested ? requested : server_default, kMinChunkBytes,
                              kMaxChunkBytes);
}

v1::DType ToProtoDType(codec::DType dtype) {
  switch (dtype) {
    case codec::DType::kF32:
      return v1::DTYPE_F32;
    case codec::DType::kF16:
      return v1::DTYPE_F16;
    case codec::DType::kBF16:
      return v1::DTYPE_BF16;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<codec::DType> FromProtoDType(v1::DType dtype) {
  absl::StatusOr<std::optional<codec::DType>> d = FromProtoOutDType(dtype);
  if (!d.ok()) return d.status();
  if (!d->has_value()) return absl::InvalidArgumentError("dtype is DTYPE_UNSPECIFIED");
  return **d;
}

absl::StatusOr<std::optional<codec::DType>> FromProtoOutDType(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_UNSPECIFIED:
      return std::optional<codec::DType>();
    case v1::DTYPE_F32:
      return codec::DType::kF32;
    case v1::DTYPE_F16:
      return codec::DType::kF16;
    case v1::DTYPE_BF16:
      return codec::DType::kBF16;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", static_cast<int>(dtype)));
}

}  // namespace deltaserve::proto

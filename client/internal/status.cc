#include "client/internal/status.h"

#include <string>

namespace deltaserve::client {

absl::Status FromGrpcStatus(const grpc::Status& s, std::string_view context) {
  if (s.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share their numbers (0..16).
  const int code = static_cast<int>(s.error_code());
  const auto absl_code = code >= 0 && code <= 16 ? static_cast<absl::StatusCode>(code)
                                                 : absl::StatusCode::kUnknown;
  std::string msg(context);
  msg += ": ";
  msg += s.error_message();
  return absl::Status(absl_code, msg);
}

}  // namespace deltaserve::client

#include "client/internal/status.h"

#include <string>

#include "absl/strings/match.h"

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
  // gRPC closes a connection whose keepalive ping went unanswered with UNAVAILABLE
  // "keepalive watchdog timeout" (ClientOptions::keepalive_time).
  if (absl_code == absl::StatusCode::kUnavailable &&
      absl::StrContains(s.error_message(), "keepalive")) {
    msg += " (the server stopped answering: no reply to a keepalive ping; it is frozen, "
           "overloaded, or cut off by the network)";
  }
  return absl::Status(absl_code, msg);
}

}  // namespace deltaserve::client

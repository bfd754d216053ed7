#include "server/internal/call.h"

#include <grpc/grpc.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/internal/log.h"
#include "server/internal/metrics.h"

namespace deltaserve::server::internal {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status ClientEndedStatus(const grpc::ServerContextBase& call, std::string_view what) {
  // The client's deadline timer fires a little before the server's copy of the deadline
  // (computed from grpc-timeout when the request arrived), and its RST_STREAM looks like
  // any cancellation: a cancellation this close to the deadline is the deadline.
  constexpr auto kDeadlineSkew = std::chrono::milliseconds(250);
  if (call.deadline() <= std::chrono::system_clock::now() + kDeadlineSkew) {
    return absl::DeadlineExceededError(absl::StrCat(std::string(what), ": the client's deadline passed"));
  }
  return absl::CancelledError(absl::StrCat(std::string(what), ": cancelled by the client"));
}

void CancelCallWithStatus(grpc::ServerContextBase& call, const absl::Status& status) {
  const std::string message(status.message());
  grpc_call_cancel_with_status(call.c_call(), static_cast<grpc_status_code>(status.code()),
                               message.c_str(), nullptr);
}

std::optional<std::string> AuthorizationHeader(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

void CallLog::Finish(const absl::Status& status) {
  double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  std::string code = absl::StatusCodeToString(status.code());
  if (metrics_) metrics_->RecordRequest(method_, code, seconds);
  std::string ms = absl::StrFormat("%.3f", seconds * 1e3);
  if (status.ok()) {
    LogInfo("request", {{"method", method_}, {"tenant", tenant_}, {"task", task_},
                        {"code", code}, {"bytes", std::to_string(bytes_)}, {"ms", ms}});
  } else {
    LogWarn("request", {{"method", method_}, {"tenant", tenant_}, {"task", task_},
                        {"code", code}, {"bytes", std::to_string(bytes_)}, {"ms", ms},
                        {"error", std::string(status.message())}});
  }
}

}  // namespace deltaserve::server::internal

// Per-call plumbing shared by every handler: the one absl::Status -> grpc::Status
// conversion (STYLE.md), the authorization header, and the per-request log line and
// metrics.
#ifndef DELTASERVE_SERVER_INTERNAL_CALL_H_
#define DELTASERVE_SERVER_INTERNAL_CALL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace deltaserve::server::internal {

class Metrics;

// The only place a grpc::Status is built. absl and gRPC share code numbers.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The status of a call that the client ended (cancel, disconnect, or its deadline):
// DeadlineExceeded "<what>: the client's deadline passed" when the call's deadline is
// past or less than 250 ms away (clock skew between the client's timer and the
// server's copy of the deadline), else Cancelled "<what>: cancelled by the client". Lets metrics and logs
// tell the two apart (gRPC reports both to the server as a cancellation).
absl::Status ClientEndedStatus(const grpc::ServerContextBase& call, std::string_view what);

// Ends the call at once with `status` (REQUIRES: not OK) and tells the client so: gRPC
// writes the status as trailers that bypass HTTP/2 flow control (chttp2's
// close_from_api) and resets the stream, so a client that reads nothing still gets
// this code and message (with TryCancel it would see CANCELLED). Writes in flight
// complete with ok = false and the reactor's OnCancel runs, as after TryCancel.
void CancelCallWithStatus(grpc::ServerContextBase& call, const absl::Status& status);

// Value of the "authorization" metadata entry, if any.
std::optional<std::string> AuthorizationHeader(const grpc::ServerContextBase& ctx);

// One request's log line and metrics. Not thread-safe: owned by one call, whose steps
// are serialized.
class CallLog {
 public:
  CallLog(Metrics* metrics, std::string_view method)
      : metrics_(metrics), method_(method), start_(absl::Now()) {}

  void set_tenant(const std::string& tenant) { tenant_ = std::string(tenant); }
  void set_task(const std::string& task) { task_ = std::string(task); }
  void add_bytes(uint64_t n) { bytes_ += n; }
  uint64_t bytes() const { return bytes_; }

  // Records deltaserve_requests_total / _request_duration_seconds and logs one line
  // "request method=.. tenant=.. task=.. code=.. bytes=.. ms=.." (plus the error
  // message when not OK). Call exactly once.
  void Finish(const absl::Status& status);

 private:
  Metrics* metrics_;
  std::string method_, tenant_, task_;
  uint64_t bytes_ = 0;
  absl::Time start_;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_CALL_H_

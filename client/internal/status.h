// The one conversion of grpc::Status to absl::Status in the client.
#ifndef DELTASERVE_CLIENT_INTERNAL_STATUS_H_
#define DELTASERVE_CLIENT_INTERNAL_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace deltaserve::client {

// OK stays OK; otherwise the same code (gRPC and absl numbers agree) with `context`
// (e.g. "GetTask 'chat'") prefixed to the server's message.
absl::Status FromGrpcStatus(const grpc::Status& s, std::string_view context);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_STATUS_H_

// DeltaClient's shared state and call set-up, used by client.cc and client_pull.cc.
#ifndef DELTASERVE_CLIENT_INTERNAL_IMPL_H_
#define DELTASERVE_CLIENT_INTERNAL_IMPL_H_

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/internal/status.h"
#include "deltaserve/v1/delta_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "proto/protocol.h"

namespace deltaserve::client {

struct DeltaClient::Impl {
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::DeltaService::Stub> stub;
  // What `channel` was made with, for NewConnectionStub.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  grpc::ChannelArguments channel_args;

  // A stub on a new channel with a connection of its own (a local subchannel pool), so
  // that parallel streams of one pull do not share one HTTP/2 connection.
  std::unique_ptr<v1::DeltaService::Stub> NewConnectionStub() const {
    grpc::ChannelArguments args = channel_args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return v1::DeltaService::NewStub(grpc::CreateCustomChannel(options.target, credentials, args));
  }

  // Adds the bearer token and, if `deadline` is positive, the deadline to `ctx`. A call
  // about one task also carries it as `x-deltaserve-task: <tenant>/<task>` (proto::kTaskRouteHeader),
  // the key a load balancer hashes on to send a task's calls to the same replica
  // (deploy/haproxy/haproxy.cfg).
  void Prepare(grpc::ClientContext* ctx, absl::Duration deadline,
               std::string_view task = {}) const {
    if (!options.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options.token);
    std::string route = options.tenant + "/" + std::string(task);
    // Metadata values must be printable ASCII; a name that is not (refused by the
    // server anyway, with its own message) goes unrouted.
    if (!task.empty() && std::all_of(route.begin(), route.end(),
                                     [](char c) { return c >= 0x20 && c < 0x7f; })) {
      ctx->AddMetadata(proto::kTaskRouteHeader, route);
    }
    if (deadline > absl::ZeroDuration()) ctx->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  }

  // One unary call of `method` with the token and `deadline`; errors are prefixed with
  // `label` (the method and task). A request with a string that is not valid UTF-8 is
  // refused (InvalidArgument) without a call.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Unary(
      grpc::Status (v1::DeltaService::Stub::*method)(grpc::ClientContext*, const Request&,
                                                     Response*),
      const Request& request, absl::Duration deadline, std::string_view label) const {
    if (absl::Status s = proto::CheckTextFieldsUtf8(request, label); !s.ok()) return s;
    grpc::ClientContext ctx;
    if constexpr (requires { request.task(); }) {
      Prepare(&ctx, deadline, request.task());
    } else {
      Prepare(&ctx, deadline);
    }
    Response response;
    absl::Status s = FromGrpcStatus((stub.get()->*method)(&ctx, request, &response), label);
    if (!s.ok()) return s;
    return response;
  }
};

inline bool Cancelled(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load(std::memory_order_relaxed);
}

// "'task'" with the tenant when one is set: "'acme/task'".
std::string TaskLabel(const ClientOptions& options, const std::string& task);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_IMPL_H_

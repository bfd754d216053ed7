// deltaserve.v1.DeltaService on the gRPC callback API. Every handler returns at once;
// blocking work runs on ctx->pool, which finishes or advances the reactor.
// Unary handlers live in service.cc, streaming reactors in put_delta.cc,
// stream_weights.cc and stream_delta.cc.
#ifndef DELTASERVE_SERVER_INTERNAL_SERVICE_H_
#define DELTASERVE_SERVER_INTERNAL_SERVICE_H_

#include <functional>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "deltaserve/v1/delta_service.grpc.pb.h"
#include "server/internal/auth.h"
#include "server/internal/call.h"
#include "server/internal/cluster_glue.h"
#include "server/internal/context.h"

namespace deltaserve::server::internal {

// StreamWeights and PutDelta are raw (grpc::ByteBuffer) methods: tensor data is sent
// without copies (weights_wire.h) and container chunks are taken from gRPC's buffers
// without a copy into a parsed request (put_delta.cc); every other method is
// proto-typed.
class DeltaServiceImpl final
    : public v1::DeltaService::WithRawCallbackMethod_StreamWeights<
          v1::DeltaService::WithRawCallbackMethod_PutDelta<v1::DeltaService::CallbackService>> {
 public:
  explicit DeltaServiceImpl(const ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerReadReactor<grpc::ByteBuffer>* PutDelta(grpc::CallbackServerContext* call,
                                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* call,
                                      const v1::ListTasksRequest* request,
                                      v1::ListTasksResponse* response) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* call,
                                    const v1::GetTaskRequest* request,
                                    v1::TaskInfo* response) override;
  grpc::ServerUnaryReactor* DeleteTask(grpc::CallbackServerContext* call,
                                       const v1::DeleteTaskRequest* request,
                                       v1::DeleteTaskResponse* response) override;
  grpc::ServerUnaryReactor* GetBase(grpc::CallbackServerContext* call,
                                    const v1::GetBaseRequest* request,
                                    v1::BaseInfo* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* StreamWeights(
      grpc::CallbackServerContext* call, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<v1::StreamDeltaResponse>* StreamDelta(
      grpc::CallbackServerContext* call, const v1::StreamDeltaRequest* request) override;
  grpc::ServerUnaryReactor* PinTask(grpc::CallbackServerContext* call,
                                    const v1::PinTaskRequest* request,
                                    v1::PinTaskResponse* response) override;
  grpc::ServerUnaryReactor* UnpinTask(grpc::CallbackServerContext* call,
                                      const v1::UnpinTaskRequest* request,
                                      v1::UnpinTaskResponse* response) override;
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* call,
                                       const v1::AdminCheckpointRequest* request,
                                       v1::AdminCheckpointResponse* response) override;
  grpc::ServerUnaryReactor* GetSideFile(grpc::CallbackServerContext* call,
                                        const v1::GetSideFileRequest* request,
                                        v1::GetSideFileResponse* response) override;

 private:
  // Runs `work(caller, log)` on the control pool (RunUnary: metadata work) or on the
  // worker pool (RunUnaryOnPool: work that decodes) after authenticating, then
  // finishes the call with its status and logs it.
  // The *OnTask variants name the task the work reads: in cluster mode a miss is
  // fetched on the fill pool before the work starts (RunWhenLocal, cluster_glue.h).
  using UnaryWork = std::function<absl::Status(const Caller&, CallLog&)>;
  grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* call, const char* method,
                                     UnaryWork work) {
    return RunUnaryOn(ctx_->control, call, method, std::move(work), {});
  }
  grpc::ServerUnaryReactor* RunUnaryOnPool(grpc::CallbackServerContext* call, const char* method,
                                           UnaryWork work) {
    return RunUnaryOn(ctx_->pool, call, method, std::move(work), {});
  }
  grpc::ServerUnaryReactor* RunUnaryOnTask(grpc::CallbackServerContext* call, const char* method,
                                           TaskRef task, UnaryWork work) {
    return RunUnaryOn(ctx_->control, call, method, std::move(work), task);
  }
  grpc::ServerUnaryReactor* RunUnaryOnPoolOnTask(grpc::CallbackServerContext* call,
                                                 const char* method, TaskRef task, UnaryWork work) {
    return RunUnaryOn(ctx_->pool, call, method, std::move(work), task);
  }
  grpc::ServerUnaryReactor* RunUnaryOn(ThreadPool* pool, grpc::CallbackServerContext* call,
                                       const char* method, UnaryWork work, TaskRef task);

  const ServiceContext* ctx_;
};

// The tenant a request on `task` acts on (Authenticator::ResolveTenant), with the task
// name validated; records both in `log`.
absl::StatusOr<std::string> ResolveTask(const ServiceContext& ctx, const Caller& caller,
                                        const std::string& tenant_field, const std::string& task,
                                        CallLog& log);

// Reactor factories (one per streaming method, each in its own .cc).
grpc::ServerReadReactor<grpc::ByteBuffer>* NewPutDeltaReactor(
    const ServiceContext* ctx, grpc::CallbackServerContext* call,
    grpc::ByteBuffer* response);
// `request`: the serialized StreamWeightsRequest (a bad one finishes the call with
// INVALID_ARGUMENT); responses are serialized StreamWeightsResponses.
grpc::ServerWriteReactor<grpc::ByteBuffer>* NewStreamWeightsReactor(
    const ServiceContext* ctx, grpc::CallbackServerContext* call, const grpc::ByteBuffer* request);
grpc::ServerWriteReactor<v1::StreamDeltaResponse>* NewStreamDeltaReactor(
    const ServiceContext* ctx, grpc::CallbackServerContext* call,
    const v1::StreamDeltaRequest* request);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_SERVICE_H_

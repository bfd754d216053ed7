// DrainGate: counts the DeltaService calls in progress so that a graceful stop can wait
// for exactly those, while health checks keep answering NOT_SERVING (they are not
// counted and are served until the gRPC server itself stops).
//
// A call counts from the moment gRPC creates it until gRPC has destroyed it (after the
// reactor's OnDone): the gate's interceptor (NewInterceptorFactory) is created and
// destroyed with every call. Thread-safe.
#ifndef DELTASERVE_SERVER_INTERNAL_DRAIN_H_
#define DELTASERVE_SERVER_INTERNAL_DRAIN_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"

namespace deltaserve::server::internal {

class DrainGate {
 public:
  // From now on draining() is true: handlers refuse new calls with UNAVAILABLE.
  void StartDrain() { draining_.store(true); }
  bool draining() const { return draining_.load(); }

  // Blocks until no counted call is in progress or `deadline` has passed; returns the
  // number of calls still in progress.
  int64_t WaitIdle(absl::Time deadline);
  int64_t in_progress() const;
  // Calls begun since the gate was made (counted calls only; never decreases).
  int64_t begun() const;

  // An interceptor factory for grpc::ServerBuilder::experimental().SetInterceptorCreators
  // counting every call whose method name starts with `service_prefix`
  // ("/deltaserve.v1.DeltaService/"). REQUIRES: the gate outlives the gRPC server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  NewInterceptorFactory(const char* service_prefix);

  void Enter();
  void Exit();

 private:
  std::atomic<bool> draining_{false};
  mutable absl::Mutex mu_;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t begun_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_DRAIN_H_

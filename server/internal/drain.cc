#include "server/internal/drain.h"

#include <cstring>
#include <string>

namespace deltaserve::server::internal {
namespace {

// Lives exactly as long as its call (grpc::experimental::ServerRpcInfo owns it).
class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit CountingInterceptor(DrainGate* gate) : gate_(gate) { gate_->Enter(); }
  ~CountingInterceptor() override { gate_->Exit(); }
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    methods->Proceed();
  }

 private:
  DrainGate* gate_;
};

class CountingFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  CountingFactory(DrainGate* gate, const char* prefix) : gate_(gate), prefix_(prefix) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    if (method == nullptr || std::strncmp(method, prefix_.data(), prefix_.size()) != 0) {
      return nullptr;  // health checks, reflection: not waited for
    }
    return new CountingInterceptor(gate_);
  }

 private:
  DrainGate* gate_;
  std::string prefix_;
};

}  // namespace

void DrainGate::Enter() {
  absl::MutexLock lock(&mu_);
  ++calls_;
  ++begun_;
}

void DrainGate::Exit() {
  absl::MutexLock lock(&mu_);
  --calls_;
}

int64_t DrainGate::in_progress() const {
  absl::MutexLock lock(&mu_);
  return calls_;
}

int64_t DrainGate::begun() const {
  absl::MutexLock lock(&mu_);
  return begun_;
}

int64_t DrainGate::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_ == 0; };
  mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  return calls_;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
DrainGate::NewInterceptorFactory(const char* service_prefix) {
  return std::make_unique<CountingFactory>(this, service_prefix);
}

}  // namespace deltaserve::server::internal

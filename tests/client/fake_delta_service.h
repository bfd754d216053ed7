// An in-process fake deltaserve.v1.DeltaService with injectable faults, for client and
// deltactl tests that need no real server.
#ifndef DELTASERVE_TESTS_CLIENT_FAKE_DELTA_SERVICE_H_
#define DELTASERVE_TESTS_CLIENT_FAKE_DELTA_SERVICE_H_

#include <xxhash.h>

#include <algorithm>
#include <optional>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "client/client.h"
#include "codec/container.h"
#include "codec/tensor.h"
#include "deltaserve/v1/delta_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace deltaserve::testing {

inline std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace deltaserve::testing

namespace deltaserve::client::testing {

// What the fake server should get wrong.
// kNoTrailingChecksum: with checksum_follows, the last chunk lacks tensor_xxh3_64.
enum class Fault {
  kNone,
  kBadChecksum,
  kGap,
  kNoEnd,
  kWrongTotal,
  kAbortMidway,
  kNoTrailingChecksum
};

// A DeltaService serving fixed tensors and one container, with injectable faults.
class FakeService final : public v1::DeltaService::Service {
 public:
  std::vector<codec::OwnedTensor> tensors;
  std::map<std::string, std::string> metadata = {{"deltaserve.base_hash", "00ff"},
                                                 {"deltaserve.tool", "fake"}};
  std::vector<uint8_t> container;
  std::atomic<Fault> fault{Fault::kNone};
  size_t chunk = 7;  // odd, small: many chunks per tensor
  // Answer a request with checksum_after_data as a cold server does: every non-empty
  // tensor's header has checksum_follows, its XXH3-64 rides on its last chunk.
  bool checksum_follows = false;
  // Tensor ranges (parallel pulls): the first StreamWeights call that reaches the tensor
  // at this container index sends its header and one chunk, then fails UNAVAILABLE
  // (a dropped connection); later calls serve it. -1: never.
  std::atomic<int> unavailable_once_at{-1};
  // That failure as a client behind a proxy sees a reset stream: UNKNOWN "Stream
  // removed" (gRPC's status for an RST_STREAM), not UNAVAILABLE.
  std::atomic<bool> fail_as_reset{false};
  // What StreamWeights serves, if not `tensors` (GetTask lists `tensors`): a task
  // replaced between the two calls.
  const std::vector<codec::OwnedTensor>* served_tensors = nullptr;
  // The version StreamBegin.task announces: GetTask and StreamWeights report
  // created_unix, so that a test can replace the task between them.
  int64_t created_unix = 1700000000;
  int64_t stream_created_unix = 1700000000;
  // TaskInfo.container_xxh3_64 (the version identity) of GetTask's answer (nullopt:
  // unset, as an older server's) and of the StreamBegin of the n-th StreamWeights call
  // (counting every call in `streams`): stream_xxh3[min(n, size - 1)]; empty: unset.
  std::optional<uint64_t> container_xxh3_64;
  std::vector<uint64_t> stream_xxh3;
  // Not OK: ListTasks answers this, and PutDelta answers it after reading only its
  // metadata message (a refusal at admission, as a real server's for a wrong base).
  grpc::Status refusal = grpc::Status::OK;
  // Called by StreamWeights before it sends the header of the tensor at this container
  // index (on the server's thread): a test stalls the stream or freezes its connection
  // there. Empty: none.
  std::function<void(size_t index)> before_tensor;
  // TaskInfo.other_base of what GetTask and ListTasks answer (a task made against another
  // base than the server's).
  bool other_base = false;

  std::mutex mu;
  std::string last_authorization;
  int calls = 0;  // every call that reached the service
  v1::PutDeltaMetadata last_put;
  std::vector<uint8_t> uploaded;
  v1::StreamWeightsRequest last_stream;
  std::vector<v1::StreamWeightsRequest> streams;  // every StreamWeights request

  grpc::Status GetTask(grpc::ServerContext* ctx, const v1::GetTaskRequest* req,
                       v1::TaskInfo* resp) override {
    Remember(ctx);
    if (req->task() == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no task 'missing'");
    resp->set_name(req->task());
    resp->set_tenant(req->tenant().empty() ? "default" : req->tenant());
    resp->set_num_tensors(static_cast<uint32_t>(tensors.size()));
    resp->set_created_unix(created_unix);
    if (container_xxh3_64) resp->set_container_xxh3_64(*container_xxh3_64);
    resp->set_other_base(other_base);
    if (req->include_tensors()) {
      for (size_t i = 0; i < tensors.size(); ++i) {
        v1::TensorSummary* t = resp->add_tensors();
        t->set_name(tensors[i].info.name);
        t->set_dtype(proto::ToProtoDType(tensors[i].info.dtype));
        for (int64_t d : tensors[i].info.shape) t->add_shape(d);
        t->set_merged_bytes(tensors[i].data.size());
        t->set_index(static_cast<uint32_t>(i));
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status DeleteTask(grpc::ServerContext* ctx, const v1::DeleteTaskRequest* req,
                          v1::DeleteTaskResponse* resp) override {
    Remember(ctx);
    if (req->task() != "chat") return grpc::Status(grpc::StatusCode::NOT_FOUND, "task not found");
    resp->set_freed_bytes(1234);
    return grpc::Status::OK;
  }

  grpc::Status ListTasks(grpc::ServerContext* ctx, const v1::ListTasksRequest* req,
                         v1::ListTasksResponse* resp) override {
    Remember(ctx);
    if (!refusal.ok()) return refusal;
    v1::TaskInfo* t = resp->add_tasks();
    t->set_tenant(req->tenant().empty() ? "default" : req->tenant());
    t->set_name("chat");
    t->set_other_base(other_base);
    t->set_num_tensors(static_cast<uint32_t>(tensors.size()));
    t->set_container_bytes(1234);
    resp->set_stored_bytes(1234);
    return grpc::Status::OK;
  }

  grpc::Status PutDelta(grpc::ServerContext* ctx, grpc::ServerReader<v1::PutDeltaRequest>* reader,
                        v1::PutDeltaResponse* resp) override {
    Remember(ctx);
    v1::PutDeltaRequest req;
    std::vector<uint8_t> bytes;
    v1::PutDeltaMetadata meta;
    if (!refusal.ok()) {
      if (reader->Read(&req)) {
        std::lock_guard<std::mutex> lock(mu);
        last_put = req.metadata();
      }
      return refusal;
    }
    while (reader->Read(&req)) {
      if (req.has_metadata()) meta = req.metadata();
      else bytes.insert(bytes.end(), req.chunk().begin(), req.chunk().end());
    }
    // "slow": a commit that outlasts a short client deadline.
    if (meta.task() == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    std::lock_guard<std::mutex> lock(mu);
    last_put = meta;
    uploaded = bytes;
    if (meta.task() == "exists") return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "exists");
    resp->mutable_task()->set_name(meta.task());
    resp->mutable_task()->set_container_bytes(bytes.size());
    resp->set_unchanged(meta.task() == "same");  // "same": stored identical already
    return grpc::Status::OK;
  }

  grpc::Status StreamWeights(grpc::ServerContext* ctx, const v1::StreamWeightsRequest* req,
                             grpc::ServerWriter<v1::StreamWeightsResponse>* writer) override {
    Remember(ctx);
    // The faults as they were when this call began. A handler still running for an
    // earlier pull (a stream the client gave up on, whose writes have not failed yet)
    // must not take a one-shot fault armed for the next pull, nor a changed `fault`.
    const Fault call_fault = fault;
    const int once_at = unavailable_once_at.load();
    const std::vector<codec::OwnedTensor>& tensors = served_tensors ? *served_tensors : this->tensors;
    std::optional<uint64_t> announced;
    {
      std::lock_guard<std::mutex> lock(mu);
      last_stream = *req;
      if (!stream_xxh3.empty()) announced = stream_xxh3[std::min(streams.size(), stream_xxh3.size() - 1)];
      streams.push_back(*req);
    }
    if (req->task() == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no task");
    // Range [first, end): resume_from_index .. end_index (0 = to the last tensor).
    const size_t first = req->resume_from_index();
    const size_t end = req->end_index() == 0 ? tensors.size() : req->end_index();
    if (first >= end || end > tensors.size()) {
      return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "bad range");
    }
    // resume_from_offset: the first tensor's bytes before it are not sent, and its
    // header carries its checksum.
    const uint64_t skip = req->resume_from_offset();
    if (skip > tensors[first].data.size()) {
      return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "bad offset");
    }
    uint64_t total = 0;
    for (size_t i = first; i < end; ++i) total += tensors[i].data.size();
    total -= skip;
    v1::StreamWeightsResponse msg;
    auto* begin = msg.mutable_begin();
    begin->set_num_tensors(static_cast<uint32_t>(end - first));
    begin->set_total_bytes(call_fault == Fault::kWrongTotal ? total + 1 : total);
    begin->mutable_safetensors_metadata()->insert(metadata.begin(), metadata.end());
    begin->mutable_task()->set_created_unix(stream_created_unix);
    if (announced) begin->mutable_task()->set_container_xxh3_64(*announced);
    writer->Write(msg);
    for (size_t i = first; i < end; ++i) {
      const auto& t = tensors[i];
      if (before_tensor) before_tensor(i);
      msg.Clear();
      auto* h = msg.mutable_header();
      h->set_name(t.info.name);
      h->set_dtype(proto::ToProtoDType(t.info.dtype));
      for (int64_t d : t.info.shape) h->add_shape(d);
      h->set_byte_length(t.data.size());
      const uint64_t hash =
          XXH3_64bits(t.data.data(), t.data.size()) + (call_fault == Fault::kBadChecksum);
      const size_t from = i == first ? skip : 0;
      const bool follows =
          checksum_follows && req->checksum_after_data() && !t.data.empty() && from == 0;
      h->set_checksum_follows(follows);
      if (!follows) h->set_xxh3_64(hash);
      h->set_index(static_cast<uint32_t>(i));
      writer->Write(msg);
      for (size_t off = from; off < t.data.size(); off += chunk) {
        int at = once_at;
        if (off == chunk && static_cast<int>(i) == once_at &&
            unavailable_once_at.compare_exchange_strong(at, -1)) {
          if (fail_as_reset) return grpc::Status(grpc::StatusCode::UNKNOWN, "Stream removed");
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection dropped");
        }
        if (call_fault == Fault::kAbortMidway && i == 1) {
          return grpc::Status(grpc::StatusCode::INTERNAL, "decoder exploded");
        }
        if (call_fault == Fault::kGap && i == 1 && off == chunk) continue;
        msg.Clear();
        const size_t n = std::min(chunk, t.data.size() - off);
        msg.mutable_chunk()->set_data(t.data.data() + off, n);
        msg.mutable_chunk()->set_offset(off);
        if (follows && off + n == t.data.size() && call_fault != Fault::kNoTrailingChecksum) {
          msg.mutable_chunk()->set_tensor_xxh3_64(hash);
        }
        if (!writer->Write(msg)) return grpc::Status::CANCELLED;
      }
    }
    if (call_fault == Fault::kNoEnd) return grpc::Status::OK;
    msg.Clear();
    msg.mutable_end()->set_num_tensors(static_cast<uint32_t>(end - first));
    msg.mutable_end()->set_total_bytes(total);
    writer->Write(msg);
    return grpc::Status::OK;
  }

  grpc::Status StreamDelta(grpc::ServerContext* ctx, const v1::StreamDeltaRequest* req,
                           grpc::ServerWriter<v1::StreamDeltaResponse>* writer) override {
    Remember(ctx);
    const uint64_t hash = XXH3_64bits(container.data(), container.size());
    v1::StreamDeltaResponse msg;
    for (size_t off = 0; off < container.size(); off += chunk) {
      const size_t n = std::min(chunk, container.size() - off);
      msg.set_data(container.data() + off, n);
      if (fault == Fault::kBadChecksum && off == 0) (*msg.mutable_data())[0] ^= 1;
      msg.set_offset(off);
      msg.set_total_bytes(container.size());
      msg.set_xxh3_64(hash);
      writer->Write(msg);
    }
    return grpc::Status::OK;
  }

 private:
  void Remember(grpc::ServerContext* ctx) {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    auto it = ctx->client_metadata().find("authorization");
    last_authorization =
        it == ctx->client_metadata().end() ? "" : std::string(it->second.data(), it->second.size());
  }
};

inline codec::OwnedTensor MakeTensor(const std::string& name, codec::DType dtype,
                              std::vector<int64_t> shape, uint8_t seed) {
  codec::OwnedTensor t{{name, dtype, std::move(shape)}, {}};
  t.data.resize(t.info.num_bytes());
  for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<uint8_t>(seed + 13 * i);
  return t;
}

// Four tensors of three dtypes, one of them empty, 122 bytes in all: the client tests'
// stream.
inline std::vector<codec::OwnedTensor> FourTensors() {
  return {MakeTensor("b.weight", codec::DType::kF16, {5, 6}, 1),
          MakeTensor("a.bias", codec::DType::kF32, {11}, 2),
          MakeTensor("empty", codec::DType::kBF16, {0, 4}, 3),
          MakeTensor("c", codec::DType::kBF16, {3, 3}, 4)};
}

// Starts `service` on 127.0.0.1 port 0; *port receives the port.
// `min_client_ping`: the shortest interval between client pings the server takes
// without a strike (deltaserved's --min-client-ping-seconds); zero: gRPC's default
// (5 min, pings allowed only during calls).
inline std::unique_ptr<grpc::Server> StartFakeServer(
    FakeService* service, int* port, absl::Duration min_client_ping = absl::ZeroDuration()) {
  grpc::ServerBuilder builder;
  if (min_client_ping > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(min_client_ping)));
  }
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

inline std::vector<uint8_t> SmallContainer() {
  codec::ContainerHeader header;
  header.tensor_count = 1;
  codec::TensorRecord r;
  r.info = codec::TensorInfo{"w", codec::DType::kF32, {300}};
  std::vector<uint8_t> payload(1200, 0x5c);
  r.payload = payload;
  auto record = codec::SerializeRecord(r);
  if (!record.ok()) return {};
  return codec::AssembleContainer(codec::SerializeHeader(header), {absl::MakeConstSpan(*record)});
}

}  // namespace deltaserve::client::testing

#endif  // DELTASERVE_TESTS_CLIENT_FAKE_DELTA_SERVICE_H_

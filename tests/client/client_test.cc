#include "client/client.h"

#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "client/internal/status.h"
#include "client/internal/weights_stream.h"
#include "codec/safetensors.h"
#include "deltaserve/v1/delta_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/client/fake_delta_service.h"
#include "tests/client/tcp_forwarder.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::client {
namespace {

using ::deltaserve::client::testing::FakeService;
using ::deltaserve::client::testing::Fault;
using ::deltaserve::client::testing::SmallContainer;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ReadFile;
using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_.tensors = testing::FourTensors();
    int port = 0;
    server_ = testing::StartFakeServer(&service_, &port);
    ASSERT_NE(server_, nullptr);
    options_.target = "127.0.0.1:" + std::to_string(port);
    options_.token = "tok-acme";
    options_.deadline = absl::Seconds(10);
    options_.stream_deadline = absl::Seconds(30);
    ASSERT_OK_AND_ASSIGN(client_, DeltaClient::Open(options_));
  }
  void TearDown() override {
    server_->Shutdown();
  }
  std::string Path(const std::string& name) const { return tmp_.File(name); }

  FakeService service_;
  std::unique_ptr<grpc::Server> server_;
  ::deltaserve::testing::ScopedTempDir tmp_;
  ClientOptions options_;
  std::unique_ptr<DeltaClient> client_;
};

TEST_F(ClientTest, PullWeightsWritesSameBytesAsWriteSafetensors) {
  std::vector<Progress> seen;
  PullOptions options;
  options.progress = [&](const Progress& p) { seen.push_back(p); };
  ASSERT_OK_AND_ASSIGN(PullStats stats, client_->PullWeights("chat", Path("pulled.safetensors"), options));
  EXPECT_EQ(stats.tensors, 4u);
  EXPECT_EQ(stats.bytes, 60u + 44u + 0u + 18u);

  std::vector<codec::TensorView> views;
  for (const auto& t : service_.tensors) views.push_back(t.view());
  ASSERT_THAT(codec::WriteSafetensors(Path("expected.safetensors"), views, service_.metadata), IsOk());
  EXPECT_EQ(ReadFile(Path("pulled.safetensors")), ReadFile(Path("expected.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(Path("pulled.safetensors.data.tmp")));

  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().bytes_done, 122u);
  EXPECT_EQ(seen.back().bytes_total, 122u);
  EXPECT_EQ(seen.back().tensors_done, 4u);
  EXPECT_EQ(seen.back().tensors_total, 4u);
  EXPECT_EQ(seen.back().current, "c");
  EXPECT_EQ(service_.last_authorization, "Bearer tok-acme");
}

TEST_F(ClientTest, PullWeightsToMemoryAndRequestFields) {
  PullOptions options;
  options.out_dtype = codec::DType::kF16;
  options.include = {"*.weight", "c"};
  options.include_regex = "[a-z.]+";
  options.resume_from = "b.weight";
  options.chunk_bytes = 8192;
  ASSERT_OK_AND_ASSIGN(PulledModel model, client_->PullWeightsToMemory("chat", options));
  ASSERT_EQ(model.tensors.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(model.tensors[i].info.name, service_.tensors[i].info.name);
    EXPECT_EQ(model.tensors[i].info.dtype, service_.tensors[i].info.dtype);
    EXPECT_EQ(model.tensors[i].info.shape, service_.tensors[i].info.shape);
    EXPECT_EQ(model.tensors[i].data, service_.tensors[i].data);
  }
  EXPECT_EQ(model.metadata, service_.metadata);
  const v1::StreamWeightsRequest& req = service_.last_stream;
  EXPECT_EQ(req.task(), "chat");
  EXPECT_EQ(req.out_dtype(), v1::DTYPE_F16);
  EXPECT_THAT(req.include(), ElementsAreArray({"*.weight", "c"}));
  EXPECT_EQ(req.include_regex(), "[a-z.]+");
  // A single-stream pull takes the path of the ranges of --streams N (so that a cut
  // stream resumes by offset): the tensor to resume from goes by its container index
  // (from GetTask), not by name.
  EXPECT_EQ(req.resume_from_name(), "");
  EXPECT_EQ(service_.tensors[req.resume_from_index()].info.name, "b.weight");
  EXPECT_EQ(req.chunk_bytes(), 8192u);
}

// The server's include_regex rule (proto::CheckIncludeRegex), applied by the library
// before any call, so that every caller (deltactl, the Python puller) learns of a bad
// expression without a round trip, in the server's words.
TEST_F(ClientTest, AnInvalidIncludeRegexIsRefusedBeforeAnyCall) {
  PullOptions options;
  options.include_regex = "(";
  EXPECT_THAT(client_->PullWeightsToMemory("chat", options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("include_regex '(': missing ): (")));
  EXPECT_THAT(client_->PullWeights("chat", Path("o.safetensors"), options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing ): (")));
  std::lock_guard<std::mutex> lock(service_.mu);
  EXPECT_EQ(service_.calls, 0);
}

TEST_F(ClientTest, CorruptStreamsAreDataLossAndLeaveNoFile) {
  struct Case {
    Fault fault;
    const char* message;
  };
  for (const Case& c : {Case{Fault::kBadChecksum, "tensor 'b.weight' checksum mismatch"},
                        Case{Fault::kGap, "chunk at offset 14"},
                        Case{Fault::kNoEnd, "without an end message"},
                        Case{Fault::kWrongTotal, "begin announced"}}) {
    service_.fault = c.fault;
    EXPECT_THAT(client_->PullWeights("chat", Path("bad.safetensors")),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr(c.message)));
    EXPECT_FALSE(std::filesystem::exists(Path("bad.safetensors")));
    EXPECT_FALSE(std::filesystem::exists(Path("bad.safetensors.data.tmp")));
  }
  service_.fault = Fault::kAbortMidway;
  EXPECT_THAT(client_->PullWeightsToMemory("chat"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("decoder exploded")));
}

// A server that streams a tensor before its checksum (checksum_follows, the client's
// checksum_after_data opt-in): the same tensors, every checksum still verified.
TEST_F(ClientTest, ChecksumsInTheLastChunkAreVerified) {
  ASSERT_OK_AND_ASSIGN(client::PulledModel plain, client_->PullWeightsToMemory("chat"));
  EXPECT_TRUE(service_.last_stream.checksum_after_data());
  service_.checksum_follows = true;
  ASSERT_OK_AND_ASSIGN(client::PulledModel late, client_->PullWeightsToMemory("chat"));
  ASSERT_EQ(late.tensors.size(), plain.tensors.size());
  for (size_t i = 0; i < plain.tensors.size(); ++i) {
    EXPECT_EQ(late.tensors[i].data, plain.tensors[i].data);
  }
  struct Case {
    Fault fault;
    const char* message;
  };
  for (const Case& c :
       {Case{Fault::kBadChecksum, "tensor 'b.weight' checksum mismatch (XXH3-64 "},
        Case{Fault::kNoTrailingChecksum, "lacks the tensor checksum (checksum_follows: yes)"}}) {
    service_.fault = c.fault;
    EXPECT_THAT(client_->PullWeights("chat", Path("bad.safetensors")),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr(c.message)));
    EXPECT_FALSE(std::filesystem::exists(Path("bad.safetensors")));
  }
}

TEST_F(ClientTest, ServerErrorsKeepTheirCode) {
  EXPECT_THAT(client_->GetTask("missing"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("GetTask 'missing'")));
  EXPECT_THAT(client_->PullWeights("missing", Path("x.safetensors")),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo info, client_->GetTask("chat"));
  EXPECT_EQ(info.name(), "chat");
  // Unimplemented in the fake: the code comes through as is.
  EXPECT_THAT(client_->GetBase(), StatusIs(absl::StatusCode::kUnimplemented));
}

TEST_F(ClientTest, CancelFlagStopsAPull) {
  std::atomic<bool> cancel{false};
  PullOptions options;
  options.cancel = &cancel;
  options.progress = [&](const Progress& p) {
    if (p.bytes_done > 20) cancel = true;
  };
  EXPECT_THAT(client_->PullWeightsToMemory("chat", options),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled by the caller")));
}

TEST_F(ClientTest, PushDeltaSendsMetadataThenChunks) {
  const std::vector<uint8_t> container = SmallContainer();
  ASSERT_FALSE(container.empty());
  options_.upload_chunk_bytes = 4096;
  options_.tenant = "acme";
  ASSERT_OK_AND_ASSIGN(auto client, DeltaClient::Open(options_));
  uint64_t last = 0;
  PushOptions push;
  push.overwrite = true;
  push.progress = [&](const Progress& p) { last = p.bytes_done; };
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo info, client->PushDelta("chat", container, push));
  EXPECT_EQ(info.name(), "chat");
  EXPECT_EQ(service_.uploaded, container);
  EXPECT_EQ(service_.last_put.tenant(), "acme");
  EXPECT_EQ(service_.last_put.task(), "chat");
  EXPECT_TRUE(service_.last_put.overwrite());
  EXPECT_EQ(service_.last_put.total_bytes(), container.size());
  EXPECT_EQ(service_.last_put.xxh3_64(), XXH3_64bits(container.data(), container.size()));
  EXPECT_EQ(last, container.size());

  EXPECT_THAT(client->PushDelta("exists", container),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("PutDelta 'acme/exists'")));
  // A file is memory-mapped and sent the same way.
  {
    std::ofstream out(Path("c.dds"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(container.data()), container.size());
  }
  ASSERT_THAT(client->PushDeltaFile("fromfile", Path("c.dds")), IsOk());
  EXPECT_EQ(service_.uploaded, container);
  EXPECT_THAT(client->PushDeltaFile("x", Path("nope.dds")), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ClientTest, ARefusedPushNeverReportsItsLastByte) {
  // Refused at admission: the one chunk may well be written into gRPC's buffers, but
  // progress must not claim the whole upload (it read 100%).
  std::vector<uint8_t> container = SmallContainer();
  options_.upload_chunk_bytes = 4096;
  ASSERT_OK_AND_ASSIGN(auto client, DeltaClient::Open(options_));
  std::vector<uint64_t> done;
  PushOptions push;
  push.progress = [&](const Progress& p) { done.push_back(p.bytes_done); };
  service_.refusal = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "PutDelta: wrong base");
  EXPECT_THAT(client->PushDelta("chat", container, push),
              StatusIs(absl::StatusCode::kFailedPrecondition, "PutDelta 'chat': wrong base"));
  ASSERT_FALSE(done.empty());
  EXPECT_EQ(done.front(), 0u);  // the upload began
  EXPECT_LT(done.back(), container.size());
  // Accepted: the last report is the whole container, after the commit.
  service_.refusal = grpc::Status::OK;
  done.clear();
  ASSERT_THAT(client->PushDelta("chat", container, push).status(), IsOk());
  EXPECT_EQ(done.front(), 0u);
  EXPECT_EQ(done.back(), container.size());
}

TEST_F(ClientTest, PushRejectsMalformedContainerLocally) {
  std::vector<uint8_t> container = SmallContainer();
  container.resize(container.size() - 5);
  service_.last_put.Clear();
  EXPECT_THAT(client_->PushDelta("chat", container),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("local container")));
  EXPECT_EQ(service_.last_put.task(), "");  // nothing was sent
}

TEST_F(ClientTest, StreamDeltaVerifiesSizeAndChecksum) {
  service_.container = SmallContainer();
  ASSERT_OK_AND_ASSIGN(DeltaStats stats, client_->StreamDelta("chat", Path("out.dds")));
  EXPECT_EQ(stats.bytes, service_.container.size());
  EXPECT_EQ(stats.xxh3_64, XXH3_64bits(service_.container.data(), service_.container.size()));
  EXPECT_EQ(ReadFile(Path("out.dds")), service_.container);
  ASSERT_OK_AND_ASSIGN(auto bytes, client_->FetchDelta("chat"));
  EXPECT_EQ(bytes, service_.container);

  service_.fault = Fault::kBadChecksum;
  EXPECT_THAT(client_->StreamDelta("chat", Path("bad.dds")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("XXH3-64")));
  EXPECT_FALSE(std::filesystem::exists(Path("bad.dds")));
  EXPECT_FALSE(std::filesystem::exists(Path("bad.dds.tmp")));
}

// A MemorySink that remembers the offsets of Continue.
class ContinueRecordingSink : public MemorySink {
 public:
  using MemorySink::MemorySink;
  void Continue(uint64_t offset) override { continued.push_back(offset); }
  std::vector<uint64_t> continued;
};

// PullWeightsToSink (the Python binding's pull): a stream failing UNAVAILABLE midway
// through a tensor resumes at the byte where it stopped (resume_from_offset), the sink
// keeping the bytes it had (Continue, no DropUnfinished); it ends with every tensor
// once, each verified whole.
TEST_F(ClientTest, PullWeightsToSinkResumesMidTensorAtTheByte) {
  service_.unavailable_once_at = 1;  // a.bias: 44 bytes, dropped after its first 7-byte chunk
  PulledModel model;
  ContinueRecordingSink sink(&model);
  SinkPullOptions options;
  PullStats stats;
  ASSERT_THAT(client_->PullWeightsToSink("chat", &sink, options, &stats), IsOk());
  ASSERT_EQ(model.tensors.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(model.tensors[i].info.name, service_.tensors[i].info.name);
    EXPECT_EQ(model.tensors[i].data, service_.tensors[i].data);
  }
  EXPECT_EQ(model.metadata, service_.metadata);
  EXPECT_EQ(stats.tensors, 4u);
  EXPECT_EQ(stats.bytes, 122u);  // verified bytes only: the cut tensor counts once
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_THAT(sink.continued, ElementsAreArray({uint64_t{7}}));
  EXPECT_EQ(service_.last_stream.resume_from_index(), 1u);
  EXPECT_EQ(service_.last_stream.resume_from_offset(), 7u);
  EXPECT_TRUE(service_.last_stream.checksum_after_data());
}

// New-user trial: two same-size containers committed within one second have the same
// created_unix, size and base. A resume that lands on the second (another
// container_xxh3_64) is ABORTED, not appended to the first's tensors.
TEST_F(ClientTest, PullWeightsToSinkResumeOfASameSizeOverwriteIsAborted) {
  service_.unavailable_once_at = 1;
  service_.stream_xxh3 = {0x1111, 0x2222};
  PulledModel model;
  MemorySink sink(&model);
  PullStats stats;
  EXPECT_THAT(client_->PullWeightsToSink("chat", &sink, SinkPullOptions(), &stats),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("the task was replaced while the stream was resumed"),
                             HasSubstr("content 0000000000001111"),
                             HasSubstr("content 0000000000002222"))));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(service_.last_stream.resume_from_offset(), 7u);
}

// A cut tensor's kept bytes are still checked: a resumed stream whose rest does not
// hash to the tensor's checksum is DATA_LOSS, and the sink drops the tensor.
TEST_F(ClientTest, PullWeightsToSinkResumedTensorIsVerifiedWhole) {
  service_.unavailable_once_at = 0;  // b.weight, after its first 7 bytes
  service_.fault = Fault::kBadChecksum;
  PulledModel model;
  MemorySink sink(&model);
  PullStats stats;
  EXPECT_THAT(client_->PullWeightsToSink("chat", &sink, SinkPullOptions(), &stats),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("'b.weight' checksum mismatch")));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(service_.last_stream.resume_from_offset(), 7u);
  EXPECT_EQ(stats.tensors, 0u);
  EXPECT_TRUE(model.tensors.empty());
}

TEST_F(ClientTest, PullWeightsToSinkRetriesAreBoundedAndReplacedTasksAborted) {
  PulledModel model;
  MemorySink sink(&model);
  SinkPullOptions options;
  options.retries = 0;
  PullStats stats;
  service_.unavailable_once_at = 1;
  EXPECT_THAT(client_->PullWeightsToSink("chat", &sink, options, &stats),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("StreamWeights 'chat'")));
  EXPECT_EQ(stats.tensors, 1u);
  EXPECT_EQ(stats.resumed, 0u);

  // The task is replaced (another created_unix) while the first stream runs.
  PulledModel again;
  MemorySink sink2(&again);
  options.retries = 3;
  options.pull.progress = [&](const Progress& p) {
    if (p.tensors_done == 1) service_.stream_created_unix = 1700000001;
  };
  service_.unavailable_once_at = 1;
  EXPECT_THAT(client_->PullWeightsToSink("chat", &sink2, options, &stats),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("replaced while the stream was resumed")));

  options.pull.streams = 2;
  EXPECT_THAT(client_->PullWeightsToSink("chat", &sink2, options, &stats),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one stream")));
}

// A deadline shorter than gRPC's millisecond timer (python_client_errors on CI: a 1 us
// stream_timeout pulled the whole task, the call ending before its timer fired): no
// call is begun past the deadline, and nothing reaches the sink.
TEST_F(ClientTest, PullWeightsToSinkBeginsNoCallPastItsDeadline) {
  PulledModel model;
  MemorySink sink(&model);
  SinkPullOptions options;
  options.deadline = absl::Nanoseconds(1);
  PullStats stats;
  for (int i = 0; i < 20; ++i) {
    EXPECT_THAT(client_->PullWeightsToSink("chat", &sink, options, &stats),
                StatusIs(absl::StatusCode::kDeadlineExceeded,
                         HasSubstr("StreamWeights 'chat': deadline of 1e-09 s exceeded")));
    EXPECT_EQ(stats.tensors, 0u);
  }
  EXPECT_TRUE(model.tensors.empty());
}

// A server gone for good after the first tensor: every retry waits reconnect_timeout in
// turn (a wait that ends without the server uses the next retry), so the pull gives up
// after retries x reconnect_timeout, not after the first wait, and says so (new-user
// trial: a 25 s outage failed 10 s after the drop with retries=3 x 10 s).
class ShutdownOnResumeSink : public MemorySink {
 public:
  ShutdownOnResumeSink(PulledModel* model, grpc::Server* server)
      : MemorySink(model), server_(server) {}
  void Continue(uint64_t /*offset*/) override {
    server_->Shutdown(std::chrono::system_clock::now());
  }

 private:
  grpc::Server* server_;
};

TEST_F(ClientTest, PullWeightsToSinkWaitsEveryRetryBeforeGivingUp) {
  service_.unavailable_once_at = 1;  // cut in a.bias; the server then goes for good
  PulledModel model;
  ShutdownOnResumeSink sink(&model, server_.get());
  SinkPullOptions options;
  options.retries = 3;
  options.reconnect_timeout = absl::Milliseconds(200);
  PullStats stats;
  const absl::Time start = absl::Now();
  EXPECT_THAT(client_->PullWeightsToSink("chat", &sink, options, &stats),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("(3 of 3 retries used, each waiting up to 0.2 s)")));
  // Usually one resume and three full waits (~600 ms); a channel that still reads READY
  // just after the shutdown makes a wait end at once and the next call fail, a second
  // resume within the same retries.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));
  EXPECT_GE(stats.resumed, 1u);
  EXPECT_LE(stats.resumed, 3u);
  EXPECT_EQ(stats.tensors, 1u);
}

TEST(ClientUnreachableTest, UnavailableNamesTheCall) {
  ClientOptions options;
  options.target = "127.0.0.1:1";  // nothing listens on port 1
  options.deadline = absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(auto client, DeltaClient::Open(options));
  EXPECT_THAT(client->ListTasks(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("ListTasks")));
}

// A server whose HTTP/2 handshake takes a second (a loaded machine) is reached within
// the call's deadline. The client once set grpc.min_reconnect_backoff_ms to 100 ms,
// which gRPC takes as the connect timeout: every such call failed UNAVAILABLE
// "connection attempt timed out before receiving SETTINGS frame" at once.
TEST(ClientSlowServerTest, AServerSlowToSendSettingsIsReachedWithinTheDeadline) {
  FakeService service;
  int port = 0;
  std::unique_ptr<grpc::Server> server = testing::StartFakeServer(&service, &port);
  ASSERT_NE(server, nullptr);
  testing::TcpForwarder late(port, absl::Seconds(1));
  ASSERT_NE(late.port(), 0);
  ClientOptions options;
  options.target = "127.0.0.1:" + std::to_string(late.port());
  options.deadline = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(auto client, DeltaClient::Open(options));
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->ListTasks().status(), IsOk());
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));  // it did wait for the handshake
  server->Shutdown();
}

TEST(ClientOptionsTest, Validate) {
  ClientOptions options;
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target")));
  options.target = "localhost:50051";
  EXPECT_THAT(options.Validate(), IsOk());
  options.upload_chunk_bytes = 100;
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("upload_chunk_bytes")));
  options.upload_chunk_bytes = 1 << 20;
  options.deadline = absl::ZeroDuration();
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("deadline")));
  options.deadline = absl::Seconds(1);
  options.tls_root_cert_path = "/nonexistent/ca.pem";
  EXPECT_THAT(DeltaClient::Open(options), StatusIs(absl::StatusCode::kNotFound, HasSubstr("ca.pem")));
}

TEST(GrpcStatusTest, CodesMapOneToOne) {
  EXPECT_THAT(FromGrpcStatus(grpc::Status::OK, "x"), IsOk());
  EXPECT_THAT(FromGrpcStatus(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "no"), "Call"),
              StatusIs(absl::StatusCode::kPermissionDenied, "Call: no"));
  EXPECT_THAT(FromGrpcStatus(grpc::Status(grpc::StatusCode::DATA_LOSS, "crc"), "c"),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "tok"), "c"),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

}  // namespace
}  // namespace deltaserve::client

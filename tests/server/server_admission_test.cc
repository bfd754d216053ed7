// deltaserved's admission limits (--max-uploads, --max-streams) over real gRPC, and
// StreamDelta's piece-by-piece stream of the stored container.
#include "server/server.h"

#include <xxhash.h>

#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::testing::HasSubstr;

constexpr char kAdmittedUploads[] = "deltaserve_admitted_calls{kind=\"uploads\"} ";
constexpr char kAdmittedStreams[] = "deltaserve_admitted_calls{kind=\"streams\"} ";

TEST_F(ServerTest, UploadBeyondMaxUploadsIsRefusedAtOnce) {
  ServerOptions o = DefaultOptions();
  o.max_uploads = 1;
  StartServer(o);
  auto stub = RawStub();
  v1::PutDeltaRequest meta;
  meta.mutable_metadata()->set_task("a");
  meta.mutable_metadata()->set_total_bytes(1 << 20);

  grpc::ClientContext first_ctx;
  v1::PutDeltaResponse first_resp;
  auto first = stub->PutDelta(&first_ctx, &first_resp);
  ASSERT_TRUE(first->Write(meta));
  ASSERT_TRUE(WaitForMetric(kAdmittedUploads, 1));

  grpc::ClientContext second_ctx;
  v1::PutDeltaResponse second_resp;
  auto second = stub->PutDelta(&second_ctx, &second_resp);
  second->Write(meta);
  second->WritesDone();
  grpc::Status refused = second->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("server busy: 1 uploads in flight (limit --max-uploads=1)"));
  EXPECT_EQ(MetricValue(server_->MetricsText(),
                        "deltaserve_admission_rejected_total{kind=\"uploads\"} "),
            1);

  // The slot comes back when the first upload ends; the next one is admitted (and
  // then fails on its own merits: 0 of 1 MiB sent).
  first_ctx.TryCancel();
  first->Finish();
  ASSERT_TRUE(WaitForMetric(kAdmittedUploads, 0));
  grpc::ClientContext third_ctx;
  v1::PutDeltaResponse third_resp;
  auto third = stub->PutDelta(&third_ctx, &third_resp);
  third->Write(meta);
  third->WritesDone();
  grpc::Status truncated = third->Finish();
  EXPECT_EQ(truncated.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(truncated.error_message(), HasSubstr("truncated upload"));
}

TEST_F(ServerTest, StreamBeyondMaxStreamsIsRefusedAtOnce) {
  shape_.layers = 8;
  SetUp();
  ServerOptions o = DefaultOptions();
  o.max_streams = 1;
  StartServer(o);
  ASSERT_THAT(Client()->PushDeltaFile("t", MakeContainer("t", 7)).status(), IsOk());
  auto stub = SmallWindowStub();

  grpc::ClientContext first_ctx;
  v1::StreamWeightsRequest req;
  req.set_task("t");
  req.set_chunk_bytes(4096);
  auto first = stub->StreamWeights(&first_ctx, req);
  v1::StreamWeightsResponse msg;
  ASSERT_TRUE(first->Read(&msg));  // begin: admitted and set up
  EXPECT_EQ(MetricValue(server_->MetricsText(), kAdmittedStreams), 1);

  for (int kind = 0; kind < 2; ++kind) {  // StreamWeights, then StreamDelta
    grpc::ClientContext ctx;
    grpc::Status refused;
    if (kind == 0) {
      auto r = stub->StreamWeights(&ctx, req);
      while (r->Read(&msg)) {
      }
      refused = r->Finish();
    } else {
      v1::StreamDeltaRequest dreq;
      dreq.set_task("t");
      v1::StreamDeltaResponse dmsg;
      auto r = stub->StreamDelta(&ctx, dreq);
      while (r->Read(&dmsg)) {
      }
      refused = r->Finish();
    }
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << kind;
    EXPECT_THAT(refused.error_message(),
                HasSubstr("server busy: 1 streams in flight (limit --max-streams=1)"));
  }
  first_ctx.TryCancel();
  while (first->Read(&msg)) {
  }
  first->Finish();
  ASSERT_TRUE(WaitForMetric(kAdmittedStreams, 0));
  EXPECT_THAT(Client()->StreamDelta("t", tmp_.File("after.dds")).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(tmp_.File("after.dds")), ReadFileBytes(MakeContainer("t", 7)));
}

TEST_F(ServerTest, StreamDeltaSendsTheStoredContainerPieceByPiece) {
  shape_.layers = 6;
  SetUp();
  StartServer();
  const std::string path = MakeContainer("t", 3);
  ASSERT_THAT(Client()->PushDeltaFile("t", path).status(), IsOk());
  const std::string want = ReadFileBytes(path);
  auto stub = RawStub();
  grpc::ClientContext ctx;
  v1::StreamDeltaRequest req;
  req.set_task("t");
  req.set_chunk_bytes(4096);  // many chunks; pieces do not align with them
  auto reader = stub->StreamDelta(&ctx, req);
  v1::StreamDeltaResponse msg;
  std::string got;
  uint64_t xxh3 = 0;
  int messages = 0;
  while (reader->Read(&msg)) {
    ++messages;
    EXPECT_EQ(msg.offset(), got.size());
    EXPECT_LE(msg.data().size(), 4096u);
    EXPECT_EQ(msg.total_bytes(), want.size());
    if (messages == 1) xxh3 = msg.xxh3_64();
    EXPECT_EQ(msg.xxh3_64(), xxh3);  // the same in every message
    got += msg.data();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ(xxh3, XXH3_64bits(want.data(), want.size()));
  EXPECT_GT(messages, static_cast<int>(want.size() / 4096));
}

}  // namespace
}  // namespace deltaserve::server::testing

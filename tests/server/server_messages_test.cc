// What a user reads when a push is refused: early answers, before the whole upload.
#include "server/server.h"

#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::testing::HasSubstr;

TEST_F(ServerTest, ExistingTaskIsRefusedBeforeTheUpload) {
  StartServer();
  auto client = Client();
  const std::string path = MakeContainer("a", 7);
  ASSERT_THAT(client->PushDeltaFile("a", path).status(), IsOk());

  // Declare 64 MiB and keep writing 64 KiB chunks: the server answers on the metadata,
  // so a Write fails long before all 1024 chunks are sent.
  auto stub = RawStub();
  grpc::ClientContext ctx;
  v1::PutDeltaResponse resp;
  auto writer = stub->PutDelta(&ctx, &resp);
  v1::PutDeltaRequest req;
  req.mutable_metadata()->set_task("a");
  req.mutable_metadata()->set_total_bytes(64u << 20);
  ASSERT_TRUE(writer->Write(req));
  req.set_chunk(std::string(64 << 10, 'x'));
  int sent = 0;
  while (sent < 1024 && writer->Write(req)) ++sent;
  grpc::Status status = writer->Finish();
  EXPECT_LT(sent, 1024);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(status.error_message(), HasSubstr("task 'a' already exists"));
}

}  // namespace
}  // namespace deltaserve::server::testing

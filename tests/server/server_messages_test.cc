// What a user reads when a push is refused: early answers (before the whole upload) and
// messages without doubled prefixes.
#include "server/server.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(ServerTest, ExistingTaskIsRefusedBeforeTheUploadAndSaysOverwriteNotSet) {
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
  EXPECT_THAT(status.error_message(), HasSubstr("task 'a' already exists (overwrite not set)"));

  // The client's label is not doubled with the server's RPC name. (Other contents of
  // the same size: refused at the commit; the identical file would be OK, unchanged.)
  absl::Status again = client->PushDeltaFile("a", MakeContainer("b", 8)).status();
  EXPECT_THAT(again, StatusIs(absl::StatusCode::kAlreadyExists,
                              HasSubstr("already exists with other contents (overwrite not set)")));
  EXPECT_THAT(again.message(), Not(HasSubstr("PutDelta:")));
}

TEST_F(ServerTest, ListTasksErrorHasNoEmptyTenantLabel) {
  StartServer();
  // An open server: a caller naming a tenant that is not its own gets an error.
  absl::StatusOr<v1::ListTasksResponse> r = Client("", "")->ListTasks(std::string("x/y"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("ListTasks 'x/y'"));
}

TEST_F(ServerTest, PullFilterMatchingNoTensorIsNotFoundAndWritesNothing) {
  StartServer();
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("a", MakeContainer("a", 7)).status(), IsOk());
  client::PullOptions options;
  options.include = {"nomatch*"};
  const std::string out = tmp_.File("none.safetensors");
  EXPECT_THAT(client->PullWeights("a", out, options).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no tensor matches the filter")));
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".data"));
}

}  // namespace
}  // namespace deltaserve::server::testing

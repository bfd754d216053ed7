// Side files over real gRPC: PutDelta with side files, GetTask lists them, GetSideFile
// returns the bytes (in slices), pull to a directory writes them, limits and names are
// refused naming the file, a wrong checksum is DATA_LOSS, quota and delete count them.
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "codec/safetensors.h"
#include "server/server.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::v1 {
// How gtest prints a SideFileInfo in a failed expectation. Its own ProtobufPrinter builds
// the text with `"\n" + std::string`, which GCC 12 reports as a false -Wrestrict.
void PrintTo(const SideFileInfo& f, std::ostream* os) { *os << f.ShortDebugString(); }
}  // namespace deltaserve::v1

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

client::PushOptions WithSideFiles(std::vector<client::SideFileUpload> files) {
  client::PushOptions o;
  o.side_files = std::move(files);
  return o;
}

TEST_F(ServerTest, SideFilesRoundTripListedPulledAndDeleted) {
  StartServer();
  const std::string container = MakeContainer("t", 3);
  const uint64_t container_bytes = ReadFileBytes(container).size();
  const std::string config = R"({"model_type": "toy"})";
  std::string tokenizer(5 << 20, '\0');  // > one 4 MiB GetSideFile slice
  for (size_t i = 0; i < tokenizer.size(); ++i) tokenizer[i] = static_cast<char>(i * 7 + i / 4096);
  auto client = Client();
  ASSERT_OK_AND_ASSIGN(
      v1::TaskInfo pushed,
      client->PushDeltaFile("t", container,
                            WithSideFiles({{"config.json", config}, {"tokenizer.json", tokenizer}})));
  EXPECT_EQ(pushed.side_file_bytes(), config.size() + tokenizer.size());

  ASSERT_OK_AND_ASSIGN(v1::TaskInfo info, client->GetTask("t", false));
  ASSERT_THAT(info.side_files(), SizeIs(2));
  EXPECT_EQ(info.side_files(0).name(), "config.json");
  EXPECT_EQ(info.side_files(0).size_bytes(), config.size());
  EXPECT_EQ(info.side_files(0).xxh3_64(), XXH3_64bits(config.data(), config.size()));
  EXPECT_EQ(info.side_files(1).name(), "tokenizer.json");
  ASSERT_OK_AND_ASSIGN(std::string got_config, client->GetSideFile("t", "config.json"));
  EXPECT_EQ(got_config, config);
  ASSERT_OK_AND_ASSIGN(std::string tok, client->GetSideFile("t", "tokenizer.json"));
  EXPECT_TRUE(tok == tokenizer);
  EXPECT_THAT(client->GetSideFile("t", "vocab.json").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("vocab.json")));
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse list, client->ListTasks());
  EXPECT_EQ(list.stored_bytes(), container_bytes + config.size() + tokenizer.size());

  // A checkpoint directory gets them beside the shards.
  const std::string dir = tmp_.File("ckpt");
  ASSERT_OK_AND_ASSIGN(client::PullStats stats,
                       client->PullWeightsToDirectory("t", dir, 1 << 20));
  EXPECT_THAT(stats.side_files, ElementsAre("config.json", "tokenizer.json"));
  EXPECT_EQ(ReadFileBytes(dir + "/config.json"), config);
  EXPECT_TRUE(ReadFileBytes(dir + "/tokenizer.json") == tokenizer);
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));

  // Overwrite without side files drops them; delete frees everything.
  ASSERT_THAT(client->PushDeltaFile("t", container, WithSideFiles({{"a.txt", "a"}})).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  client::PushOptions overwrite = WithSideFiles({{"a.txt", "a"}});
  overwrite.overwrite = true;
  ASSERT_THAT(client->PushDeltaFile("t", container, overwrite).status(), IsOk());
  EXPECT_THAT(client->GetSideFile("t", "config.json").status(),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(uint64_t freed, client->DeleteTask("t"));
  EXPECT_EQ(freed, container_bytes + 1);
  EXPECT_THAT(client->GetSideFile("t", "a.txt").status(), StatusIs(absl::StatusCode::kNotFound));
}

// New-user trial, pull --out-dir over an existing Hugging Face directory:
// - a side file named .pull.data.tmp vanished (the pull's own scratch file had that
//   name): scratch files now live in the staging directory, where no side file can
//   collide with them;
// - the old single model.safetensors stayed beside the new shards and index, and
//   transformers loads it first (the old weights, silently): it is removed, like
//   shards of another count, while other files stay;
// - shards lacked "format": "pt", which transformers requires.
TEST_F(ServerTest, PullIntoAnExistingCheckpointDirectory) {
  StartServer();
  const std::string container = MakeContainer("t", 3);
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("t", container,
                                    WithSideFiles({{".pull.data.tmp", "mine"}, {"config.json", "{}"}}))
                  .status(),
              IsOk());
  const std::string dir = tmp_.File("hf");
  std::filesystem::create_directories(dir);
  for (const char* old : {"model.safetensors", "model-00001-of-00009.safetensors", "notes.txt"}) {
    std::ofstream(dir + "/" + old) << "old";
  }
  ASSERT_OK_AND_ASSIGN(client::PullStats stats, client->PullWeightsToDirectory("t", dir, 1ull << 40));
  EXPECT_THAT(stats.side_files, ElementsAre(".pull.data.tmp", "config.json"));
  EXPECT_EQ(ReadFileBytes(dir + "/.pull.data.tmp"), "mine");
  EXPECT_EQ(ReadFileBytes(dir + "/notes.txt"), "old");
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_THAT(names, ::testing::UnorderedElementsAre(
                         ".pull.data.tmp", "config.json", "notes.txt",
                         "model-00001-of-00001.safetensors", "model.safetensors.index.json"));
  ASSERT_OK_AND_ASSIGN(auto shard,
                       codec::ModelReader::Open(dir + "/model-00001-of-00001.safetensors"));
  EXPECT_EQ(shard->metadata().at("format"), "pt");
  ASSERT_OK_AND_ASSIGN(auto model, codec::ModelReader::Open(dir));
  EXPECT_EQ(model->metadata().at("format"), "pt");
}

TEST_F(ServerTest, SideFileLimitsNamesChecksumAndQuota) {
  ServerOptions o = DefaultOptions();
  o.auth = AuthConfig();
  const std::string container = MakeContainer("t", 4);
  const uint64_t container_bytes = ReadFileBytes(container).size();
  o.auth->tenants.push_back({"acme", {"tok"}, container_bytes + 1000});
  StartServer(o);
  auto client = Client("tok");
  EXPECT_THAT(client->PushDeltaFile("t", container,
                                    WithSideFiles({{"tokenizer.json", std::string(1001, 'x')}}))
                  .status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  const std::string huge((32 << 20) + 1, 'x');
  EXPECT_THAT(
      client->PushDeltaFile("t", container, WithSideFiles({{"tokenizer.json", huge}})).status(),
      StatusIs(absl::StatusCode::kResourceExhausted,
               AllOf(HasSubstr("side file 'tokenizer.json'"), HasSubstr("33554433 bytes"))));
  for (const char* bad : {"../config.json", "a/b.json", "..", "x.safetensors"}) {
    EXPECT_THAT(client->PushDeltaFile("t", container, WithSideFiles({{bad, "{}"}})).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("side file '")))
        << bad;
  }
  EXPECT_THAT(client->GetTask("t").status(), StatusIs(absl::StatusCode::kNotFound));

  // A wrong XXH3-64 (raw stub): DATA_LOSS naming the file, nothing stored.
  const std::string bytes = ReadFileBytes(container);
  auto stub = RawStub();
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer tok");
  v1::PutDeltaResponse response;
  auto writer = stub->PutDelta(&ctx, &response);
  v1::PutDeltaRequest req;
  v1::PutDeltaMetadata* meta = req.mutable_metadata();
  meta->set_task("t");
  meta->set_total_bytes(bytes.size());
  v1::SideFileDecl* f = meta->add_side_files();
  f->set_name("config.json");
  f->set_size_bytes(2);
  f->set_xxh3_64(12345);
  ASSERT_TRUE(writer->Write(req));
  req.set_side_file_chunk("{}");
  ASSERT_TRUE(writer->Write(req));
  req.set_chunk(bytes);
  ASSERT_TRUE(writer->Write(req));
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  EXPECT_EQ(Code(s), absl::StatusCode::kDataLoss) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("side file 'config.json'"));
  EXPECT_THAT(client->GetTask("t").status(), StatusIs(absl::StatusCode::kNotFound));

  // Within the quota (container + 1000 bytes of side files): stored.
  ASSERT_THAT(client
                  ->PushDeltaFile("t", container,
                                  WithSideFiles({{"tokenizer.json", std::string(1000, 'x')}}))
                  .status(),
              IsOk());
}

}  // namespace
}  // namespace deltaserve::server::testing

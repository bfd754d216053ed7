// deltactl's remote subcommands (client/deltactl_remote.cc), run as the real binary
// against the in-process fake DeltaService.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "codec/container.h"
#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/deltactl_test_util.h"
#include "tests/client/fake_delta_service.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::client {
namespace {

using ::deltaserve::client::testing::FakeService;
using ::deltaserve::client::testing::Fault;
using ::deltaserve::client::testing::MakeTensor;
using ::deltaserve::testing::DeltactlResult;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ReadBytes;
using ::deltaserve::testing::RunDeltactl;
using ::testing::HasSubstr;
using ::testing::Not;

class DeltactlRemoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_.tensors = {MakeTensor("w", codec::DType::kF16, {64, 32}, 1),
                        MakeTensor("b", codec::DType::kF32, {32}, 2)};
    int port = 0;
    server_ = testing::StartFakeServer(&service_, &port);
    ASSERT_NE(server_, nullptr);
    server_flag_ = "--server 127.0.0.1:" + std::to_string(port);
  }
  void TearDown() override { server_->Shutdown(); }
  DeltactlResult Run(const std::string& args) { return RunDeltactl(args, tmp_); }
  // The safetensors file of the service's tensors and metadata.
  std::vector<uint8_t> Want() {
    std::vector<codec::TensorView> views;
    for (const auto& t : service_.tensors) views.push_back(t.view());
    EXPECT_THAT(codec::WriteSafetensors(tmp_.File("want.safetensors"), views, service_.metadata),
                IsOk());
    return ReadBytes(tmp_.File("want.safetensors"));
  }

  FakeService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string server_flag_;
  ::deltaserve::testing::ScopedTempDir tmp_;
};

TEST_F(DeltactlRemoteTest, PushSendsTheFileWithToken) {
  const std::vector<uint8_t> container = testing::SmallContainer();
  {
    std::ofstream out(tmp_.File("d.dds"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(container.data()), container.size());
  }
  DeltactlResult r = Run("push " + server_flag_ + " --token tok-1 --task chat --overwrite --in " +
                         tmp_.File("d.dds"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("pushed " + tmp_.File("d.dds") + " as /chat: "));
  EXPECT_THAT(r.out, Not(HasSubstr("unchanged")));
  EXPECT_THAT(r.err, HasSubstr("push chat: 100%"));
  // The server found the identical container stored already: the user is told so.
  DeltactlResult same = Run("push " + server_flag_ + " --task same --in " + tmp_.File("d.dds"));
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_THAT(same.out, HasSubstr("already stored, unchanged (identical container and side "
                                  "files): " + tmp_.File("d.dds") + " as /same: "));
  r = Run("push " + server_flag_ + " --token tok-1 --task chat --overwrite --in " +
          tmp_.File("d.dds"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(service_.uploaded, container);
  EXPECT_TRUE(service_.last_put.overwrite());
  EXPECT_EQ(service_.last_authorization, "Bearer tok-1");
  // The container declares its base hash, so another base is refused before upload.
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader, codec::ContainerReader::Parse(container));
  const codec::BaseHash& hash = reader.header().base_hash;
  EXPECT_EQ(service_.last_put.base_hash(), std::string(hash.begin(), hash.end()));
}

// New-user trial: --timeout (60 s) bounds a whole upload, so a large container over a
// slow link failed with a bare "Deadline Exceeded". The error now names the flag.
TEST_F(DeltactlRemoteTest, PushPastTheDeadlineNamesTimeout) {
  const std::vector<uint8_t> container = testing::SmallContainer();
  {
    std::ofstream out(tmp_.File("d.dds"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(container.data()), container.size());
  }
  DeltactlResult r =
      Run("push " + server_flag_ + " --task slow --timeout 0.5 --in " + tmp_.File("d.dds"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("deltactl: DEADLINE_EXCEEDED: push 'slow': Deadline Exceeded "
                               "(--timeout 0.5 s bounds the whole upload; raise it for a large "
                               "container or a slow link)\n"));
}

TEST_F(DeltactlRemoteTest, PushOfAModelInsteadOfAContainerSaysToCompress) {
  const std::vector<uint8_t> want = Want();  // a safetensors file
  DeltactlResult r =
      Run("push " + server_flag_ + " --task chat --in " + tmp_.File("want.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: " + tmp_.File("want.safetensors") +
                               ": not a deltaserve delta container (.dds); make one"));
  EXPECT_TRUE(service_.uploaded.empty());
}

TEST_F(DeltactlRemoteTest, PullWritesVerifiedSafetensors) {
  DeltactlResult r = Run("pull " + server_flag_ + " --task chat --out " + tmp_.File("m.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("2 tensors, 4224 bytes"));
  EXPECT_EQ(ReadBytes(tmp_.File("m.safetensors")), Want());

  service_.fault = Fault::kBadChecksum;
  r = Run("pull " + server_flag_ + " --task chat --out " + tmp_.File("bad.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DATA_LOSS"));
  EXPECT_THAT(r.err, HasSubstr("checksum mismatch"));
  EXPECT_TRUE(ReadBytes(tmp_.File("bad.safetensors")).empty());
}

TEST_F(DeltactlRemoteTest, PullOverTwoStreamsResumesADroppedRange) {
  service_.unavailable_once_at = 1;  // "b": the second range drops after one chunk
  DeltactlResult r =
      Run("pull " + server_flag_ + " --task chat --streams 2 --out " + tmp_.File("m.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("2 tensors, 4224 bytes"));
  EXPECT_THAT(r.out, HasSubstr("2 streams, 1 range resumed"));
  EXPECT_EQ(ReadBytes(tmp_.File("m.safetensors")), Want());
  // A usage error naming the flag (it said "PullOptions.streams" once).
  r = Run("pull " + server_flag_ + " --task chat --streams 0 --out " + tmp_.File("x.safetensors"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--streams: want a number of streams in [1, 64], got '0'"));
  EXPECT_THAT(r.err, Not(HasSubstr("PullOptions")));
}

// New-user trial: a one-stream pull that resumed after a server restart said nothing of
// it, and said "first tensor after 0.000 s" (0: the resuming attempt's figure).
TEST_F(DeltactlRemoteTest, AResumedPullSaysSoAndWhenTheFirstTensorCame) {
  service_.unavailable_once_at = 0;  // "w": the stream drops after its first chunk
  DeltactlResult r = Run("pull " + server_flag_ + " --task chat --out " + tmp_.File("m.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(", resumed 1 time after a dropped stream), every tensor "
                               "checksum verified\n"));
  EXPECT_EQ(ReadBytes(tmp_.File("m.safetensors")), Want());
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("first tensor after ([0-9.]+) (ms|s)")))
      << r.out;
  EXPECT_GT(std::stod(m[1].str()), 0.0) << r.out;
  // Without a drop: no resume is mentioned.
  r = Run("pull " + server_flag_ + " --task chat --out " + tmp_.File("n.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("resumed")));
}

TEST_F(DeltactlRemoteTest, ServerAndTokenFromEnvironment) {
  // deltactl inherits this process's environment.
  ::setenv("DELTASERVE_SERVER", server_flag_.substr(std::string("--server ").size()).c_str(), 1);
  ::setenv("DELTASERVE_TOKEN", "tok-env", 1);
  DeltactlResult r = Run("info --task chat");
  ::unsetenv("DELTASERVE_SERVER");
  ::unsetenv("DELTASERVE_TOKEN");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("task:            chat"));
  EXPECT_EQ(service_.last_authorization, "Bearer tok-env");

  r = Run("info " + server_flag_ + " --task missing");
  EXPECT_EQ(r.exit_code, 1);
  // The command the user typed, not the RPC deltactl made (GetTask).
  EXPECT_THAT(r.err, HasSubstr("deltactl: NOT_FOUND: info 'missing'"));
}

TEST_F(DeltactlRemoteTest, FlagsWinOverTheEnvironment) {
  // The variables name an unreachable server and another token; every subcommand given
  // the flags must use the flags (a shared flag struct once let the variable win).
  ::setenv("DELTASERVE_SERVER", "127.0.0.1:1", 1);
  ::setenv("DELTASERVE_TOKEN", "tok-env", 1);
  ::setenv("DELTASERVE_TENANT", "env-tenant", 1);
  DeltactlResult info = Run("info " + server_flag_ +
                            " --token tok-flag --tenant flag-tenant "
                            "--task chat --timeout 5");
  const std::string info_auth = service_.last_authorization;
  DeltactlResult del = Run("delete " + server_flag_ + " --token tok-del --task chat --timeout 5");
  const std::string del_auth = service_.last_authorization;
  ::unsetenv("DELTASERVE_SERVER");
  ::unsetenv("DELTASERVE_TOKEN");
  ::unsetenv("DELTASERVE_TENANT");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr("tenant:          flag-tenant"));
  EXPECT_EQ(info_auth, "Bearer tok-flag");
  ASSERT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(del_auth, "Bearer tok-del");
}

TEST_F(DeltactlRemoteTest, PullToADirectoryOrAMissingParentFailsBeforeTheStream) {
  ASSERT_TRUE(std::filesystem::create_directory(tmp_.File("outdir")));
  DeltactlResult r = Run("pull " + server_flag_ + " --task chat --out " + tmp_.File("outdir"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: cannot write " + tmp_.File("outdir") +
                               ": it is a directory"));
  r = Run("pull " + server_flag_ + " --task chat --out " + tmp_.File("none/x.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND: cannot write " + tmp_.File("none/x.safetensors") +
                               ": no directory " + tmp_.File("none")));
  EXPECT_EQ(service_.last_stream.task(), "");  // no StreamWeights call was made
}

// New-user trial: `pull --task nope --out-dir newdir` failed NOT_FOUND and left an empty
// newdir behind. A directory the pull made is removed again; one that was there stays.
TEST_F(DeltactlRemoteTest, FailedPullToADirectoryRemovesTheDirectoryItMade) {
  const std::string made = tmp_.File("made"), there = tmp_.File("there");
  DeltactlResult r = Run("pull " + server_flag_ + " --task missing --out-dir " + made);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  EXPECT_FALSE(std::filesystem::exists(made));
  ASSERT_TRUE(std::filesystem::create_directory(there));
  r = Run("pull " + server_flag_ + " --task missing --out-dir " + there);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(std::filesystem::is_directory(there));
  r = Run("pull " + server_flag_ + " --task chat --out-dir " + made);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(made + "/model.safetensors.index.json"));
}

TEST_F(DeltactlRemoteTest, ListJson) {
  DeltactlResult r = Run("list " + server_flag_ + " --tenant acme --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"tenant\": \"acme\""));
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"chat\""));
  // 64-bit numbers print as JSON numbers, not protobuf's strings.
  EXPECT_THAT(r.out, HasSubstr("\"container_bytes\": 1234"));
}

TEST_F(DeltactlRemoteTest, AllTenantsListSaysWhichTenantIsListed) {
  DeltactlResult r = Run("list " + server_flag_ + " --all-tenants");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("note: the listing holds tasks of tenant 'default' only: with an "
                               "admin token that is every tenant that has tasks; a tenant token "
                               "lists only its own tenant"));
  // Each tenant has its own quota: an all-tenant listing states none (not "unlimited").
  EXPECT_THAT(r.out, Not(HasSubstr("quota")));
  EXPECT_THAT(r.out, HasSubstr(" bytes stored\n"));
  // One tenant's listing states its quota (the fake service's: 0 = unlimited).
  r = Run("list " + server_flag_ + " --tenant acme");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(" bytes stored, quota unlimited\n"));
}

TEST_F(DeltactlRemoteTest, DeleteJson) {
  DeltactlResult r = Run("delete " + server_flag_ + " --task chat --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"freed_bytes\": 1234"));
  EXPECT_THAT(r.out, HasSubstr("\"task\": \"chat\""));
}

TEST_F(DeltactlRemoteTest, PullJsonAndPushExistingHintsOverwrite) {
  DeltactlResult r =
      Run("pull " + server_flag_ + " --task chat --json --out " + tmp_.File("m.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"tensors\": 2"));
  EXPECT_THAT(r.out, HasSubstr("\"bytes\": 4224"));

  const std::vector<uint8_t> container = testing::SmallContainer();
  {
    std::ofstream out(tmp_.File("d.dds"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(container.data()), container.size());
  }
  r = Run("push " + server_flag_ + " --task exists --in " + tmp_.File("d.dds"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ALREADY_EXISTS"));
  EXPECT_THAT(r.err, HasSubstr("use --overwrite to replace it"));
}

TEST_F(DeltactlRemoteTest, UnreachableServerIsUnavailable) {
  DeltactlResult r = Run("get-base --server 127.0.0.1:1 --timeout 5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("deltactl: UNAVAILABLE: get-base"));
  EXPECT_THAT(r.err, HasSubstr("(is deltaserved running at 127.0.0.1:1? --server HOST[:PORT] or "
                               "DELTASERVE_SERVER sets the address)"));
}

}  // namespace
}  // namespace deltaserve::client

// deltaserved under operational faults (issue 12): online backup, a client keepalive
// that pings while its reader pauses, readers that stop reading, and a low descriptor
// limit at start.
#include "server/server.h"

#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "storage/store.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

// Reproduction 4: an admin takes a consistent copy of the live store; it opens as a
// store (same bytes) on the same filesystem and on another one (a tmpfs: copied).
TEST_F(ServerTest, CheckpointIsARestorableOnlineBackup) {
  ServerOptions o = DefaultOptions();
  AuthConfig auth;
  auth.tenants.push_back({"acme", {"tok-acme"}, 0});
  auth.admin_tokens = {"tok-admin"};
  o.auth = auth;
  StartServer(o);
  auto acme = Client("tok-acme");
  ASSERT_THAT(acme->PushDeltaFile("t", MakeContainer("t", 3)).status(), IsOk());
  EXPECT_THAT(acme->Checkpoint(tmp_.File("denied")).status(),
              StatusIs(absl::StatusCode::kPermissionDenied));
  auto admin = Client("tok-admin");
  EXPECT_THAT(admin->Checkpoint("relative/dir").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));

  std::vector<std::string> dirs = {tmp_.File("backup")};
  const std::string mnt = tmp_.File("mnt");
  std::filesystem::create_directories(mnt);
  const bool tmpfs = mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64m") == 0;
  if (tmpfs) dirs.push_back(mnt + "/backup");
  for (const std::string& dir : dirs) {
    ASSERT_OK_AND_ASSIGN(v1::AdminCheckpointResponse r, admin->Checkpoint(dir));
    EXPECT_EQ(r.dir(), dir);
    EXPECT_GT(r.files(), 0u);
    EXPECT_THAT(admin->Checkpoint(dir).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("already exists")));
    storage::StoreOptions so;
    so.path = dir;
    so.create_if_missing = false;
    ASSERT_OK_AND_ASSIGN(auto copy, storage::DeltaStore::Open(so));
    ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> bytes, copy->AssembleContainer("acme", "t"));
    EXPECT_EQ(bytes, ContainerBytes("t", 3)) << dir;
  }
  if (tmpfs) umount2(mnt.c_str(), MNT_DETACH);
  if (!tmpfs) GTEST_SKIP() << "checked on the same filesystem only (mounting a tmpfs needs root)";
}

// Streams a task with a client that pings every second and pauses reading: for 5.5 s
// (5 pings: the first sets the clock, the next ones are strikes when too frequent, and
// gRPC closes the connection after more than 2 strikes), or with `until_dropped` until
// the connection is gone (at most 30 s; the fourth ping is due ~4 s in, later on a
// loaded machine, whose late timers a fixed pause could miss).
grpc::Status PausedPullWithKeepalive(const std::string& target, bool until_dropped) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::DeltaService::NewStub(channel);
  grpc::ClientContext ctx;
  v1::StreamWeightsRequest req;
  req.set_task("t");
  req.set_chunk_bytes(4096);
  auto reader = stub->StreamWeights(&ctx, req);
  v1::StreamWeightsResponse msg;
  if (!reader->Read(&msg)) return reader->Finish();
  if (until_dropped) {
    for (absl::Time end = absl::Now() + absl::Seconds(30);
         channel->GetState(false) == GRPC_CHANNEL_READY && absl::Now() < end;) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  } else {
    absl::SleepFor(absl::Milliseconds(5500));
  }
  while (reader->Read(&msg)) {
  }
  return reader->Finish();
}

// Reproduction 6: the server's ping policy tolerates a client keepalive (scaled down:
// the client pings every 1 s, the server allows every 0.5 s). The control with a
// 5-minute minimum (gRPC's default) gets GOAWAY too_many_pings and loses the stream.
TEST_F(ServerTest, ClientKeepaliveDuringAPausedReadIsTolerated) {
  ServerOptions o = DefaultOptions();
  o.min_client_ping_interval = absl::Milliseconds(500);
  StartServer(o);
  ASSERT_THAT(Client()->PushDeltaFile("t", MakeContainer("t", 4)).status(), IsOk());
  grpc::Status s = PausedPullWithKeepalive(target(), /*until_dropped=*/false);
  EXPECT_TRUE(s.ok()) << s.error_message();

  o.min_client_ping_interval = absl::Minutes(5);
  StartServer(o);
  s = PausedPullWithKeepalive(target(), /*until_dropped=*/true);
  EXPECT_EQ(Code(s), absl::StatusCode::kUnavailable) << s.error_message();
}

// Reproduction 7: a reader that stops reading shows in deltaserve_streams_stalled, and
// the write timeout ends its stream, counted DEADLINE_EXCEEDED; the client, which reads
// nothing more, gets DEADLINE_EXCEEDED with the reason (not CANCELLED). Both streaming
// methods.
//
// Two tests, so that no check races a timer: the gauge is read from a server without a
// write timeout (a stalled stream stays stalled until its client cancels it; it used to
// be polled in a 2.5 s window before a 3 s timeout ended the stream, a window that a
// loaded machine's late housekeeping round could miss), the timeout from another.
class StalledReaderTest : public ServerTest {
 protected:
  void SetUp() override {
    shape_.layers = 1;
    shape_.hidden = 512;
    ServerTest::SetUp();
  }

  // A stream of `method` ("StreamWeights" or "StreamDelta") of task "t" in 4 KiB chunks
  // on `stub` (SmallWindowStub) whose client takes one message, then stops reading.
  // Finish() reads what is left (nothing once the server has ended the stream) and
  // returns the status.
  class Stalled {
   public:
    Stalled(std::unique_ptr<v1::DeltaService::Stub> stub, const std::string& method)
        : stub_(std::move(stub)) {
      if (method == "StreamWeights") {
        weights_ = stub_->StreamWeights(&ctx_, MakeRequest<v1::StreamWeightsRequest>());
        first_ = ReadOne(*weights_);
      } else {
        delta_ = stub_->StreamDelta(&ctx_, MakeRequest<v1::StreamDeltaRequest>());
        first_ = ReadOne(*delta_);
      }
    }
    bool first() const { return first_; }
    void Cancel() { ctx_.TryCancel(); }
    grpc::Status Finish() { return weights_ != nullptr ? ReadAll(*weights_) : ReadAll(*delta_); }

   private:
    std::unique_ptr<v1::DeltaService::Stub> stub_;
    grpc::ClientContext ctx_;
    std::unique_ptr<grpc::ClientReader<v1::StreamWeightsResponse>> weights_;
    std::unique_ptr<grpc::ClientReader<v1::StreamDeltaResponse>> delta_;
    bool first_ = false;

    template <typename R>
    static R MakeRequest() {
      R req;
      req.set_task("t");
      req.set_chunk_bytes(4096);
      return req;
    }
    template <typename Response>
    static bool ReadOne(grpc::ClientReader<Response>& reader) {
      Response msg;
      return reader.Read(&msg);
    }
    template <typename Response>
    static grpc::Status ReadAll(grpc::ClientReader<Response>& reader) {
      for (Response msg; reader.Read(&msg);) {
      }
      return reader.Finish();
    }
  };
};

TEST_F(StalledReaderTest, StalledReadersAreCountedUntilTheyGo) {
  ServerOptions o = DefaultOptions();
  o.stall_after = absl::Milliseconds(500);
  o.write_timeout = absl::ZeroDuration();  // never: the streams stay stalled
  StartServer(o);
  ASSERT_THAT(Client()->PushDeltaFile("t", MakeContainer("t", 5)).status(), IsOk());
  ASSERT_GT(ContainerBytes("t", 5).size(), 256u << 10);  // far more than the 16 KiB window
  Stalled weights(SmallWindowStub(), "StreamWeights");
  Stalled delta(SmallWindowStub(), "StreamDelta");
  ASSERT_TRUE(weights.first());
  ASSERT_TRUE(delta.first());
  EXPECT_TRUE(WaitForMetric("deltaserve_streams_stalled ", 2));
  weights.Cancel();
  delta.Cancel();
  EXPECT_EQ(Code(weights.Finish()), absl::StatusCode::kCancelled);
  EXPECT_EQ(Code(delta.Finish()), absl::StatusCode::kCancelled);
  EXPECT_TRUE(WaitForMetric("deltaserve_streams_stalled ", 0));
  // No write timeout: nothing ended them but the client.
  EXPECT_THAT(WaitForStreamsDone(), Not(HasSubstr("code=\"DEADLINE_EXCEEDED\"")));
}

TEST_F(StalledReaderTest, TheWriteTimeoutEndsAStalledStream) {
  ServerOptions o = DefaultOptions();
  o.stall_after = absl::Milliseconds(500);
  o.write_timeout = absl::Seconds(2);
  StartServer(o);
  ASSERT_THAT(Client()->PushDeltaFile("t", MakeContainer("t", 5)).status(), IsOk());
  for (const std::string method : {"StreamWeights", "StreamDelta"}) {
    SCOPED_TRACE(method);
    Stalled stalled(SmallWindowStub(), method);
    ASSERT_TRUE(stalled.first());
    // The server ends the stream; the client, which reads nothing more, is told why.
    EXPECT_TRUE(WaitForMetric(absl::StrCat("deltaserve_requests_total{code=\"DEADLINE_EXCEEDED\","
                                          "method=\"", method, "\"} "),
                             1));
    const grpc::Status status = stalled.Finish();
    EXPECT_EQ(Code(status), absl::StatusCode::kDeadlineExceeded) << status.error_message();
    EXPECT_EQ(status.error_message(),
              absl::StrCat(method, ": the client read nothing for 2s (--write-timeout-seconds)"));
  }
  EXPECT_TRUE(WaitForMetric("deltaserve_streams_stalled ", 0));
}

uint64_t FreeBytes(const std::string& path) {
  struct statvfs st {};
  if (statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

// Reproduction 1's gauges on a 64 MiB tmpfs: deltaserve_store_free_bytes follows the
// filesystem's free space through a push, a delete and another process filling the
// disk; deltaserve_store_writes_blocked turns 1 below the reserve (and a push is
// refused), 0 again once space is freed.
TEST_F(ServerTest, StoreGaugesFollowTheDisk) {
  const std::string mnt = tmp_.File("mnt");
  std::filesystem::create_directories(mnt);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  }
  ServerOptions o = DefaultOptions();
  o.db_path = mnt + "/db";
  o.store.min_free_bytes = 16 << 20;
  o.store.write_buffer_bytes = 1 << 20;
  StartServer(o);
  // The gauge is refreshed every second; it must match statvfs (within 64 KiB: RocksDB
  // may write its info log meanwhile). Up to 30 s: a loaded machine's housekeeping
  // round comes late.
  auto gauge_matches_disk = [&] {
    for (absl::Time end = absl::Now() + absl::Seconds(30); absl::Now() < end;) {
      const double gauge = MetricValue(server_->MetricsText(), "deltaserve_store_free_bytes ");
      if (std::abs(gauge - static_cast<double>(FreeBytes(mnt))) <= 64 << 10) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  };
  ASSERT_TRUE(gauge_matches_disk());
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_store_writes_blocked "), 0);

  const uint64_t before_push = FreeBytes(mnt);
  const std::string container = MakeContainer("t", 9);
  const uint64_t size = ContainerBytes("t", 9).size();
  ASSERT_THAT(Client()->PushDeltaFile("t", container).status(), IsOk());
  EXPECT_LE(FreeBytes(mnt), before_push - size);  // at least the log record
  EXPECT_TRUE(gauge_matches_disk()) << "after a push";
  ASSERT_THAT(Client()->DeleteTask("t").status(), IsOk());
  EXPECT_TRUE(gauge_matches_disk()) << "after a delete";

  // Another process leaves 8 MiB free, under the 16 MiB reserve.
  const std::string filler = mnt + "/filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string mib(1 << 20, 'x');
    while (FreeBytes(mnt) > (8u << 20)) {
      out.write(mib.data(), mib.size());
      out.flush();
    }
  }
  EXPECT_TRUE(WaitForMetric("deltaserve_store_writes_blocked ", 1));
  EXPECT_TRUE(gauge_matches_disk()) << "disk filled";
  EXPECT_THAT(Client()->PushDeltaFile("t", container).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("disk full")));
  std::filesystem::remove(filler);
  EXPECT_TRUE(WaitForMetric("deltaserve_store_writes_blocked ", 0));
  EXPECT_TRUE(gauge_matches_disk()) << "filler removed";
  EXPECT_THAT(Client()->PushDeltaFile("t", container).status(), IsOk());
  StopServer();
  umount2(mnt.c_str(), MNT_DETACH);
}

// Reproduction 2: started with a low soft RLIMIT_NOFILE, the server raises it to the
// hard limit and publishes it.
TEST_F(ServerTest, StartRaisesTheDescriptorSoftLimit) {
  struct rlimit before {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  if (before.rlim_max < 512) GTEST_SKIP() << "hard limit " << before.rlim_max << " too low";
  struct rlimit low = before;
  low.rlim_cur = 256;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  StartServer();
  struct rlimit now {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &now), 0);
  EXPECT_EQ(now.rlim_cur, before.rlim_max);
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_open_files_limit "),
            static_cast<double>(before.rlim_max));
  setrlimit(RLIMIT_NOFILE, &before);
}

}  // namespace
}  // namespace deltaserve::server::testing

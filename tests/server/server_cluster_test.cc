// deltaserved in cluster mode, in-process: two replicas over one Swift bucket and one
// etcd (tests/cluster/run_live_tests.sh), real gRPC. Skips without the cluster.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/cluster/live_env.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

// How long a wait for the watch or the metrics may take before the test fails: they
// take milliseconds on an idle machine, seconds on a loaded 2-core CI runner.
constexpr absl::Duration kWaitLimit = absl::Seconds(30);

class ClusterServerTest : public testing::ServerTest {
 protected:
  // Replica options: the fixture's, in cluster mode, with DB `db`.
  ServerOptions ReplicaOptions(const std::string& db) const {
    ServerOptions o = DefaultOptions();
    o.db_path = o.db_path + "-" + db;
    cluster::ClusterOptions c;
    c.s3 = cluster::testing::LiveS3();
    c.etcd_endpoint = cluster::testing::Env("ETCD_ENDPOINT");
    c.etcd_prefix = "server-test-" + std::to_string(::getpid()) + "-" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
    o.cluster = c;
    return o;
  }
  std::unique_ptr<client::DeltaClient> ClientOf(const Server& s) {
    client::ClientOptions o;
    o.target = "127.0.0.1:" + std::to_string(s.port());
    auto c = client::DeltaClient::Open(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(c).value() : nullptr;
  }
};

TEST_F(ClusterServerTest, ReplicasShareTasksThroughTheObjectStore) {
  DS_SKIP_WITHOUT_CLUSTER();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> a, Server::Start(ReplicaOptions("a")));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> b, Server::Start(ReplicaOptions("b")));
  auto ca = ClientOf(*a), cb = ClientOf(*b);
  std::string container = MakeContainer("ft", 7);
  std::vector<uint8_t> bytes = ContainerBytes("ft", 7);
  ASSERT_THAT(ca->PushDeltaFile("task", container).status(), IsOk());
  EXPECT_THAT(cb->PushDeltaFile("task", container).status(), IsOk());  // identical: unchanged
  EXPECT_THAT(cb->PushDeltaFile("task", MakeContainer("ft2", 8)).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("exists in the cluster")));
  // b never held the task before its (unchanged) push filled it; pull from both.
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> from_b, cb->FetchDelta("task"));
  EXPECT_EQ(from_b, bytes);
  std::string offline = OfflineDecode(container);
  ASSERT_THAT(ca->PullWeights("task", tmp_.File("a.safetensors")).status(), IsOk());
  ASSERT_THAT(cb->PullWeights("task", tmp_.File("b.safetensors")).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(tmp_.File("a.safetensors")), ReadFileBytes(offline));
  EXPECT_EQ(ReadFileBytes(tmp_.File("b.safetensors")), ReadFileBytes(offline));
  // Lists agree.
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse la, ca->ListTasks());
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse lb, cb->ListTasks());
  EXPECT_TRUE(MessageDifferencer::Equals(la, lb)) << la.DebugString() << lb.DebugString();
  ASSERT_EQ(la.tasks_size(), 1);
  EXPECT_EQ(la.tasks(0).container_bytes(), bytes.size());
  EXPECT_GT(la.tasks(0).num_tensors(), 0u);
  // A third replica, empty, serves the task on first request.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> c, Server::Start(ReplicaOptions("c")));
  auto cc = ClientOf(*c);
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> from_c, cc->FetchDelta("task"));
  EXPECT_EQ(from_c, bytes);
  // Delete on a: gone on b and c once their watch reports it.
  ASSERT_THAT(ca->DeleteTask("task").status(), IsOk());
  absl::Time deadline = absl::Now() + kWaitLimit;
  while (absl::Now() < deadline && (cb->GetTask("task").ok() || cc->GetTask("task").ok())) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(cb->GetTask("task").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(cc->FetchDelta("task").status(), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse after, cc->ListTasks());
  EXPECT_EQ(after.tasks_size(), 0);
}

// A cluster task carries what a single-node one does: ListTasks and GetTask show the
// header metadata and the side files (names, sizes, XXH3) on every replica, equal to a
// single-node server's listing of the same push; an empty replica serves GetSideFile
// and a pull into a directory writes them; an overwrite with other side files is seen
// by a replica that had cached the old version.
TEST_F(ClusterServerTest, SideFilesAndMetadataMatchSingleNodeOnEveryReplica) {
  DS_SKIP_WITHOUT_CLUSTER();
  StartServer();  // single node, for reference
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> a, Server::Start(ReplicaOptions("a")));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> b, Server::Start(ReplicaOptions("b")));
  auto single = Client(), ca = ClientOf(*a), cb = ClientOf(*b);
  const std::string container = MakeContainer("ft", 7);
  const std::string tokenizer(300000, 't');  // several GetSideFile slices
  client::PushOptions push;
  push.side_files = {{"config.json", R"({"model_type": "llama"})"},
                     {"tokenizer.json", tokenizer},
                     {"empty.txt", ""}};
  ASSERT_THAT(single->PushDeltaFile("task", container, push).status(), IsOk());
  ASSERT_THAT(ca->PushDeltaFile("task", container, push).status(), IsOk());
  // Identical container and side files: unchanged (not AlreadyExists).
  ASSERT_THAT(cb->PushDeltaFile("task", container, push).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse ls, single->ListTasks());
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse la, ca->ListTasks());
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse lb, cb->ListTasks());
  ASSERT_EQ(ls.tasks_size(), 1);
  ASSERT_EQ(la.tasks_size(), 1);
  EXPECT_FALSE(ls.tasks(0).metadata().empty());
  EXPECT_EQ(ls.tasks(0).side_files_size(), 3);
  // Equal but for the push time, and the content hash that cluster listings (task
  // pointers) do not carry yet (proto: TaskInfo.container_xxh3_64).
  auto same_but_time = [](v1::TaskInfo x, v1::TaskInfo y) {
    x.clear_created_unix();
    y.clear_created_unix();
    x.clear_container_xxh3_64();
    y.clear_container_xxh3_64();
    return MessageDifferencer::Equals(x, y);
  };
  EXPECT_TRUE(same_but_time(ls.tasks(0), la.tasks(0))) << ls.DebugString() << la.DebugString();
  EXPECT_TRUE(MessageDifferencer::Equals(la, lb)) << la.DebugString() << lb.DebugString();
  EXPECT_EQ(ls.stored_bytes(), la.stored_bytes());
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo gs, single->GetTask("task"));
  // c: empty until this GetTask, which fills it (container and side files).
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> c, Server::Start(ReplicaOptions("c")));
  auto cc = ClientOf(*c);
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo gc, cc->GetTask("task"));
  EXPECT_TRUE(same_but_time(gs, gc)) << gs.DebugString() << gc.DebugString();
  ASSERT_OK_AND_ASSIGN(std::string tok, cc->GetSideFile("task", "tokenizer.json"));
  EXPECT_EQ(tok, tokenizer);
  EXPECT_THAT(cc->GetSideFile("task", "nope.json").status(), StatusIs(absl::StatusCode::kNotFound));
  // A pull into a directory on a fresh replica writes the side files beside the weights.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> d, Server::Start(ReplicaOptions("d")));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> written,
                       ClientOf(*d)->WriteSideFiles("task", tmp_.File("pulled")));
  EXPECT_EQ(written.size(), 3u);
  EXPECT_EQ(ReadFileBytes(tmp_.File("pulled") + "/config.json"), R"({"model_type": "llama"})");
  EXPECT_EQ(ReadFileBytes(tmp_.File("pulled") + "/tokenizer.json"), tokenizer);
  EXPECT_EQ(ReadFileBytes(tmp_.File("pulled") + "/empty.txt"), "");
  // Overwrite on a with the same container and another config: c (which cached the old
  // version) serves the new one once its watch has seen it.
  absl::SleepFor(absl::Seconds(1));  // another push second
  client::PushOptions v2;
  v2.overwrite = true;
  v2.side_files = {{"config.json", R"({"model_type": "qwen2"})"}};
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo replaced, ca->PushDeltaFile("task", container, v2));
  EXPECT_EQ(replaced.side_files_size(), 1);
  absl::StatusOr<std::string> cfg;
  for (absl::Time end = absl::Now() + kWaitLimit; absl::Now() < end;) {
    cfg = cc->GetSideFile("task", "config.json");
    if (cfg.ok() && *cfg == R"({"model_type": "qwen2"})") break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_THAT(cfg.status(), IsOk());
  EXPECT_EQ(*cfg, R"({"model_type": "qwen2"})");
  EXPECT_THAT(cc->GetSideFile("task", "tokenizer.json").status(),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse lc, cc->ListTasks());
  ASSERT_EQ(lc.tasks_size(), 1);
  ASSERT_EQ(lc.tasks(0).side_files_size(), 1);
  EXPECT_EQ(lc.tasks(0).side_files(0).size_bytes(), 23u);
}

// A fill that hangs on the object store holds a fill thread only: with one decode
// worker and three calls on a missing task stuck in its fill (GetTask on the control
// pool, StreamWeights set up on the control pool, StreamDelta on the worker pool), a
// cached task is still listed, described and pulled (decoded on the one worker), and
// the stuck calls finish once the object store answers again. Before fills had their
// own pool, the stuck calls held both control threads and the worker.
TEST_F(ClusterServerTest, AHangingFillHoldsNeitherDecodeWorkersNorControlThreads) {
  DS_SKIP_WITHOUT_CLUSTER();
  const std::string forwarder = cluster::testing::Env("S3_FORWARDER_ENDPOINT");
  const int forwarder_pid = std::atoi(cluster::testing::Env("S3_FORWARDER_PID").c_str());
  if (forwarder.empty() || forwarder_pid <= 0) {
    GTEST_SKIP() << "no stoppable S3 forwarder (S3_FORWARDER_ENDPOINT/_PID): "
                    "run tests/cluster/run_live_tests.sh";
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> a, Server::Start(ReplicaOptions("a")));
  ServerOptions bo = ReplicaOptions("b");
  bo.workers = 1;
  bo.cluster->s3.endpoint = forwarder;
  bo.cluster->s3.request_timeout_s = 60;  // a call stuck by a regression fails in a minute
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> b, Server::Start(bo));
  auto ca = ClientOf(*a);
  const std::string x = MakeContainer("ftx", 7), y = MakeContainer("fty", 8);
  ASSERT_THAT(ca->PushDeltaFile("x", x).status(), IsOk());
  ASSERT_THAT(ca->PushDeltaFile("y", y).status(), IsOk());
  auto cb = ClientOf(*b);
  ASSERT_THAT(cb->GetTask("y").status(), IsOk());  // y is cached on b
  ASSERT_EQ(::kill(forwarder_pid, SIGSTOP), 0);
  std::atomic<int> stuck_done{0};
  absl::Status got_info, got_pull, got_delta;
  std::vector<std::thread> stuck;
  auto start = [&](absl::Status* out, std::function<absl::Status(client::DeltaClient&)> call) {
    stuck.emplace_back([&, out, call] {
      auto c = ClientOf(*b);
      *out = call(*c);
      ++stuck_done;
    });
  };
  start(&got_info, [](client::DeltaClient& c) { return c.GetTask("x").status(); });
  start(&got_pull, [&](client::DeltaClient& c) {
    return c.PullWeights("x", tmp_.File("x.safetensors")).status();
  });
  start(&got_delta, [](client::DeltaClient& c) { return c.FetchDelta("x").status(); });
  absl::SleepFor(absl::Milliseconds(500));  // all three wait in x's fill
  EXPECT_THAT(cb->ListTasks().status(), IsOk());
  EXPECT_THAT(cb->GetTask("y").status(), IsOk());
  EXPECT_THAT(cb->PullWeights("y", tmp_.File("y.safetensors")).status(), IsOk());
  const int done_while_stalled = stuck_done.load();
  ASSERT_EQ(::kill(forwarder_pid, SIGCONT), 0);
  for (std::thread& t : stuck) t.join();
  EXPECT_EQ(done_while_stalled, 0) << "a call on x finished while the object store hung";
  EXPECT_THAT(got_info, IsOk());
  EXPECT_THAT(got_pull, IsOk());
  EXPECT_THAT(got_delta, IsOk());
  EXPECT_EQ(ReadFileBytes(tmp_.File("y.safetensors")), ReadFileBytes(OfflineDecode(y)));
  EXPECT_EQ(ReadFileBytes(tmp_.File("x.safetensors")), ReadFileBytes(OfflineDecode(x)));
}

// The cluster cache metrics, scraped over HTTP from /metrics: an empty replica's first
// fetch is a miss that fills the container's bytes, the next one a hit; the watch lag
// of a push made on another replica is set; health is SERVING (etcd and S3 answer).
TEST_F(ClusterServerTest, CacheMetricsCountHitsMissesAndFills) {
  DS_SKIP_WITHOUT_CLUSTER();
  const absl::Time test_start = absl::Now();
  ServerOptions ao = ReplicaOptions("a"), bo = ReplicaOptions("b");
  bo.metrics_listen = "127.0.0.1:0";
  bo.agent_listen = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> a, Server::Start(ao));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> b, Server::Start(bo));
  std::vector<uint8_t> bytes = ContainerBytes("ft", 7);
  ASSERT_THAT(ClientOf(*a)->PushDeltaFile("task", MakeContainer("ft", 7)).status(), IsOk());
  auto cb = ClientOf(*b);
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> first, cb->FetchDelta("task"));
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> second, cb->FetchDelta("task"));
  EXPECT_EQ(first, bytes);
  EXPECT_EQ(second, bytes);
  // Published by the housekeeping thread once a second.
  auto scrape = [&](const std::string& prefix) {
    return MetricValue(FetchMetricsHttp(b->metrics_port()), prefix);
  };
  for (absl::Time end = absl::Now() + kWaitLimit;
       scrape("deltaserve_cluster_cache_misses_total ") != 1 && absl::Now() < end;) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(scrape("deltaserve_cluster_cache_misses_total "), 1);
  EXPECT_GE(scrape("deltaserve_cluster_cache_hits_total "), 1);
  EXPECT_EQ(scrape("deltaserve_cluster_fill_bytes_total "), static_cast<double>(bytes.size()));
  EXPECT_EQ(scrape("deltaserve_cluster_cached_bytes "), static_cast<double>(bytes.size()));
  EXPECT_GT(scrape("deltaserve_cluster_fill_seconds_total "), 0);
  EXPECT_EQ(scrape("deltaserve_cluster_cache_evictions_total "), 0);
  EXPECT_EQ(scrape("deltaserve_cluster_object_store_errors_total "), 0);
  const double lag = scrape("deltaserve_cluster_watch_lag_seconds ");
  EXPECT_GE(lag, 0);
  EXPECT_LE(lag, absl::ToDoubleSeconds(absl::Now() - test_start));  // set, within the test's life
  EXPECT_EQ(scrape("deltaserve_serving "), 1);
  EXPECT_EQ(testing::TcpExchange(b->agent_port()), "up ready\n");
}

}  // namespace
}  // namespace deltaserve::server

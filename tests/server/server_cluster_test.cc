// deltaserved in cluster mode, in-process: two replicas over one Swift bucket and one
// etcd (tests/cluster/run_live_tests.sh), real gRPC. Skips without the cluster.
#include <unistd.h>

#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/cluster/live_env.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

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
  EXPECT_EQ(la.SerializeAsString(), lb.SerializeAsString());
  ASSERT_EQ(la.tasks_size(), 1);
  EXPECT_EQ(la.tasks(0).container_bytes(), bytes.size());
  EXPECT_GT(la.tasks(0).num_tensors(), 0u);
  // A third replica, empty, serves the task on first request.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> c, Server::Start(ReplicaOptions("c")));
  auto cc = ClientOf(*c);
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> from_c, cc->FetchDelta("task"));
  EXPECT_EQ(from_c, bytes);
  // Side files are refused in cluster mode.
  client::PushOptions with_side;
  with_side.side_files.push_back({"tokenizer.json", "{}"});
  EXPECT_THAT(ca->PushDeltaFile("other", container, with_side).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cluster mode")));
  // Delete on a: gone on b and c once their watch reports it.
  ASSERT_THAT(ca->DeleteTask("task").status(), IsOk());
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < deadline && (cb->GetTask("task").ok() || cc->GetTask("task").ok())) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(cb->GetTask("task").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(cc->FetchDelta("task").status(), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse after, cc->ListTasks());
  EXPECT_EQ(after.tasks_size(), 0);
}

// The cluster cache metrics, scraped over HTTP from /metrics: an empty replica's first
// fetch is a miss that fills the container's bytes, the next one a hit; the watch lag
// of a push made on another replica is set; health is SERVING (etcd and S3 answer).
TEST_F(ClusterServerTest, CacheMetricsCountHitsMissesAndFills) {
  DS_SKIP_WITHOUT_CLUSTER();
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
  for (absl::Time end = absl::Now() + absl::Seconds(5);
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
  EXPECT_LT(lag, 5);  // set (not -1, absent) and within the test's lifetime
  EXPECT_EQ(scrape("deltaserve_serving "), 1);
  EXPECT_EQ(testing::TcpExchange(b->agent_port()), "up ready\n");
}

}  // namespace
}  // namespace deltaserve::server

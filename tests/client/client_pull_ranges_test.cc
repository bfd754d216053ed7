// Parallel pulls over tensor ranges (PullOptions::streams), against the fake service.
#include <algorithm>
#include <map>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "client/client.h"
#include "client/internal/pull_ranges.h"
#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/client/fake_delta_service.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::client {
namespace {

using ::deltaserve::client::testing::FakeService;
using ::deltaserve::client::testing::Fault;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ReadFile;
using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(CutTensorRangesTest, CutsWhereATensorsMiddleReachesTheShare) {
  const std::vector<uint64_t> bytes = {100, 10, 10, 10, 10, 60};
  EXPECT_THAT(CutTensorRanges(bytes, 0, 1), ElementsAre(Pair(0u, 6u)));
  // Share 100: tensor 1's middle (105) reaches it.
  EXPECT_THAT(CutTensorRanges(bytes, 0, 2), ElementsAre(Pair(0u, 2u), Pair(2u, 6u)));
  // Shares 66.7 and 133.3: middles 105 and 135.
  EXPECT_THAT(CutTensorRanges(bytes, 0, 3), ElementsAre(Pair(0u, 2u), Pair(2u, 5u), Pair(5u, 6u)));
  // More streams than tensors: one tensor each.
  EXPECT_THAT(CutTensorRanges(bytes, 4, 4), ElementsAre(Pair(4u, 5u), Pair(5u, 6u)));
  EXPECT_THAT(CutTensorRanges(bytes, 6, 2), ElementsAre());
}

TEST(CutTensorRangesTest, LeavesOneTensorForEveryRangeToCome) {
  const std::vector<uint64_t> bytes = {0, 0, 0, 100};
  EXPECT_THAT(CutTensorRanges(bytes, 0, 3), ElementsAre(Pair(0u, 2u), Pair(2u, 3u), Pair(3u, 4u)));
}

class PullRangesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_.tensors = testing::FourTensors();
    int port = 0;
    server_ = testing::StartFakeServer(&service_, &port);
    ASSERT_NE(server_, nullptr);
    ClientOptions options;
    options.target = "127.0.0.1:" + std::to_string(port);
    options.deadline = absl::Seconds(10);
    options.stream_deadline = absl::Seconds(30);
    ASSERT_OK_AND_ASSIGN(client_, DeltaClient::Open(options));
    std::vector<codec::TensorView> views;
    for (const auto& t : service_.tensors) views.push_back(t.view());
    ASSERT_THAT(
        codec::WriteSafetensors(tmp_.File("expected.safetensors"), views, service_.metadata),
        IsOk());
  }
  void TearDown() override { server_->Shutdown(); }

  // resume_from_offset of the request of range [first, end) that resumed at `first`,
  // sorted by first: the offsets of every StreamWeights request so far.
  std::vector<uint64_t> Offsets() {
    std::vector<std::pair<uint32_t, uint64_t>> got;
    std::lock_guard<std::mutex> lock(service_.mu);
    for (const auto& r : service_.streams) {
      got.emplace_back(r.resume_from_index(), r.resume_from_offset());
    }
    std::sort(got.begin(), got.end());
    std::vector<uint64_t> out;
    for (const auto& [first, offset] : got) out.push_back(offset);
    return out;
  }
  // (resume_from_index, end_index) of every StreamWeights request so far.
  std::vector<std::pair<uint32_t, uint32_t>> Requests() {
    std::vector<std::pair<uint32_t, uint32_t>> out;
    std::lock_guard<std::mutex> lock(service_.mu);
    for (const auto& r : service_.streams) out.emplace_back(r.resume_from_index(), r.end_index());
    std::sort(out.begin(), out.end());
    return out;
  }

  FakeService service_;
  std::unique_ptr<grpc::Server> server_;
  ::deltaserve::testing::ScopedTempDir tmp_;
  std::unique_ptr<DeltaClient> client_;
};

TEST_F(PullRangesTest, TwoStreamsWriteTheSameFileAsOne) {
  PullOptions options;
  options.streams = 2;
  Progress last;
  std::vector<Progress> reports;
  options.progress = [&](const Progress& p) {
    last = p;
    reports.push_back(p);
  };
  ASSERT_OK_AND_ASSIGN(PullStats stats,
                       client_->PullWeights("chat", tmp_.File("two.safetensors"), options));
  // Every report, the first included, shows the whole pull's totals, and what is done
  // never goes back (the totals used to grow as each range began).
  ASSERT_FALSE(reports.empty());
  for (size_t k = 0; k < reports.size(); ++k) {
    EXPECT_EQ(reports[k].bytes_total, 122u) << "report " << k;
    EXPECT_EQ(reports[k].tensors_total, 4u) << "report " << k;
    if (k > 0) {
      EXPECT_GE(reports[k].bytes_done, reports[k - 1].bytes_done) << "report " << k;
    }
  }
  EXPECT_EQ(stats.streams, 2u);
  EXPECT_EQ(stats.tensors, 4u);
  EXPECT_EQ(stats.bytes, 122u);
  EXPECT_EQ(stats.resumed, 0u);
  EXPECT_EQ(ReadFile(tmp_.File("two.safetensors")), ReadFile(tmp_.File("expected.safetensors")));
  // Bytes 60 | 44 0 18: tensor 1's middle (82) reaches the share (61).
  EXPECT_THAT(Requests(), ElementsAre(Pair(0u, 2u), Pair(2u, 4u)));
  EXPECT_EQ(last.bytes_done, 122u);
  EXPECT_EQ(last.bytes_total, 122u);
  EXPECT_EQ(last.tensors_done, 4u);
  EXPECT_EQ(last.tensors_total, 4u);
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("two.safetensors.data.tmp")));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("two.safetensors.data.1.tmp")));
}

// A stream cut midway through a tensor (a replica dying) resumes at the byte where it
// stopped (resume_from_offset), keeping the bytes it had; the whole tensor's XXH3-64 is
// still checked, and the file is bit-identical.
TEST_F(PullRangesTest, ARangeDroppedMidTensorResumesAtThatByte) {
  service_.unavailable_once_at = 3;  // "c": fails after its first chunk
  PullOptions options;
  options.streams = 2;
  ASSERT_OK_AND_ASSIGN(PullStats stats,
                       client_->PullWeights("chat", tmp_.File("r.safetensors"), options));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(stats.tensors, 4u);
  EXPECT_EQ(stats.bytes, 122u);
  EXPECT_EQ(ReadFile(tmp_.File("r.safetensors")), ReadFile(tmp_.File("expected.safetensors")));
  // "empty" (index 2) was verified before the drop: the retry starts at 3, at byte 7
  // of "c" (its first 7-byte chunk had arrived).
  EXPECT_THAT(Requests(), ElementsAre(Pair(0u, 2u), Pair(2u, 4u), Pair(3u, 4u)));
  EXPECT_THAT(Offsets(), ElementsAre(0u, 0u, 7u));

  // Into memory, the same way.
  service_.unavailable_once_at = 0;
  ASSERT_OK_AND_ASSIGN(PulledModel model, client_->PullWeightsToMemory("chat", options));
  EXPECT_EQ(model.stats.resumed, 1u);
  ASSERT_EQ(model.tensors.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(model.tensors[i].info.name, service_.tensors[i].info.name);
    EXPECT_EQ(model.tensors[i].data, service_.tensors[i].data);
  }
  EXPECT_EQ(model.metadata, service_.metadata);

  // A drop inside a tensor whose checksum was to follow its data (checksum_after_data,
  // as a cold server streams it): the retry resumes at the byte too; the resumed
  // header carries the checksum of the whole tensor.
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    service_.streams.clear();
  }
  service_.checksum_follows = true;
  service_.unavailable_once_at = 3;
  ASSERT_OK_AND_ASSIGN(stats, client_->PullWeights("chat", tmp_.File("f.safetensors"), options));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(ReadFile(tmp_.File("f.safetensors")), ReadFile(tmp_.File("expected.safetensors")));
  EXPECT_THAT(Requests(), ElementsAre(Pair(0u, 2u), Pair(2u, 4u), Pair(3u, 4u)));
  EXPECT_THAT(Offsets(), ElementsAre(0u, 0u, 7u));
  std::lock_guard<std::mutex> lock(service_.mu);
  for (const v1::StreamWeightsRequest& r : service_.streams) EXPECT_TRUE(r.checksum_after_data());
}

// One stream (the default) resumes the same way: a single-stream pull through a load
// balancer whose replica dies lands on another one and continues at the byte where it
// stopped. Into a file, a checkpoint directory and memory.
TEST_F(PullRangesTest, OneStreamDroppedMidTensorResumesAtThatByte) {
  service_.unavailable_once_at = 3;  // "c": fails after its first chunk
  ASSERT_OK_AND_ASSIGN(PullStats stats, client_->PullWeights("chat", tmp_.File("r.safetensors")));
  EXPECT_EQ(stats.streams, 1u);
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(stats.tensors, 4u);
  EXPECT_EQ(stats.bytes, 122u);
  EXPECT_EQ(ReadFile(tmp_.File("r.safetensors")), ReadFile(tmp_.File("expected.safetensors")));
  EXPECT_THAT(Requests(), ElementsAre(Pair(0u, 4u), Pair(3u, 4u)));
  EXPECT_THAT(Offsets(), ElementsAre(0u, 7u));
  // New-user trial: a resumed pull printed "first tensor after 0.000 s" (the resuming
  // attempt, which sees no new first header, overwrote the figure with its 0).
  EXPECT_GT(stats.first_tensor_seconds, 0);
  EXPECT_LE(stats.first_tensor_seconds, stats.seconds);

  auto clear = [&] {
    std::lock_guard<std::mutex> lock(service_.mu);
    service_.streams.clear();
  };
  clear();
  service_.unavailable_once_at = 3;
  ASSERT_OK_AND_ASSIGN(stats, client_->PullWeightsToDirectory("chat", tmp_.File("dir"),
                                                              /*max_shard_bytes=*/1 << 20));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(stats.tensors, 4u);
  EXPECT_EQ(stats.bytes, 122u);
  EXPECT_THAT(Offsets(), ElementsAre(0u, 7u));

  // A stream reset by a proxy whose server died (UNKNOWN "Stream removed") resumes too.
  clear();
  service_.unavailable_once_at = 3;
  service_.fail_as_reset = true;
  ASSERT_OK_AND_ASSIGN(stats, client_->PullWeights("chat", tmp_.File("reset.safetensors")));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(ReadFile(tmp_.File("reset.safetensors")), ReadFile(tmp_.File("expected.safetensors")));
  EXPECT_THAT(Offsets(), ElementsAre(0u, 7u));
  service_.fail_as_reset = false;

  clear();
  service_.unavailable_once_at = 3;
  ASSERT_OK_AND_ASSIGN(PulledModel model, client_->PullWeightsToMemory("chat"));
  EXPECT_EQ(model.stats.resumed, 1u);
  ASSERT_EQ(model.tensors.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(model.tensors[i].data, service_.tensors[i].data);
  EXPECT_THAT(Offsets(), ElementsAre(0u, 7u));

  // The first tensor itself cut midway: its header came on the first attempt, which
  // finished no tensor; that is still the first tensor's time.
  clear();
  service_.unavailable_once_at = 0;
  ASSERT_OK_AND_ASSIGN(stats, client_->PullWeights("chat", tmp_.File("first.safetensors")));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(ReadFile(tmp_.File("first.safetensors")), ReadFile(tmp_.File("expected.safetensors")));
  EXPECT_THAT(Offsets(), ElementsAre(0u, 7u));
  EXPECT_GT(stats.first_tensor_seconds, 0);
  EXPECT_LE(stats.first_tensor_seconds, stats.seconds);
}

TEST_F(PullRangesTest, WithoutRetriesTheDropIsTheError) {
  service_.unavailable_once_at = 3;
  PullOptions options;
  options.streams = 2;
  options.range_retries = 0;
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("x.safetensors"), options),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("connection dropped")));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("x.safetensors")));
}

TEST_F(PullRangesTest, OtherErrorsAreNotRetried) {
  service_.fault = Fault::kAbortMidway;  // INTERNAL in tensor 1
  PullOptions options;
  options.streams = 2;
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("x.safetensors"), options),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("decoder exploded")));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("x.safetensors")));
  service_.fault = Fault::kBadChecksum;
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("x.safetensors"), options),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch")));
}

TEST_F(PullRangesTest, ATaskReplacedDuringThePullIsAborted) {
  service_.stream_created_unix = service_.created_unix + 1;
  PullOptions options;
  options.streams = 2;
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("x.safetensors"), options),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("the task changed during the pull")));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("x.safetensors")));
}

// New-user trial: two same-size containers committed within one second (two dct
// finetunes of one base) have the same created_unix, size and base; a pull that saw
// the first in GetTask (or its first stream) wrote the second's tensors into the same
// file. The container's content hash now tells them apart, for ranges and for the
// resume of a single stream.
TEST_F(PullRangesTest, ASameSizeOverwriteInTheSameSecondIsAborted) {
  service_.container_xxh3_64 = 0x1111;
  service_.stream_xxh3 = {0x1111, 0x2222};  // the first stream sees the first version
  PullOptions options;
  options.streams = 2;
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("x.safetensors"), options),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("the task changed during the pull"),
                             HasSubstr("content 0000000000001111"),
                             HasSubstr("content 0000000000002222"))));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("x.safetensors")));

  // One stream (one range), cut mid-tensor and resumed on a call that serves the
  // second version. (PullWeightsToSink's resume: client_test.cc.)
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    service_.streams.clear();
  }
  service_.unavailable_once_at = 3;
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("y.safetensors")),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("content 0000000000002222")));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("y.safetensors")));
  EXPECT_THAT(Offsets(), ElementsAre(0u, 7u));  // the resume was made, and refused

  // The same version on every call passes, with ranges and with a resume.
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    service_.streams.clear();
  }
  service_.stream_xxh3 = {0x1111};
  service_.unavailable_once_at = 3;
  ASSERT_OK_AND_ASSIGN(PullStats stats, client_->PullWeights("chat", tmp_.File("z.safetensors")));
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(ReadFile(tmp_.File("z.safetensors")), ReadFile(tmp_.File("expected.safetensors")));
  ASSERT_THAT(client_->PullWeights("chat", tmp_.File("w.safetensors"), options), IsOk());
  EXPECT_EQ(ReadFile(tmp_.File("w.safetensors")), ReadFile(tmp_.File("expected.safetensors")));

  // A hash on one side only (a stream from an older server): another version.
  service_.stream_xxh3.clear();
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("v.safetensors"), options),
              StatusIs(absl::StatusCode::kAborted));
}

// New-user trial: a pull --out-dir that failed over an existing checkpoint left new
// shards 1-2 beside old shards 3-4 and a valid-looking index. Every file is now staged
// first: a pull that fails midway (one stream or several) leaves the old checkpoint
// byte for byte, and no staging directory.
TEST_F(PullRangesTest, AFailedPullLeavesAnExistingCheckpointAsItWas) {
  const std::string dir = tmp_.File("ck");
  ASSERT_THAT(client_->PullWeightsToDirectory("chat", dir, /*max_shard_bytes=*/40), IsOk());
  auto snapshot = [&] {
    std::map<std::string, std::vector<uint8_t>> files;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      files[e.path().filename().string()] = ReadFile(e.path().string());
    }
    return files;
  };
  const auto before = snapshot();
  ASSERT_GE(before.size(), 3u);  // two shards or more, and the index
  service_.fault = Fault::kAbortMidway;  // INTERNAL in tensor 1
  for (uint32_t streams : {1u, 2u}) {
    PullOptions options;
    options.streams = streams;
    EXPECT_THAT(client_->PullWeightsToDirectory("chat", dir, 40, options),
                StatusIs(absl::StatusCode::kInternal, HasSubstr("decoder exploded")));
    EXPECT_EQ(snapshot(), before) << streams << " streams";
  }
}

// A pull into a file writes each chunk in place (out_path + ".tmp"): a failure in the
// middle of a range, with one stream or several, leaves neither a partial out_path nor
// the .tmp file, and an earlier file at out_path stays as it was.
TEST_F(PullRangesTest, AFailureMidRangeLeavesNoPartialFile) {
  const std::string out = tmp_.File("kept.safetensors");
  const std::string before = "an earlier pull";
  {
    std::ofstream(out, std::ios::binary) << before;
  }
  for (uint32_t streams : {1u, 2u, 4u}) {
    SCOPED_TRACE(streams);
    PullOptions options;
    options.streams = streams;
    service_.fault = Fault::kAbortMidway;  // INTERNAL inside tensor 1
    EXPECT_THAT(client_->PullWeights("chat", out, options),
                StatusIs(absl::StatusCode::kInternal, HasSubstr("decoder exploded")));
    service_.fault = Fault::kBadChecksum;
    EXPECT_THAT(client_->PullWeights("chat", out, options),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch")));
    service_.fault = Fault::kNone;
    service_.unavailable_once_at = 3;  // a drop inside "c", not retried
    options.range_retries = 0;
    EXPECT_THAT(client_->PullWeights("chat", out, options),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("connection dropped")));
    service_.unavailable_once_at = -1;
    EXPECT_EQ(ReadFile(out), std::vector<uint8_t>(before.begin(), before.end()));
    EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
  }
  // Then a good pull replaces it, with no scratch file left.
  PullOptions options;
  options.streams = 4;
  ASSERT_THAT(client_->PullWeights("chat", out, options).status(), IsOk());
  EXPECT_EQ(ReadFile(out), ReadFile(tmp_.File("expected.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
}

// A stream that sends a tensor GetTask did not list (the task was replaced between the
// two calls with other tensors) is ABORTED, and nothing is written.
TEST_F(PullRangesTest, ATensorGetTaskDidNotListIsAborted) {
  for (uint32_t streams : {1u, 2u}) {
    SCOPED_TRACE(streams);
    PullOptions options;
    options.streams = streams;
    FakeService other;
    other.tensors = service_.tensors;
    other.tensors[3].info.shape = {9};  // "c": same bytes, another shape
    int port = 0;
    std::unique_ptr<grpc::Server> server = testing::StartFakeServer(&other, &port);
    ASSERT_NE(server, nullptr);
    ClientOptions co;
    co.target = "127.0.0.1:" + std::to_string(port);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DeltaClient> client, DeltaClient::Open(co));
    // GetTask lists the old shape; the stream sends the new one.
    std::vector<codec::OwnedTensor> served = other.tensors;
    other.tensors = service_.tensors;
    other.served_tensors = &served;
    const std::string out = tmp_.File("changed.safetensors");
    EXPECT_THAT(client->PullWeights("chat", out, options),
                StatusIs(absl::StatusCode::kAborted,
                         HasSubstr("tensor 'c' BF16[9], which the task did not list")));
    EXPECT_FALSE(std::filesystem::exists(out));
    EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
    server->Shutdown();
  }
}

TEST_F(PullRangesTest, ResumeFromNameAndStreamCount) {
  PullOptions options;
  options.streams = 3;
  options.resume_from = "a.bias";
  ASSERT_OK_AND_ASSIGN(PulledModel model, client_->PullWeightsToMemory("chat", options));
  ASSERT_EQ(model.tensors.size(), 3u);
  EXPECT_EQ(model.tensors[0].info.name, "a.bias");
  EXPECT_EQ(model.stats.streams, 3u);
  options.resume_from = "nope";
  EXPECT_THAT(client_->PullWeightsToMemory("chat", options),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no tensor 'nope'")));
  options.resume_from.clear();
  options.streams = 0;
  EXPECT_THAT(client_->PullWeights("chat", tmp_.File("x.safetensors"), options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("streams")));
  options.streams = 65;
  EXPECT_THAT(client_->PullWeightsToMemory("chat", options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[1, 64]")));
  options.streams = 2;
  EXPECT_THAT(client_->PullWeightsToMemory("missing", options),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no task 'missing'")));
}

}  // namespace
}  // namespace deltaserve::client

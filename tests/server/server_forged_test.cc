// Containers whose records do not fit the base (the second new-user trial's cross-tenant
// leak): framing, checksums and base hash hold, but a record claims "unchanged" in
// another dtype than its base tensor's. Its merge wrote nothing, so a buffer reused
// from another tenant's evicted merged tensor was streamed to the attacker, "checksum
// verified". PutDelta refuses such a container; a task stored before that check is
// refused at pull, and no byte of another tenant's tensors is sent.
#include "server/server.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "codec/container.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "storage/store.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/forged_container.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::ForgedContainer;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::deltaserve::testing::UnchangedAs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// The victim's F32 [256, 128] tensor (131072 bytes, as the F16 embedding and the other
// down projections: an evicted one of them is handed over to a merge of that size).
constexpr char kTarget[] = "layers.0.mlp.down.weight";

class ForgedContainerTest : public ServerTest {
 protected:
  void StartTwoTenants() {
    ServerOptions o = DefaultOptions();
    AuthConfig auth;
    auth.tenants.push_back({"victim", {"tok-v"}, 0});
    auth.tenants.push_back({"attacker", {"tok-x"}, 0});
    o.auth = auth;
    // About one task's merged tensors (1017344 bytes): the attacker's pull evicts the
    // victim's and reuses their buffers, as in the trial.
    o.cache_bytes = 1100000;
    StartServer(o);
  }

  // The victim's task "secret", pulled once: its merged tensors (now in the cache).
  std::vector<codec::OwnedTensor> VictimPulls() {
    auto victim = Client("tok-v");
    EXPECT_THAT(victim->PushDeltaFile("secret", MakeContainer("secret", 7)).status(), IsOk());
    auto m = victim->PullWeightsToMemory("secret");
    EXPECT_THAT(m.status(), IsOk());
    return m.ok() ? m->tensors : std::vector<codec::OwnedTensor>{};
  }

  // The attacker's container: the victim's kind of delta with kTarget (F32) relabelled
  // unchanged I32, no payload.
  std::vector<uint8_t> Forged() {
    const std::string path = MakeContainer("mine", 8);
    const std::string bytes = ReadFileBytes(path);
    const std::vector<uint8_t> real(bytes.begin(), bytes.end());
    auto reader = codec::ContainerReader::Parse(real);
    EXPECT_THAT(reader.status(), IsOk());
    auto forged = ForgedContainer(*reader, kTarget, UnchangedAs(codec::DType::kI32));
    EXPECT_THAT(forged.status(), IsOk());
    return forged.ok() ? *forged : std::vector<uint8_t>{};
  }

  // Every data byte a raw StreamWeights of the attacker's `task` sends, and its status.
  grpc::Status AttackerStream(const std::string& task, std::string* data) {
    auto stub = RawStub();
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer tok-x");
    v1::StreamWeightsRequest req;
    req.set_task(task);
    auto reader = stub->StreamWeights(&ctx, req);
    v1::StreamWeightsResponse msg;
    while (reader->Read(&msg)) {
      if (msg.has_chunk()) *data += msg.chunk().data();
    }
    return reader->Finish();
  }

  // True if any 64-byte window starting a victim tensor of kTarget's size is in `data`.
  static bool HoldsVictimBytes(const std::vector<codec::OwnedTensor>& victim,
                               const std::string& data) {
    for (const auto& t : victim) {
      if (t.data.size() != 131072) continue;
      const std::string head(t.data.begin(), t.data.begin() + 64);
      if (absl::StrContains(data, head)) return true;
    }
    return false;
  }
};

TEST_F(ForgedContainerTest, PushOfARecordInAnotherDtypeThanItsBaseIsRefused) {
  StartTwoTenants();
  const std::vector<codec::OwnedTensor> victim = VictimPulls();
  ASSERT_EQ(victim.size(), 13u);
  auto attacker = Client("tok-x");
  const std::vector<uint8_t> forged = Forged();
  ASSERT_FALSE(forged.empty());
  EXPECT_THAT(attacker->PushDelta("innocent", forged).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("PutDelta 'innocent': record 2: "),
                             HasSubstr(std::string("tensor '") + kTarget +
                                       "': unchanged record has dtype I32, its base tensor "
                                       "is F32"))));
  // Nothing stored: no task, and a pull finds none (so sends no byte).
  EXPECT_THAT(attacker->GetTask("innocent").status(), StatusIs(absl::StatusCode::kNotFound));
  std::string data;
  grpc::Status s = AttackerStream("innocent", &data);
  EXPECT_EQ(Code(s), absl::StatusCode::kNotFound) << s.error_message();
  EXPECT_FALSE(HoldsVictimBytes(victim, data));
}

// Forged tasks stored before PutDelta checked records (written here through the storage
// layer, bypassing PutDelta) are refused at pull: what the task's metadata tells (an
// unchanged tensor's dtype) before the stream begins; what only the record tells (a
// lossy record's base shape) when that tensor is merged, before a byte of it is
// written or sent.
TEST_F(ForgedContainerTest, StoredForgedTasksAreRefusedAtPull) {
  const std::vector<uint8_t> forged = Forged();
  ASSERT_FALSE(forged.empty());
  const std::string real = ReadFileBytes(MakeContainer("mine", 8));
  const std::vector<uint8_t> real_bytes(real.begin(), real.end());
  ASSERT_OK_AND_ASSIGN(auto real_reader, codec::ContainerReader::Parse(real_bytes));
  ASSERT_OK_AND_ASSIGN(codec::TensorRecord down, real_reader.record(2));
  ASSERT_EQ(down.info.name, kTarget);
  ASSERT_EQ(down.encoding, codec::Encoding::kDct);
  ASSERT_OK_AND_ASSIGN(auto transposed,
                       ForgedContainer(real_reader, kTarget, [](codec::TensorRecord* r) {
                         r->info.shape = r->base_shape = {128, 256};  // base: [256, 128]
                       }));
  {
    storage::StoreOptions so;
    so.path = DefaultOptions().db_path;
    ASSERT_OK_AND_ASSIGN(auto store, storage::DeltaStore::Open(so));
    ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(forged));
    ASSERT_THAT(store->CommitTask("attacker", "innocent", reader).status(), IsOk());
    ASSERT_OK_AND_ASSIGN(auto t_reader, codec::ContainerReader::Parse(transposed));
    ASSERT_THAT(store->CommitTask("attacker", "transposed", t_reader).status(), IsOk());
  }
  StartTwoTenants();
  const std::vector<codec::OwnedTensor> victim = VictimPulls();
  ASSERT_EQ(victim.size(), 13u);
  auto attacker = Client("tok-x");
  const std::string why = std::string("task 'innocent' does not fit the resident base: tensor '") +
                          kTarget + "': unchanged record has dtype I32, its base tensor is F32";
  EXPECT_THAT(attacker->PullWeightsToMemory("innocent").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(why)));
  EXPECT_THAT(attacker->PinTask("innocent").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(why)));
  std::string data;
  grpc::Status s = AttackerStream("innocent", &data);
  EXPECT_EQ(Code(s), absl::StatusCode::kFailedPrecondition) << s.error_message();
  EXPECT_EQ(data.size(), 0u);

  data.clear();
  s = AttackerStream("transposed", &data);
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(),
              HasSubstr(std::string("tensor '") + kTarget +
                        "': base tensor has shape [256, 128], the delta was made against "
                        "[128, 256] (transposed?)"));
  EXPECT_FALSE(HoldsVictimBytes(victim, data));
  EXPECT_LT(data.size(), 1017344u);  // the stream ends at the forged tensor
  // The victim still pulls its task, the same bytes.
  ASSERT_OK_AND_ASSIGN(client::PulledModel again, Client("tok-v")->PullWeightsToMemory("secret"));
  ASSERT_EQ(again.tensors.size(), victim.size());
  for (size_t i = 0; i < victim.size(); ++i) EXPECT_EQ(again.tensors[i].data, victim[i].data);
}

}  // namespace
}  // namespace deltaserve::server::testing

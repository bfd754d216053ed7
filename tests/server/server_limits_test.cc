// deltaserved under bad uploads, limits, cancellation; and its /metrics endpoint.
#include <xxhash.h>

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "codec/container.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::SizeIs;

struct Upload {
  std::string task;
  std::vector<uint8_t> bytes;
  uint64_t declared_total = 0;  // 0: bytes.size()
  std::optional<uint64_t> xxh3;
  bool overwrite = false;
  size_t send_bytes = SIZE_MAX;  // send only a prefix
  std::string base_hash;         // PutDeltaMetadata.base_hash (empty: not declared)
};

// An upload of `bytes` as `task`, every other field at its default.
Upload UploadOf(std::string task, std::vector<uint8_t> bytes) {
  Upload u;
  u.task = std::move(task);
  u.bytes = std::move(bytes);
  return u;
}

// Raw PutDelta, so that tests can send what the client library refuses to.
grpc::Status RawPut(v1::DeltaService::Stub* stub, const Upload& up,
                    const std::string& token = "", v1::PutDeltaResponse* out = nullptr) {
  grpc::ClientContext ctx;
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::PutDeltaResponse resp;
  auto writer = stub->PutDelta(&ctx, out != nullptr ? out : &resp);
  v1::PutDeltaRequest req;
  v1::PutDeltaMetadata* meta = req.mutable_metadata();
  meta->set_task(up.task);
  meta->set_overwrite(up.overwrite);
  meta->set_total_bytes(up.declared_total ? up.declared_total : up.bytes.size());
  if (up.xxh3) meta->set_xxh3_64(*up.xxh3);
  meta->set_base_hash(up.base_hash);
  writer->Write(req);
  size_t n = std::min(up.send_bytes, up.bytes.size());
  for (size_t off = 0; off < n; off += 64 << 10) {
    req.set_chunk(up.bytes.data() + off, std::min<size_t>(64 << 10, n - off));
    if (!writer->Write(req)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

class UploadTest : public ServerTest {
 protected:
  void BadUploadsAreRejectedAndStoreNothing();
};

TEST_F(UploadTest, TruncatedOrCorruptUploadIsRejectedAndStoresNothing) {
  StartServer();
  BadUploadsAreRejectedAndStoreNothing();
}

// The same uploads with every container's records staged while it arrives
// (StoreOptions::ingest_min_bytes = 0; by default only large containers are): the same
// answers, nothing stored by a refused upload, and a staged task pulls bit-identical.
TEST_F(UploadTest, StagedUploadsAreCheckedAndCommittedTheSameWay) {
  ServerOptions options = DefaultOptions();
  options.store.ingest_min_bytes = 0;
  StartServer(options);
  BadUploadsAreRejectedAndStoreNothing();
  const std::string container = MakeContainer("t1", 7);
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("t1", container).status(), IsOk());
  const std::string pulled = tmp_.File("t1.pulled.safetensors");
  ASSERT_THAT(client->PullWeights("t1", pulled).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(container)));
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> delta, client->FetchDelta("t1"));
  EXPECT_EQ(std::string(delta.begin(), delta.end()), ReadFileBytes(container));
  // Overwritten by another staged upload, and still there after a restart.
  const std::string second = MakeContainer("t2", 8);
  client::PushOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_THAT(client->PushDeltaFile("t1", second, overwrite).status(), IsOk());
  StartServer(options);
  client = Client();
  ASSERT_OK_AND_ASSIGN(delta, client->FetchDelta("t1"));
  EXPECT_EQ(std::string(delta.begin(), delta.end()), ReadFileBytes(second));
}

void UploadTest::BadUploadsAreRejectedAndStoreNothing() {
  auto stub = RawStub();
  std::vector<uint8_t> good = ContainerBytes("c", 11);

  Upload truncated = UploadOf("c", good);
  truncated.send_bytes = good.size() / 2;
  grpc::Status s = RawPut(stub.get(), truncated);
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("truncated"));

  Upload lying_total = UploadOf("c", good);
  lying_total.declared_total = good.size() - 10;  // more bytes than declared
  EXPECT_EQ(Code(RawPut(stub.get(), lying_total)), absl::StatusCode::kInvalidArgument);

  std::vector<uint8_t> flipped = good;
  flipped[flipped.size() / 2] ^= 0x40;
  Upload corrupt = UploadOf("c", flipped);  // record checksum catches it
  EXPECT_EQ(Code(RawPut(stub.get(), corrupt)), absl::StatusCode::kDataLoss);
  Upload corrupt_hash = UploadOf("c", flipped);
  corrupt_hash.xxh3 = XXH3_64bits(good.data(), good.size());
  EXPECT_EQ(Code(RawPut(stub.get(), corrupt_hash)), absl::StatusCode::kDataLoss);

  std::vector<uint8_t> garbage(1000, 0xab);
  EXPECT_NE(Code(RawPut(stub.get(), UploadOf("c", garbage))), absl::StatusCode::kOk);
  EXPECT_EQ(Code(RawPut(stub.get(), UploadOf("bad/name", good))),
            absl::StatusCode::kInvalidArgument);

  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse list, client->ListTasks());
  EXPECT_THAT(list.tasks(), SizeIs(0));
  EXPECT_EQ(list.stored_bytes(), 0u);

  // The same bytes, whole, are accepted.
  Upload whole = UploadOf("c", good);
  whole.xxh3 = XXH3_64bits(good.data(), good.size());
  v1::PutDeltaResponse resp;
  EXPECT_TRUE(RawPut(stub.get(), whole, "", &resp).ok());
  EXPECT_FALSE(resp.unchanged());
  // A retry of the same bytes (the client could not tell whether it committed) is OK
  // and says nothing changed; other bytes under the name are still ALREADY_EXISTS.
  EXPECT_TRUE(RawPut(stub.get(), whole, "", &resp).ok());
  EXPECT_TRUE(resp.unchanged());
  EXPECT_EQ(resp.task().container_bytes(), good.size());
  std::vector<uint8_t> other = ContainerBytes("c2", 12);
  EXPECT_EQ(Code(RawPut(stub.get(), UploadOf("c", other))), absl::StatusCode::kAlreadyExists);
  ASSERT_THAT(client->DeleteTask("c").status(), IsOk());
}

// New-user trial: a push over an existing task (no overwrite) with other contents of the
// same size was refused only after the whole upload. The server now compares the bytes
// with the stored task's as they arrive and refuses at the first difference: here the
// header, with nothing but the header sent.
TEST_F(ServerTest, PushOverAnExistingTaskIsRefusedAtItsFirstDifference) {
  StartServer();
  auto stub = RawStub();
  const std::vector<uint8_t> good = ContainerBytes("e", 11);
  ASSERT_TRUE(RawPut(stub.get(), UploadOf("e", good)).ok());
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader, codec::ContainerReader::Parse(good));
  const size_t header = reader.header_bytes().size();
  ASSERT_GT(header, 40u);

  std::vector<uint8_t> other = good;  // the same size, one header byte differs
  other[header / 2] ^= 0x01;
  Upload header_only = UploadOf("e", other);
  header_only.send_bytes = header;
  grpc::Status s = RawPut(stub.get(), header_only);
  EXPECT_EQ(Code(s), absl::StatusCode::kAlreadyExists) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "tenant 'default' task 'e' already exists with other contents (overwrite not set)");

  // The stored header, sent alone: not refused as existing; the upload is then short.
  Upload same_header = UploadOf("e", good);
  same_header.send_bytes = header;
  s = RawPut(stub.get(), same_header);
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("truncated upload"));
  // The same bytes, whole: unchanged; with overwrite, other bytes replace the task (the
  // comparison is only for uploads without overwrite).
  v1::PutDeltaResponse resp;
  EXPECT_TRUE(RawPut(stub.get(), UploadOf("e", good), "", &resp).ok());
  EXPECT_TRUE(resp.unchanged());
  Upload replace = UploadOf("e", ContainerBytes("e2", 12));
  replace.overwrite = true;
  EXPECT_TRUE(RawPut(stub.get(), replace, "", &resp).ok());
  EXPECT_FALSE(resp.unchanged());
}

// New-user trial: 1 GiB of random bytes declared as a container were all buffered (RSS
// 53 -> 1136 MB) before "bad magic" came back. Bytes that cannot make a container are
// now refused as they arrive: each upload below sends only its first bytes of a larger
// declared total, and is refused for what those bytes are, not as truncated.
TEST_F(ServerTest, AnUploadIsRefusedAsSoonAsItsBytesCannotBeAContainer) {
  StartServer();
  auto stub = RawStub();
  const std::vector<uint8_t> good = ContainerBytes("g", 11);
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader, codec::ContainerReader::Parse(good));
  const size_t header = reader.header_bytes().size();

  Upload junk = UploadOf("j", std::vector<uint8_t>(4096, 0xab));
  junk.declared_total = uint64_t{64} << 20;
  grpc::Status s = RawPut(stub.get(), junk);
  EXPECT_EQ(Code(s), absl::StatusCode::kDataLoss) << s.error_message();
  EXPECT_EQ(s.error_message(), "PutDelta: task 'j': bad magic: not a deltaserve delta container");

  std::vector<uint8_t> bad_header = good;  // a header field flipped: its checksum fails
  bad_header[header - 12] ^= 0x01;
  Upload header_only = UploadOf("h", bad_header);
  header_only.send_bytes = header;
  s = RawPut(stub.get(), header_only);
  EXPECT_EQ(Code(s), absl::StatusCode::kDataLoss) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("header checksum mismatch"));

  std::vector<uint8_t> bad_record = good;  // the first record's magic broken
  bad_record[header] = 'X';
  Upload record_start = UploadOf("r", bad_record);
  record_start.send_bytes = header + 14;
  s = RawPut(stub.get(), record_start);
  EXPECT_EQ(Code(s), absl::StatusCode::kDataLoss) << s.error_message();
  EXPECT_THAT(s.error_message(),
              HasSubstr(absl::StrCat("record 0 at offset ", header, ": truncated or bad magic")));

  // The good header alone is no refusal: the upload is then just short.
  Upload good_header = UploadOf("g", good);
  good_header.send_bytes = header;
  s = RawPut(stub.get(), good_header);
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("truncated upload"));
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse list, Client()->ListTasks());
  EXPECT_THAT(list.tasks(), SizeIs(0));
}

TEST_F(ServerTest, DeltaAgainstAnotherBaseIsFailedPrecondition) {
  std::string container = MakeContainer("x", 12);
  // Restart on a different base (the finetuned model of another task).
  MakeContainer("other", 13);
  ServerOptions o = DefaultOptions();
  o.base_path = tmp_.File("other.ft.safetensors");
  StartServer(o);
  EXPECT_THAT(Client()->PushDeltaFile("x", container).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("base")));

  // The declared base hash (the client library sends the header's) is checked at
  // admission: with no container byte sent the answer is the base, not a truncation.
  auto stub = RawStub();
  std::vector<uint8_t> bytes = ContainerBytes("x", 12);
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader, codec::ContainerReader::Parse(bytes));
  const codec::BaseHash& made_against = reader.header().base_hash;
  Upload header_only = UploadOf("x", bytes);
  header_only.send_bytes = 0;
  header_only.base_hash.assign(made_against.begin(), made_against.end());
  grpc::Status s = RawPut(stub.get(), header_only);
  EXPECT_EQ(Code(s), absl::StatusCode::kFailedPrecondition) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("not the resident base"));
  header_only.base_hash = "short";
  s = RawPut(stub.get(), header_only);
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("base_hash must be 16 bytes, got 5"));

  // Not declared: the header's base is refused once the header has arrived, with
  // nothing else sent.
  Upload undeclared = UploadOf("x", bytes);
  undeclared.send_bytes = reader.header_bytes().size();
  s = RawPut(stub.get(), undeclared);
  EXPECT_EQ(Code(s), absl::StatusCode::kFailedPrecondition) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("not the resident base"));

  // Declared as made against the resident base, but the header says otherwise.
  ASSERT_OK_AND_ASSIGN(v1::BaseInfo resident, Client()->GetBase());
  ASSERT_EQ(resident.hash().size(), 32u);
  Upload lying = UploadOf("x", bytes);
  for (size_t i = 0; i < 32; i += 2) {
    lying.base_hash.push_back(
        static_cast<char>(std::stoi(resident.hash().substr(i, 2), nullptr, 16)));
  }
  s = RawPut(stub.get(), lying);
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("differs from the container header's"));
}

TEST_F(ServerTest, DeclaredBaseHashOfTheResidentBaseIsStored) {
  StartServer();
  auto stub = RawStub();
  std::vector<uint8_t> bytes = ContainerBytes("y", 14);
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader, codec::ContainerReader::Parse(bytes));
  // Declared as made against another base: refused at admission.
  Upload lying = UploadOf("y", bytes);
  lying.base_hash = std::string(16, '\x01');
  grpc::Status s = RawPut(stub.get(), lying);
  EXPECT_EQ(Code(s), absl::StatusCode::kFailedPrecondition) << s.error_message();
  // The header's own hash, the resident base's: stored.
  Upload honest = UploadOf("y", bytes);
  honest.base_hash.assign(reader.header().base_hash.begin(), reader.header().base_hash.end());
  s = RawPut(stub.get(), honest);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ServerTest, QuotaAndUploadLimit) {
  std::vector<uint8_t> one = ContainerBytes("q1", 21);
  ServerOptions o = DefaultOptions();
  AuthConfig auth;
  auth.tenants.push_back({"small", {"tok-small"}, one.size() + one.size() / 2});
  o.auth = auth;
  o.max_upload_bytes = one.size() * 3;
  StartServer(o);
  auto client = Client("tok-small");
  ASSERT_THAT(client->PushDeltaFile("q1", MakeContainer("q1", 21)).status(), IsOk());
  EXPECT_THAT(client->PushDeltaFile("q2", MakeContainer("q2", 22)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  // Replacing the task counts its old bytes as freed.
  client::PushOptions overwrite;
  overwrite.overwrite = true;
  EXPECT_THAT(client->PushDeltaFile("q1", MakeContainer("q2", 22), overwrite).status(), IsOk());
  ASSERT_THAT(client->DeleteTask("q1").status(), IsOk());
  EXPECT_THAT(client->PushDeltaFile("q2", MakeContainer("q2", 22)).status(), IsOk());

  auto stub = RawStub();
  Upload huge = UploadOf("big", one);
  huge.declared_total = one.size() * 4;
  EXPECT_EQ(Code(RawPut(stub.get(), huge, "tok-small")), absl::StatusCode::kResourceExhausted);
}

// Reproduction 8: a container whose metadata holds byte 0xff was stored, and then every
// list of the tenant failed (the response could not be serialized). Refused at PutDelta;
// a task name that is not UTF-8 is refused by the client before any call.
TEST_F(ServerTest, NonUtf8ContainerTextAndTaskNamesAreRefused) {
  StartServer();
  auto stub = RawStub();
  const std::vector<uint8_t> good = ContainerBytes("u", 31);
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader, codec::ContainerReader::Parse(good));
  codec::ContainerHeader header = reader.header();
  header.metadata["codec.rules"] = "w\xff*=raw";
  std::vector<absl::Span<const uint8_t>> records;
  for (size_t i = 0; i < reader.num_records(); ++i) records.push_back(reader.record_bytes(i));
  const std::vector<uint8_t> bad =
      codec::AssembleContainer(codec::SerializeHeader(header), records);
  const grpc::Status s = RawPut(stub.get(), UploadOf("u", bad));
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("'w\\xff*=raw' is not valid UTF-8"));

  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse list, client->ListTasks());
  EXPECT_THAT(list.tasks(), SizeIs(0));
  EXPECT_THAT(
      client->GetTask("t\xff").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task 't\\xff' is not valid UTF-8")));
  EXPECT_THAT(client->PushDelta("t\xff", good).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid UTF-8")));
}

// Reproduction 10: a record of >= 4 GiB is refused as soon as its length arrives, naming
// the tensor and its size, not after the whole upload.
TEST_F(ServerTest, OversizedRecordIsRefusedWhileUploading) {
  StartServer();
  std::vector<uint8_t> bytes = ContainerBytes("big", 32);
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader, codec::ContainerReader::Parse(bytes));
  ASSERT_OK_AND_ASSIGN(codec::TensorRecord first, reader.record(0));
  const std::string name = first.info.name;
  const size_t at = reader.header_bytes().size();
  const uint64_t claimed = uint64_t{4402341478};
  for (int i = 0; i < 8; ++i) bytes[at + 4 + i] = static_cast<uint8_t>(claimed >> (8 * i));
  const grpc::Status s = RawPut(RawStub().get(), UploadOf("big", bytes));
  EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("tensor '", name,
                                                        "': its record of 4402341478 "
                                                        "bytes (4.10 GiB) exceeds")));
}

TEST_F(ServerTest, CancellingMidStreamStopsTheWork) {
  shape_.layers = 24;  // 97 tensors
  SetUp();
  ServerOptions o = DefaultOptions();
  o.workers = 2;
  o.prefetch_tensors = 1;
  o.prefetch_bytes = 0;  // these tensors are small: a byte window would hold them all
  StartServer(o);
  ASSERT_THAT(Client()->PushDeltaFile("big", MakeContainer("big", 31)).status(), IsOk());
  // A small, fixed HTTP/2 window, so that the transport cannot buffer many tensors
  // ahead of the reader: what the server decodes is then the pipeline's doing.
  auto stub = SmallWindowStub();
  {
    grpc::ClientContext ctx;
    v1::StreamWeightsRequest req;
    req.set_task("big");
    req.set_chunk_bytes(4096);
    auto reader = stub->StreamWeights(&ctx, req);
    v1::StreamWeightsResponse msg;
    int headers = 0;
    while (headers < 2 && reader->Read(&msg)) headers += msg.has_header();
    ASSERT_EQ(headers, 2);
    EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_streams_in_flight "), 1);
    ctx.TryCancel();
    while (reader->Read(&msg)) {
    }
    EXPECT_EQ(static_cast<absl::StatusCode>(reader->Finish().error_code()),
              absl::StatusCode::kCancelled);
  }
  std::string text = WaitForStreamsDone();
  EXPECT_EQ(MetricValue(text, "deltaserve_streams_in_flight "), 0);
  double decoded = MetricValue(text, "deltaserve_cache_misses_total ");
  // Only the tensors around the cancellation point were decoded, not all 97: the two
  // read, what the transport window (16 KiB, a tensor or two) holds, and the prefetch.
  EXPECT_LE(decoded, 10);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_cache_misses_total "), decoded);
  EXPECT_THAT(text, HasSubstr("deltaserve_requests_total{code=\"CANCELLED\",method=\"StreamWeights\"} 1"));
}

TEST_F(ServerTest, ControlCallsDoNotWaitBehindDecodes) {
  shape_.layers = 8;
  shape_.hidden = 512;  // ~16 M weights: pinning takes a single worker well over 10 ms
  SetUp();
  ServerOptions o = DefaultOptions();
  o.workers = 1;
  StartServer(o);
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("big", MakeContainer("big", 61)).status(), IsOk());
  const std::string pin_ok = "deltaserve_requests_total{code=\"OK\",method=\"PinTask\"} ";
  std::thread pin([&] { EXPECT_THAT(Client()->PinTask("big").status(), IsOk()); });
  // The only worker is inside the pin's decode loop once a tensor has missed the cache.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (MetricValue(server_->MetricsText(), "deltaserve_cache_misses_total ") < 1 &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Microseconds(200));
  }
  // Before the control pool, ListTasks/GetTask/GetBase queued behind the whole pin.
  ASSERT_THAT(client->ListTasks().status(), IsOk());
  ASSERT_THAT(client->GetTask("big").status(), IsOk());
  ASSERT_THAT(client->GetBase().status(), IsOk());
  EXPECT_LT(MetricValue(server_->MetricsText(), pin_ok), 1) << "the pin finished first";
  pin.join();
  EXPECT_EQ(MetricValue(server_->MetricsText(), pin_ok), 1);
}

TEST_F(ServerTest, MetricsEndpointServesMovedCounters) {
  ServerOptions o = DefaultOptions();
  o.metrics_listen = "127.0.0.1:0";
  StartServer(o);
  ASSERT_GT(server_->metrics_port(), 0);
  auto client = Client();
  std::string container = MakeContainer("m", 41);
  ASSERT_THAT(client->PushDeltaFile("m", container).status(), IsOk());
  ASSERT_THAT(client->PullWeightsToMemory("m").status(), IsOk());
  ASSERT_THAT(client->PullWeightsToMemory("m").status(), IsOk());
  ASSERT_THAT(client->FetchDelta("m").status(), IsOk());
  EXPECT_THAT(client->GetTask("nope").status(), StatusIs(absl::StatusCode::kNotFound));
  // A stream leaves deltaserve_streams_in_flight in its reactor's OnDone, which gRPC may
  // run just after the client has seen the stream's status.
  WaitForStreamsDone();

  std::string text = FetchMetricsHttp();
  ASSERT_THAT(text, HasSubstr("deltaserve_requests_total"));
  const uint64_t container_bytes = ReadFileBytes(container).size();
  EXPECT_EQ(MetricValue(text, "deltaserve_requests_total{code=\"OK\",method=\"PutDelta\"} "), 1);
  EXPECT_EQ(MetricValue(text, "deltaserve_requests_total{code=\"OK\",method=\"StreamWeights\"} "), 2);
  EXPECT_EQ(MetricValue(text, "deltaserve_requests_total{code=\"NOT_FOUND\",method=\"GetTask\"} "), 1);
  EXPECT_EQ(MetricValue(text, "deltaserve_request_duration_seconds_count{method=\"StreamWeights\"} "), 2);
  EXPECT_EQ(MetricValue(text, "deltaserve_uploaded_bytes_total "), container_bytes);
  EXPECT_EQ(MetricValue(text, "deltaserve_streamed_bytes_total{method=\"StreamDelta\"} "),
            container_bytes);
  const double merged = 2.0 * 1017344;  // two pulls of the whole (F16/F32) model
  EXPECT_EQ(MetricValue(text, "deltaserve_streamed_bytes_total{method=\"StreamWeights\"} "), merged);
  const double tensors = 1 + 4 * shape_.layers;
  EXPECT_EQ(MetricValue(text, "deltaserve_cache_misses_total "), tensors);
  EXPECT_EQ(MetricValue(text, "deltaserve_cache_hits_total "), tensors);
  EXPECT_EQ(MetricValue(text, "deltaserve_cache_evictions_total "), 0);
  EXPECT_EQ(MetricValue(text, "deltaserve_cache_bytes "), merged / 2);
  EXPECT_EQ(MetricValue(text, "deltaserve_decode_seconds_count "), tensors);
  EXPECT_EQ(MetricValue(text, "deltaserve_merge_seconds_count "), tensors);
  EXPECT_EQ(MetricValue(text, "deltaserve_streams_in_flight "), 0);
  EXPECT_EQ(MetricValue(text, "deltaserve_tenant_tasks{tenant=\"default\"} "), 1);
  EXPECT_EQ(MetricValue(text, "deltaserve_tenant_stored_bytes{tenant=\"default\"} "),
            container_bytes);
  EXPECT_EQ(MetricValue(text, "deltaserve_base_bytes "), merged / 2);
  EXPECT_EQ(MetricValue(text, "deltaserve_base_tensors "), tensors);
  // The commit CMake found at configure time, or "unknown" outside git.
  EXPECT_THAT(text, ::testing::ContainsRegex(
                        "\ndeltaserve_build_info\\{commit=\"([0-9a-f]{12}|unknown)\","
                        "version=\"0\\.1\\.0\"\\} 1\n"));
  // Both saturating dtypes have a series before any saturation.
  EXPECT_EQ(MetricValue(text, "deltaserve_merge_saturated_values_total{dtype=\"F16\"} "), 0);
  EXPECT_EQ(MetricValue(text, "deltaserve_merge_saturated_values_total{dtype=\"BF16\"} "), 0);
}

TEST_F(ServerTest, CacheEvictsWithinBudget) {
  ServerOptions o = DefaultOptions();
  o.cache_bytes = 600 << 10;  // smaller than one merged model (~1 MB)
  StartServer(o);
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("e", MakeContainer("e", 51)).status(), IsOk());
  ASSERT_THAT(client->PullWeightsToMemory("e").status(), IsOk());
  std::string text = server_->MetricsText();
  EXPECT_LE(MetricValue(text, "deltaserve_cache_bytes "), 600 << 10);
  EXPECT_GT(MetricValue(text, "deltaserve_cache_evictions_total "), 0);
  EXPECT_THAT(client->PinTask("e").status(), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(ServerTest, ShutdownDrainsAStreamInProgress) {
  StartServer();
  ASSERT_THAT(Client()->PushDeltaFile("d", MakeContainer("d", 61)).status(), IsOk());
  auto stub = RawStub();
  grpc::ClientContext ctx;
  v1::StreamWeightsRequest req;
  req.set_task("d");
  req.set_chunk_bytes(4096);
  auto reader = stub->StreamWeights(&ctx, req);
  v1::StreamWeightsResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  // The drain deadline only bounds a failure: the stream's end ends the drain.
  std::thread stopper([this] { server_->Shutdown(absl::Seconds(60)); });
  // The stream started before the drain completes in full.
  uint64_t bytes = 0;
  bool ended = false;
  while (reader->Read(&msg)) {
    bytes += msg.chunk().data().size();
    ended |= msg.has_end();
  }
  grpc::Status fin = reader->Finish();
  EXPECT_TRUE(fin.ok()) << fin.error_code() << " " << fin.error_message();
  EXPECT_TRUE(ended);
  EXPECT_EQ(bytes, 1017344u);
  stopper.join();
  server_->Wait();
  server_.reset();
}

}  // namespace
}  // namespace deltaserve::server::testing

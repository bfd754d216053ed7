#include "codec/container.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/forged_container.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ResealedRecord;
using ::deltaserve::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 7 * i);
  return b;
}

struct Fixture {
  ContainerHeader header;
  std::vector<uint8_t> raw = Bytes(2 * 3 * 4, 1);    // F32 [2, 3]
  std::vector<uint8_t> dct = Bytes(40, 9);           // opaque DCT payload
  std::vector<uint8_t> extra = Bytes(2 * 4 * 2, 3);  // F16 2 extra rows of 4
  std::vector<TensorRecord> records;

  Fixture() {
    header.base_hash = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    header.metadata = {{"codec.patch", "16"}, {"tool", "deltactl test"}};
    TensorRecord a;
    a.info = {"bias", DType::kF32, {2, 3}};
    a.encoding = Encoding::kRaw;
    a.payload = raw;
    TensorRecord b;
    b.info = {"emb", DType::kF16, {6, 4}};
    b.base_shape = {4, 4};
    b.encoding = Encoding::kDct;
    b.rows = 4;
    b.cols = 4;
    b.payload = dct;
    b.extra_rows = extra;
    TensorRecord c;
    c.info = {"same", DType::kBF16, {3, 3, 2}};
    c.base_shape = {3, 3, 2};
    c.encoding = Encoding::kUnchanged;
    records = {a, b, c};
    header.tensor_count = records.size();
  }

  std::vector<uint8_t> Build() const {
    auto hb = SerializeHeader(header);
    std::vector<std::vector<uint8_t>> recs;
    std::vector<absl::Span<const uint8_t>> spans;
    for (const auto& r : records) recs.push_back(*SerializeRecord(r));
    for (const auto& r : recs) spans.push_back(r);
    return AssembleContainer(hb, spans);
  }
};

// Parses and verifies every record; the first error, or OK.
absl::Status ParseAll(absl::Span<const uint8_t> bytes) {
  auto reader = ContainerReader::Parse(bytes);
  if (!reader.ok()) return reader.status();
  for (size_t i = 0; i < reader->num_records(); ++i) {
    auto rec = reader->record(i);
    if (!rec.ok()) return rec.status();
  }
  return absl::OkStatus();
}

TEST(ContainerTest, RoundTrip) {
  Fixture f;
  const auto bytes = f.Build();
  ASSERT_OK_AND_ASSIGN(auto reader, ContainerReader::Parse(bytes));
  EXPECT_EQ(reader.header().format_version, kContainerFormatVersion);
  EXPECT_EQ(reader.header().base_hash, f.header.base_hash);
  EXPECT_EQ(reader.header().tensor_count, 3u);
  EXPECT_EQ(reader.header().metadata, f.header.metadata);
  ASSERT_EQ(reader.num_records(), 3u);

  ASSERT_OK_AND_ASSIGN(auto a, reader.record(0));
  EXPECT_EQ(a.info.name, "bias");
  EXPECT_EQ(a.info.dtype, DType::kF32);
  EXPECT_THAT(a.info.shape, ElementsAre(2, 3));
  EXPECT_TRUE(a.base_shape.empty());
  EXPECT_EQ(a.encoding, Encoding::kRaw);
  EXPECT_EQ(std::vector<uint8_t>(a.payload.begin(), a.payload.end()), f.raw);

  ASSERT_OK_AND_ASSIGN(auto b, reader.record(1));
  EXPECT_EQ(b.info.name, "emb");
  EXPECT_EQ(b.info.dtype, DType::kF16);
  EXPECT_THAT(b.info.shape, ElementsAre(6, 4));
  EXPECT_THAT(b.base_shape, ElementsAre(4, 4));
  EXPECT_EQ(b.encoding, Encoding::kDct);
  EXPECT_EQ(b.rows, 4);
  EXPECT_EQ(b.cols, 4);
  EXPECT_EQ(std::vector<uint8_t>(b.payload.begin(), b.payload.end()), f.dct);
  EXPECT_EQ(std::vector<uint8_t>(b.extra_rows.begin(), b.extra_rows.end()), f.extra);

  ASSERT_OK_AND_ASSIGN(auto c, reader.record(2));
  EXPECT_EQ(c.info.name, "same");
  EXPECT_EQ(c.encoding, Encoding::kUnchanged);
  EXPECT_THAT(c.info.shape, ElementsAre(3, 3, 2));
  EXPECT_TRUE(c.payload.empty());

  EXPECT_THAT(reader.record(3), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(reader.trailer_bytes().size(), kContainerTrailerSize);
  EXPECT_EQ(BaseHashHex(reader.header().base_hash), "0102030405060708090a0b0c0d0e0f10");
}

TEST(ContainerTest, AssembleFromReaderPiecesIsIdentical) {
  Fixture f;
  const auto bytes = f.Build();
  ASSERT_OK_AND_ASSIGN(auto reader, ContainerReader::Parse(bytes));
  std::vector<absl::Span<const uint8_t>> recs;
  for (size_t i = 0; i < reader.num_records(); ++i) recs.push_back(reader.record_bytes(i));
  EXPECT_EQ(AssembleContainer(reader.header_bytes(), recs), bytes);
  // Pieces copied elsewhere (as storage keeps them) give the same bytes too.
  std::vector<uint8_t> hb(reader.header_bytes().begin(), reader.header_bytes().end());
  std::vector<std::vector<uint8_t>> copies;
  for (auto r : recs) copies.emplace_back(r.begin(), r.end());
  std::vector<absl::Span<const uint8_t>> spans(copies.begin(), copies.end());
  EXPECT_EQ(AssembleContainer(hb, spans), bytes);
}

TEST(ContainerTest, EmptyContainer) {
  ContainerHeader h;
  const auto bytes = AssembleContainer(SerializeHeader(h), {});
  ASSERT_OK_AND_ASSIGN(auto reader, ContainerReader::Parse(bytes));
  EXPECT_EQ(reader.num_records(), 0u);
  EXPECT_TRUE(reader.header().metadata.empty());
}

TEST(ContainerTest, TruncationAtEveryOffsetIsDetected) {
  Fixture f;
  const auto bytes = f.Build();
  for (size_t n = 0; n < bytes.size(); ++n) {
    const auto s = ParseAll(absl::MakeConstSpan(bytes.data(), n));
    EXPECT_THAT(s, AnyOf(StatusIs(absl::StatusCode::kDataLoss),
                         StatusIs(absl::StatusCode::kInvalidArgument)))
        << "truncated to " << n << " of " << bytes.size();
  }
}

TEST(ContainerTest, FlipAtEveryByteIsDetected) {
  Fixture f;
  const auto bytes = f.Build();
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      auto copy = bytes;
      copy[i] ^= mask;
      const auto s = ParseAll(copy);
      EXPECT_THAT(s, AnyOf(StatusIs(absl::StatusCode::kDataLoss),
                           StatusIs(absl::StatusCode::kInvalidArgument)))
          << "byte " << i << " ^ " << int{mask};
    }
  }
}

TEST(ContainerTest, RandomMultiByteDamageIsDetected) {
  Fixture f;
  const auto bytes = f.Build();
  std::mt19937 rng(42);
  for (int trial = 0; trial < 3000; ++trial) {
    auto copy = bytes;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) copy[rng() % copy.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    if (rng() % 4 == 0) copy.resize(rng() % copy.size());
    if (copy == bytes) continue;
    EXPECT_THAT(ParseAll(copy), AnyOf(StatusIs(absl::StatusCode::kDataLoss),
                                      StatusIs(absl::StatusCode::kInvalidArgument)))
        << "trial " << trial;
  }
}

// New-user trial: a flipped byte near the end said "trailer checksum mismatch (127
// records, trailer says 127)", two equal counts offered as the cause. With the counts
// equal the message says what does not match.
TEST(ContainerTest, TrailerMismatchWithEqualCountsSaysWhatDiffers) {
  Fixture f;
  const auto bytes = f.Build();
  int mismatches = 0;
  for (size_t i = bytes.size() - 64; i < bytes.size(); ++i) {
    auto copy = bytes;
    copy[i] ^= 0x01;
    const absl::Status s = ParseAll(copy);
    if (s.message().find("trailer checksum mismatch") == absl::string_view::npos) continue;
    EXPECT_THAT(s.message(), Not(HasSubstr("3 records, trailer says 3)"))) << "byte " << i;
    if (s.message().find("trailer says") != absl::string_view::npos) continue;  // the count
    ++mismatches;
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss,
                            HasSubstr("the header's and the 3 records' stored checksums do not "
                                      "give the trailer's")))
        << "byte " << i;
  }
  EXPECT_GE(mismatches, 8);  // at least the trailer's own checksum bytes
}

TEST(ContainerTest, FlippedPayloadNamesTheTensor) {
  Fixture f;
  auto bytes = f.Build();
  ASSERT_OK_AND_ASSIGN(auto reader, ContainerReader::Parse(bytes));
  const size_t off = reader.record_bytes(1).data() - bytes.data() + 60;
  bytes[off] ^= 0x10;
  ASSERT_OK_AND_ASSIGN(auto reader2, ContainerReader::Parse(bytes));  // framing intact
  EXPECT_THAT(reader2.record(0), IsOk());
  EXPECT_THAT(reader2.record(1), StatusIs(absl::StatusCode::kDataLoss,
                                          HasSubstr("tensor 'emb': record checksum mismatch")));
}

TEST(ContainerTest, GarbageAppendedOrPrependedIsDetected) {
  Fixture f;
  auto bytes = f.Build();
  auto longer = bytes;
  longer.push_back(0);
  EXPECT_THAT(ParseAll(longer), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<uint8_t> prefixed = {0};
  prefixed.insert(prefixed.end(), bytes.begin(), bytes.end());
  EXPECT_THAT(ParseAll(prefixed), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
}

TEST(ContainerTest, LyingLengthsAreRejected) {
  Fixture f;
  ASSERT_OK_AND_ASSIGN(auto rec, SerializeRecord(f.records[0]));  // "bias" [2,3] F32 raw
  // Layout: magic 4, length 8, name_len 2, "bias" 4, dtype/enc/rank/base_rank 4,
  // shape @22 (2 x 8), rows @38, cols @46, payload_len @54, extra_len @62, payload @70.
  const size_t kShape0 = 22, kRows = 38, kPayloadLen = 54, kExtraLen = 62;
  ASSERT_EQ(rec.size(), 70u + 24 + 8);
  EXPECT_THAT(ParseRecord(rec), IsOk());
  const auto lengths_lie = HasSubstr("tensor 'bias': payload length");
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kPayloadLen, 1ull << 62)),
              StatusIs(absl::StatusCode::kInvalidArgument, lengths_lie));
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kPayloadLen, 23)),
              StatusIs(absl::StatusCode::kInvalidArgument, lengths_lie));
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kExtraLen, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, lengths_lie));
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kExtraLen, ~uint64_t{0})),
              StatusIs(absl::StatusCode::kInvalidArgument, lengths_lie));
  // Consistent lengths, but a payload that does not fit the raw encoding.
  auto shifted = ResealedRecord(ResealedRecord(rec, kPayloadLen, 20), kExtraLen, 4);
  EXPECT_THAT(ParseRecord(shifted),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("raw payload is 20")));
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kRows, 2)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rows = cols = 0")));
  // A shape that does not match the payload size.
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kShape0, 3)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("raw payload")));
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kShape0, static_cast<uint64_t>(-2))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid shape")));
  EXPECT_THAT(ParseRecord(ResealedRecord(rec, kShape0, 1ull << 40)),
              StatusIs(absl::StatusCode::kInvalidArgument));

  // A record length field that lies inside a container: framing catches it.
  Fixture g;
  auto bytes = g.Build();
  ASSERT_OK_AND_ASSIGN(auto reader, ContainerReader::Parse(bytes));
  const size_t rec0 = reader.record_bytes(0).data() - bytes.data();
  for (uint64_t lie : {uint64_t{0}, uint64_t{10}, uint64_t{100}, uint64_t{1} << 40, ~uint64_t{0}}) {
    auto copy = bytes;
    for (int k = 0; k < 8; ++k) copy[rec0 + 4 + k] = static_cast<uint8_t>(lie >> (8 * k));
    EXPECT_THAT(ContainerReader::Parse(copy), StatusIs(absl::StatusCode::kDataLoss))
        << "length " << lie;
  }
  // A header length that lies.
  for (uint32_t lie : {0u, 47u, 1000000u, 0xffffffffu}) {
    auto copy = bytes;
    for (int k = 0; k < 4; ++k) copy[12 + k] = static_cast<uint8_t>(lie >> (8 * k));
    EXPECT_THAT(ContainerReader::Parse(copy), StatusIs(absl::StatusCode::kDataLoss));
  }
}

// Encoding 3 (ecq) was added within format version 1: values above it are refused, and
// an ecq record needs a 2-D view and a payload like a dct one.
TEST(ContainerTest, EncodingByteIsChecked) {
  Fixture f;
  ASSERT_OK_AND_ASSIGN(auto rec, SerializeRecord(f.records[0]));  // "bias" [2,3] F32 raw
  const size_t kDtype = 18;  // dtype, encoding, rank, base_rank, then shape
  uint64_t word = 0;
  for (int k = 0; k < 8; ++k) word |= uint64_t{rec[kDtype + k]} << (8 * k);
  auto with_encoding = [&](uint8_t e) {
    return ResealedRecord(rec, kDtype, (word & ~uint64_t{0xff00}) | uint64_t{e} << 8);
  };
  EXPECT_THAT(ParseRecord(with_encoding(1)), IsOk());
  EXPECT_THAT(ParseRecord(with_encoding(4)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown encoding 4")));
  EXPECT_THAT(ParseRecord(with_encoding(3)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(EncodingName(Encoding::kEcq), "ecq");
  EXPECT_TRUE(IsLossyEncoding(Encoding::kEcq));
  EXPECT_TRUE(IsLossyEncoding(Encoding::kDct));
  EXPECT_FALSE(IsLossyEncoding(Encoding::kRaw));
}

TEST(ContainerTest, VersionMismatchIsInvalidArgument) {
  Fixture f;
  auto bytes = f.Build();
  bytes[8] = 2;  // format_version = 2
  EXPECT_THAT(ContainerReader::Parse(bytes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version 2")));
}

TEST(ContainerTest, SerializeRecordRejectsInconsistentFields) {
  Fixture f;
  TensorRecord r = f.records[0];
  r.payload = absl::MakeConstSpan(f.raw).subspan(1);
  EXPECT_THAT(SerializeRecord(r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'bias'")));
  r = f.records[1];
  r.rows = 3;
  EXPECT_THAT(SerializeRecord(r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("DCT view")));
  r = f.records[1];
  r.extra_rows = {};
  EXPECT_THAT(SerializeRecord(r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("extra rows")));
  r = f.records[1];
  r.base_shape = {7, 4};
  EXPECT_THAT(SerializeRecord(r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("base shape")));
  r = f.records[2];
  r.base_shape = {3, 3, 1};
  EXPECT_THAT(SerializeRecord(r), StatusIs(absl::StatusCode::kInvalidArgument));
  r = f.records[0];
  r.info.name = "";
  EXPECT_THAT(SerializeRecord(r), StatusIs(absl::StatusCode::kInvalidArgument));
  r.info.name = std::string(5000, 'x');
  EXPECT_THAT(SerializeRecord(r), StatusIs(absl::StatusCode::kInvalidArgument));
  r = f.records[0];
  r.info.shape = {1, 1, 1, 1, 1, 1, 1, 1, 6};
  EXPECT_THAT(SerializeRecord(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
}

using TempDir = ::deltaserve::testing::ScopedTempDir;

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(ContainerWriterTest, WritesTheSameBytesAsAssemble) {
  Fixture f;
  TempDir dir;
  const std::string path = dir.File("x.dds");
  ASSERT_OK_AND_ASSIGN(auto w, ContainerWriter::Open(path, f.header));
  for (const auto& r : f.records) ASSERT_THAT(w->Add(r), IsOk());
  EXPECT_FALSE(std::filesystem::exists(path));  // only the .tmp so far
  ASSERT_THAT(w->Finish(), IsOk());
  const auto bytes = ReadFile(path);
  EXPECT_EQ(bytes, f.Build());
  EXPECT_EQ(w->bytes_written(), bytes.size());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_THAT(w->Finish(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(w->Add(f.records[0]), StatusIs(absl::StatusCode::kFailedPrecondition));

  ASSERT_OK_AND_ASSIGN(auto mapped, MappedContainer::Open(path));
  EXPECT_EQ(mapped->reader().num_records(), 3u);
  ASSERT_OK_AND_ASSIGN(auto rec, mapped->reader().record(1));
  EXPECT_EQ(rec.info.name, "emb");
}

TEST(ContainerWriterTest, RecordCountIsEnforced) {
  Fixture f;
  TempDir dir;
  {
    ASSERT_OK_AND_ASSIGN(auto w, ContainerWriter::Open(dir.File("few.dds"), f.header));
    ASSERT_THAT(w->Add(f.records[0]), IsOk());
    EXPECT_THAT(w->Finish(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("1 records added, header declares 3")));
  }
  EXPECT_FALSE(std::filesystem::exists(dir.File("few.dds")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("few.dds.tmp")));  // cleaned up
  ContainerHeader h = f.header;
  h.tensor_count = 2;
  ASSERT_OK_AND_ASSIGN(auto w, ContainerWriter::Open(dir.File("many.dds"), h));
  ASSERT_THAT(w->Add(f.records[0]), IsOk());
  ASSERT_THAT(w->Add(f.records[1]), IsOk());
  EXPECT_THAT(w->Add(f.records[2]),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("tensor 'same'")));
  // A bad record is refused without being written.
  ContainerHeader h1 = f.header;
  h1.tensor_count = 1;
  ASSERT_OK_AND_ASSIGN(auto w1, ContainerWriter::Open(dir.File("bad.dds"), h1));
  TensorRecord bad = f.records[0];
  bad.payload = {};
  EXPECT_THAT(w1->Add(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ContainerWriterTest, OpenErrors) {
  Fixture f;
  EXPECT_THAT(ContainerWriter::Open("/nonexistent-dir/x.dds", f.header),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent-dir/x.dds")));
  EXPECT_THAT(MappedContainer::Open("/nonexistent-dir/x.dds"),
              StatusIs(absl::StatusCode::kNotFound));
  TempDir dir;
  std::ofstream(dir.File("empty.dds")).close();
  EXPECT_THAT(MappedContainer::Open(dir.File("empty.dds")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("empty.dds")));
}

// A library caller of ContainerWriter (CompressModel, not only deltactl, which checks the
// path first) must not block opening a FIFO nor rename over a device node.
TEST(ContainerWriterTest, OpenRefusesAFifoAtThePathOrItsTmp) {
  Fixture f;
  TempDir dir;
  const std::string fifo = dir.File("out.dds");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(ContainerWriter::Open(fifo, f.header),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot write " + fifo + ": it is a FIFO (named pipe)")));
  const std::string other = dir.File("other.dds");
  ASSERT_EQ(::mkfifo((other + ".tmp").c_str(), 0600), 0);
  EXPECT_THAT(ContainerWriter::Open(other, f.header),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(other + ".tmp, where it is written first, is a FIFO")));
  // Both FIFOs are left in place, and nothing was written beside them.
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
  EXPECT_TRUE(std::filesystem::is_fifo(other + ".tmp"));
  EXPECT_FALSE(std::filesystem::exists(other));
  EXPECT_THAT(ContainerWriter::Open("/dev/null", f.header),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a character device")));
}

}  // namespace
}  // namespace deltaserve::codec

#include "codec/container_checks.h"

#include <cstdint>
#include <string>
#include <vector>

#include "codec/delta_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A raw F32 record of `n` <= 16 zeros.
TensorRecord RawF32(const std::string& name, int64_t n) {
  static const std::vector<uint8_t> zeros(64);
  TensorRecord rec;
  rec.info = {name, DType::kF32, {n}};
  rec.payload = absl::MakeConstSpan(zeros.data(), static_cast<size_t>(n) * 4);
  return rec;
}

TEST(Utf8Test, ValidAndInvalidSequences) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("model.layers.0.q_proj"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));  // é € 😀
  EXPECT_FALSE(IsValidUtf8("w\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc0\x80"));          // overlong NUL
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));      // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // truncated
  EXPECT_EQ(Utf8OrEscaped("w\xff*\xc3\xa9"), "w\\xff*\xc3\xa9");
  EXPECT_EQ(Utf8OrEscaped("ok"), "ok");
  EXPECT_THAT(CheckUtf8("w\xff", "task name"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("task name 'w\\xff' is not valid UTF-8")));
}

// Reproduction 8, at compress: `--rule $'w\xff*=raw'` went into the container's
// metadata and made the task unlistable once pushed.
TEST(ContainerChecksTest, NonUtf8RuleAndMetadataAreRefusedWhenMade) {
  CompressOptions options;
  ASSERT_OK_AND_ASSIGN(EncodingRule rule, EncodingRule::Parse("w\xff*=raw"));
  options.rules.push_back(rule);
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("encoding rule glob 'w\\xff*' is not valid UTF-8")));

  ScopedTempDir tmp;
  ContainerHeader header;
  header.metadata = {{"k", "v\xff"}};
  EXPECT_THAT(ContainerWriter::Open(tmp.File("c.dds"), header).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("metadata value of 'k'"), HasSubstr("'v\\xff'"))));
  header.metadata = {};
  header.tensor_count = 1;
  ASSERT_OK_AND_ASSIGN(auto writer, ContainerWriter::Open(tmp.File("c.dds"), header));
  EXPECT_THAT(writer->Add(RawF32("bad\xfe", 1)), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("tensor name 'bad\\xfe' is not valid UTF-8")));
}

// A container made by an older writer, with a non-UTF-8 name and metadata value: it
// still parses (old containers decode as before), CheckContainerStorable refuses it.
TEST(ContainerChecksTest, StorableCheckNamesTheKeyAndTheRecord) {
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> rec_bytes, SerializeRecord(RawF32("x\xff", 1)));
  ContainerHeader header;
  header.tensor_count = 1;
  const std::vector<uint8_t> ok_header = SerializeHeader(header);
  header.metadata = {{"codec.rules", "w\xff*=raw"}};
  const std::vector<uint8_t> bad_header = SerializeHeader(header);

  const std::vector<uint8_t> a = AssembleContainer(bad_header, {rec_bytes});
  ASSERT_OK_AND_ASSIGN(ContainerReader ra, ContainerReader::Parse(a));
  EXPECT_THAT(CheckContainerStorable(ra),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("metadata value of 'codec.rules'"),
                             HasSubstr("'w\\xff*=raw' is not valid UTF-8"))));
  const std::vector<uint8_t> b = AssembleContainer(ok_header, {rec_bytes});
  ASSERT_OK_AND_ASSIGN(ContainerReader rb, ContainerReader::Parse(b));
  EXPECT_THAT(CheckContainerStorable(rb),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("record 0: tensor name 'x\\xff' is not valid UTF-8")));
}

// Reproduction 10: a record of >= 4 GiB failed late in storage with "value is too
// large". Refused by name and size, at the writer and while an upload arrives.
TEST(ContainerChecksTest, RecordsAboveFourGiBAreRefusedByNameAndSize) {
  EXPECT_THAT(CheckRecordStorable("model.embed_tokens.weight", kMaxStoredRecordBytes), IsOk());
  EXPECT_THAT(CheckRecordStorable("model.embed_tokens.weight", uint64_t{4402341478}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'model.embed_tokens.weight'"),
                             HasSubstr("record of 4402341478 bytes (4.10 GiB)"),
                             HasSubstr("4294967295-byte limit"))));
  TensorRecord big;
  big.info = {"big", DType::kF32, {int64_t{1} << 30}};
  // Add checks the size before it reads a byte: a span of that length over no memory.
  big.payload = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(8), uint64_t{1} << 32);
  EXPECT_EQ(SerializedRecordSize(big), 58u + 3 + 8 + (uint64_t{1} << 32));
  ScopedTempDir tmp;
  ContainerHeader header;
  header.tensor_count = 1;
  ASSERT_OK_AND_ASSIGN(auto writer, ContainerWriter::Open(tmp.File("c.dds"), header));
  EXPECT_THAT(writer->Add(big),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'big'"), HasSubstr("4294967365 bytes (4.00 GiB)"))));
}

TEST(ContainerChecksTest, UploadScannerWalksRecordsAsBytesArrive) {
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> r0, SerializeRecord(RawF32("a", 2)));
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> r1, SerializeRecord(RawF32("b", 2)));
  ContainerHeader header;
  header.tensor_count = 2;
  const std::vector<uint8_t> good = AssembleContainer(SerializeHeader(header), {r0, r1});
  ContainerUploadScanner scanner;
  for (size_t n = 0; n <= good.size(); ++n) {
    ASSERT_THAT(scanner.Feed(absl::MakeConstSpan(good.data(), n)), IsOk()) << n;
  }
  // The second record claims 5 GiB: refused once its name has arrived.
  std::vector<uint8_t> lying = good;
  const size_t at = SerializeHeader(header).size() + r0.size();
  const uint64_t five_gib = uint64_t{5} << 30;
  for (int i = 0; i < 8; ++i) lying[at + 4 + i] = static_cast<uint8_t>(five_gib >> (8 * i));
  ContainerUploadScanner second;
  ASSERT_THAT(second.Feed(absl::MakeConstSpan(lying.data(), at + 14)), IsOk());
  EXPECT_THAT(second.Feed(absl::MakeConstSpan(lying.data(), at + 15)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'b'"), HasSubstr("5368709120 bytes (5.00 GiB)"))));
}

// What cannot be a container is refused at the first prefix that shows it, and the
// refusal stays: a wrong first byte; another format version; a header whose checksum
// fails once it is whole; a record without its magic. The header is available once whole.
TEST(ContainerChecksTest, UploadScannerRefusesWhatCannotBeAContainerEarly) {
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> r0, SerializeRecord(RawF32("a", 2)));
  ContainerHeader header;
  header.tensor_count = 1;
  header.base_hash[0] = 7;
  const std::vector<uint8_t> head = SerializeHeader(header);
  const std::vector<uint8_t> good = AssembleContainer(head, {r0});
  auto feed = [](const std::vector<uint8_t>& bytes, size_t n) {
    ContainerUploadScanner scanner;
    absl::Status s = scanner.Feed(absl::MakeConstSpan(bytes.data(), n));
    return s.ok() ? scanner.Feed(absl::MakeConstSpan(bytes.data(), bytes.size())) : s;
  };
  std::vector<uint8_t> junk = good;
  junk[0] = 'X';
  ContainerUploadScanner scanner;
  EXPECT_THAT(scanner.Feed(absl::MakeConstSpan(junk.data(), 1)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
  EXPECT_THAT(scanner.Feed(absl::MakeConstSpan(good.data(), good.size())),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));  // it stays
  std::vector<uint8_t> version = good;
  version[8] = 99;
  EXPECT_THAT(feed(version, head.size()), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   HasSubstr("unsupported container format")));
  std::vector<uint8_t> checksum = good;
  checksum[head.size() - 1] ^= 1;
  ContainerUploadScanner partial;
  EXPECT_THAT(partial.Feed(absl::MakeConstSpan(checksum.data(), head.size() - 1)), IsOk());
  EXPECT_FALSE(partial.header().has_value());
  EXPECT_THAT(partial.Feed(absl::MakeConstSpan(checksum.data(), head.size())),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header checksum mismatch")));
  std::vector<uint8_t> record = good;
  record[head.size() + 1] = 'x';
  EXPECT_THAT(feed(record, head.size() + 14),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr(absl::StrCat("record 0 at offset ", head.size(),
                                              ": truncated or bad magic"))));
  ContainerUploadScanner whole;
  ASSERT_THAT(whole.Feed(absl::MakeConstSpan(good.data(), head.size())), IsOk());
  ASSERT_TRUE(whole.header().has_value());
  EXPECT_EQ(whole.header()->base_hash[0], 7);
  EXPECT_EQ(whole.header()->tensor_count, 1u);
  EXPECT_THAT(whole.Feed(absl::MakeConstSpan(good.data(), good.size())), IsOk());
}

}  // namespace
}  // namespace deltaserve::codec

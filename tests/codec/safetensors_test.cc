#include "codec/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/file.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

namespace fs = std::filesystem;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<uint8_t> Bytes(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

OwnedTensor MakeF32(const std::string& name, std::vector<int64_t> shape,
                    const std::vector<float>& values) {
  return OwnedTensor{{name, DType::kF32, std::move(shape)},
                     Bytes(values.data(), values.size() * 4)};
}

// Raw 16-bit patterns for F16 / BF16 tensors.
OwnedTensor Make16(const std::string& name, DType dtype, std::vector<int64_t> shape,
                   const std::vector<uint16_t>& bits) {
  return OwnedTensor{{name, dtype, std::move(shape)}, Bytes(bits.data(), bits.size() * 2)};
}

std::vector<TensorView> Views(const std::vector<OwnedTensor>& ts) {
  std::vector<TensorView> v;
  for (const OwnedTensor& t : ts) v.push_back(t.view());
  return v;
}

std::vector<float> AsFloats(const TensorView& v) {
  std::vector<float> out(v.data.size() / 4);
  std::memcpy(out.data(), v.data.data(), out.size() * 4);
  return out;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return tmp_.File(name); }

  // Writes a file by hand: 8-byte header length `header_len` (defaults to the real
  // length), the header text and then `data`.
  std::string WriteRaw(const std::string& name, const std::string& header,
                       const std::vector<uint8_t>& data, int64_t header_len = -1) {
    const std::string path = Path(name);
    std::ofstream out(path, std::ios::binary);
    uint64_t len = header_len >= 0 ? static_cast<uint64_t>(header_len) : header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
    out.write(reinterpret_cast<const char*>(data.data()), data.size());
    return path;
  }

  static std::string ReadAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void WriteAll(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }

  // Three tensors of every dtype, a scalar and an empty one.
  static std::vector<OwnedTensor> Sample() {
    return {MakeF32("layer.0.weight", {2, 3}, {1.5f, -2.25f, 0.0f, 3.0e-8f, -1e20f, 7.0f}),
            Make16("layer.1.weight", DType::kF16, {3}, {0x3c00, 0xc000, 0x7bff}),
            Make16("a.bias", DType::kBF16, {2, 2}, {0x3f80, 0xbf80, 0x4049, 0x0001}),
            MakeF32("scale", {}, {0.125f}),
            MakeF32("empty", {0, 4}, {})};
  }

  ScopedTempDir tmp_;
  const fs::path& dir_ = tmp_.path();
};

TEST_F(SafetensorsTest, RoundTripAllDtypesScalarEmptyAndMetadata) {
  const std::vector<OwnedTensor> src = Sample();
  const std::map<std::string, std::string> md = {{"format", "pt"}, {"source", "unit test"}};
  const std::string path = Path("m.safetensors");
  ASSERT_THAT(WriteSafetensors(path, Views(src), md), IsOk());
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  // The header length is a multiple of 8 (spaces pad the JSON).
  const std::string raw = ReadAll(path);
  uint64_t header_len;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + header_len + 24 + 6 + 8 + 4);

  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(path));
  std::vector<std::string> names;
  for (const TensorInfo& t : reader->tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("a.bias", "empty", "layer.0.weight", "layer.1.weight", "scale"));
  EXPECT_EQ(reader->metadata(), md);
  EXPECT_EQ(reader->total_bytes(), 24u + 6 + 8 + 4);

  for (const OwnedTensor& t : src) {
    ASSERT_OK_AND_ASSIGN(TensorView v, reader->Get(t.info.name));
    EXPECT_EQ(v.info.dtype, t.info.dtype) << t.info.name;
    EXPECT_EQ(v.info.shape, t.info.shape) << t.info.name;
    EXPECT_EQ(std::vector<uint8_t>(v.data.begin(), v.data.end()), t.data) << t.info.name;
  }
  ASSERT_OK_AND_ASSIGN(TensorView w, reader->Get("layer.0.weight"));
  EXPECT_THAT(AsFloats(w), ElementsAre(1.5f, -2.25f, 0.0f, 3.0e-8f, -1e20f, 7.0f));
  ASSERT_OK_AND_ASSIGN(TensorView s, reader->Get("scale"));
  EXPECT_TRUE(s.info.shape.empty());
  EXPECT_THAT(AsFloats(s), ElementsAre(0.125f));
  ASSERT_OK_AND_ASSIGN(TensorView e, reader->Get("empty"));
  EXPECT_EQ(e.data.size(), 0u);
  EXPECT_THAT(reader->Get("nope"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST_F(SafetensorsTest, NoTensorsNoMetadata) {
  const std::string path = Path("empty.safetensors");
  ASSERT_THAT(WriteSafetensors(path, {}, {}), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(path));
  EXPECT_TRUE(reader->tensors().empty());
  EXPECT_TRUE(reader->metadata().empty());
  EXPECT_EQ(reader->total_bytes(), 0u);
}

TEST_F(SafetensorsTest, OpensDirectoryWithOneFile) {
  const std::vector<OwnedTensor> src = Sample();
  ASSERT_THAT(WriteSafetensors(Path("only.safetensors"), Views(src), {}), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(dir_.string()));
  EXPECT_EQ(reader->tensors().size(), 5u);
  ASSERT_THAT(WriteSafetensors(Path("second.safetensors"), Views(src), {}), IsOk());
  EXPECT_THAT(ModelReader::Open(dir_.string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ambiguous")));
}

TEST_F(SafetensorsTest, ShardedRoundTrip) {
  std::vector<OwnedTensor> src;
  for (int i = 0; i < 7; ++i) {
    std::vector<float> v(10 + i);
    for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>(i * 100 + k) * 0.5f;
    src.push_back(MakeF32(absl::StrCat("t", i), {static_cast<int64_t>(v.size())}, v));
  }
  src.push_back(Make16("half", DType::kF16, {2}, {0x3c00, 0x4000}));
  const std::map<std::string, std::string> md = {{"format", "pt"}};
  const std::string dir = Path("sharded");
  // t0..t6 take 40, 44, ..., 64 bytes. 100-byte shards, packed greedily in order:
  // {t0, t1} 84 B, {t2, t3} 100 B, {t4} 56 B, {t5} 60 B, {t6, half} 68 B.
  ASSERT_THAT(WriteShardedSafetensors(dir, Views(src), md, 100), IsOk());
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") ++shards;
  }
  EXPECT_EQ(shards, 5);
  EXPECT_TRUE(fs::exists(dir + "/model-00001-of-00005.safetensors"));
  EXPECT_EQ((fs::file_size(dir + "/model-00002-of-00005.safetensors") - 100) % 8, 0u);
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  // metadata.total_size: the sum of the tensors' data bytes, a JSON number, as Hugging
  // Face writes it: 40 + 44 + ... + 64 (t0..t6) + 4 (half).
  ASSERT_OK_AND_ASSIGN(std::string index_text,
                       common::ReadFileToString(dir + "/model.safetensors.index.json"));
  ASSERT_OK_AND_ASSIGN(nlohmann::json index, common::ParseJson(index_text, "index"));
  ASSERT_TRUE(index["metadata"]["total_size"].is_number_unsigned()) << index_text;
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 368u);
  EXPECT_EQ(index["metadata"]["format"], "pt");

  for (const std::string& open_path : {dir, dir + "/model.safetensors.index.json"}) {
    ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(open_path));
    EXPECT_EQ(reader->tensors().size(), src.size());
    EXPECT_EQ(reader->metadata(), md);
    for (const OwnedTensor& t : src) {
      ASSERT_OK_AND_ASSIGN(TensorView v, reader->Get(t.info.name));
      EXPECT_EQ(v.info.shape, t.info.shape);
      EXPECT_EQ(std::vector<uint8_t>(v.data.begin(), v.data.end()), t.data) << t.info.name;
    }
    ASSERT_OK_AND_ASSIGN(TensorView t6, reader->Get("t6"));
    EXPECT_EQ(AsFloats(t6)[15], 307.5f);
  }
}

TEST_F(SafetensorsTest, ShardedRewriteRemovesTheEarlierShardsOnly) {
  const std::vector<OwnedTensor> src = Sample();
  const std::string dir = Path("rewrite");
  // 5 shards of one tensor each, then 1 shard: the 5 go, other files stay.
  ASSERT_THAT(WriteShardedSafetensors(dir, Views(src), {}, 1), IsOk());
  ASSERT_TRUE(fs::exists(dir + "/model-00005-of-00005.safetensors"));
  for (const char* other : {"/config.json", "/model-1-of-2.safetensors", "/notes.safetensors"}) {
    std::ofstream(dir + other) << "{}";
  }
  ASSERT_THAT(WriteShardedSafetensors(dir, Views(src), {}, 1 << 20), IsOk());
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"config.json", "model-00001-of-00001.safetensors",
                                          "model-1-of-2.safetensors", "notes.safetensors",
                                          "model.safetensors.index.json"}));
  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(reader->tensors().size(), src.size());
}

TEST_F(SafetensorsTest, TfjsModelJsonGivenAsAModelSaysToConvertIt) {
  const std::string path = Path("model.json");
  std::ofstream(path) << R"({"modelTopology": {}, "weightsManifest": []})";
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a TF.js model (modelTopology/weightsManifest), not a "
                                 "safetensors index: convert it first with deltactl convert")));
}

TEST_F(SafetensorsTest, OpensDirectoryWithOtherIndexName) {
  const std::vector<OwnedTensor> src = Sample();
  const std::string dir = Path("renamed");
  ASSERT_THAT(WriteShardedSafetensors(dir, Views(src), {}, 1 << 20), IsOk());
  fs::rename(dir + "/model.safetensors.index.json", dir + "/pytorch_model.safetensors.index.json");
  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(dir));
  EXPECT_EQ(reader->tensors().size(), src.size());
}

TEST_F(SafetensorsTest, ShardedLargeTensorGetsItsOwnShard) {
  std::vector<OwnedTensor> src = {MakeF32("small", {1}, {1.0f}),
                                  MakeF32("big", {8}, {1, 2, 3, 4, 5, 6, 7, 8}),
                                  MakeF32("tail", {1}, {2.0f})};
  const std::string dir = Path("big");
  ASSERT_THAT(WriteShardedSafetensors(dir, Views(src), {}, 16), IsOk());
  EXPECT_TRUE(fs::exists(dir + "/model-00003-of-00003.safetensors"));
  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(dir));
  ASSERT_OK_AND_ASSIGN(TensorView big, reader->Get("big"));
  EXPECT_THAT(AsFloats(big), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(WriteShardedSafetensors(dir, Views(src), {}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------------- writer errors

TEST_F(SafetensorsTest, WriterRejectsSizeMismatchAndDuplicates) {
  OwnedTensor bad = MakeF32("w", {2, 2}, {1, 2, 3});
  EXPECT_THAT(WriteSafetensors(Path("x.safetensors"), {bad.view()}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'w'"), HasSubstr("12 bytes"), HasSubstr("needs 16"))));
  OwnedTensor a = MakeF32("dup", {1}, {1});
  EXPECT_THAT(WriteSafetensors(Path("x.safetensors"), {a.view(), a.view()}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'dup'"), HasSubstr("duplicate"))));
  EXPECT_THAT(WriteShardedSafetensors(Path("xs"), {a.view(), a.view()}, {}, 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
  OwnedTensor neg{{"neg", DType::kF32, {-1}}, {}};
  EXPECT_THAT(WriteSafetensors(Path("x.safetensors"), {neg.view()}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'neg'")));
  OwnedTensor reserved = MakeF32("__metadata__", {1}, {1});
  EXPECT_THAT(WriteSafetensors(Path("x.safetensors"), {reserved.view()}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(fs::exists(Path("x.safetensors")));
  EXPECT_FALSE(fs::exists(Path("x.safetensors.tmp")));
}

TEST_F(SafetensorsTest, WriterRejectsInvalidUtf8) {
  OwnedTensor a = MakeF32("bad\xff", {1}, {1});
  EXPECT_THAT(WriteSafetensors(Path("u.safetensors"), {a.view()}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("u.safetensors")));
  OwnedTensor b = MakeF32("ok", {1}, {1});
  EXPECT_THAT(WriteSafetensors(Path("u.safetensors"), {b.view()}, {{"k", "\xc3"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("u.safetensors")));
  EXPECT_FALSE(fs::exists(Path("u.safetensors")));
}

TEST_F(SafetensorsTest, StreamingWriterMatchesWriteSafetensorsByteForByte) {
  const std::vector<OwnedTensor> src = Sample();
  const std::map<std::string, std::string> md = {{"k", "v"}};
  ASSERT_THAT(WriteSafetensors(Path("whole.safetensors"), Views(src), md), IsOk());
  std::vector<TensorInfo> infos;
  for (const OwnedTensor& t : src) infos.push_back(t.info);
  const std::string path = Path("streamed.safetensors");
  ASSERT_OK_AND_ASSIGN(auto writer, SafetensorsWriter::Open(path, infos, md));
  EXPECT_TRUE(fs::exists(path + ".tmp"));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_THAT(writer->Append(src[1].view().data),  // the F16 tensor's 6 bytes, not 24
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'layer.0.weight'"), HasSubstr("needs 24"))));
  for (size_t i = 0; i + 1 < src.size(); ++i) ASSERT_THAT(writer->Append(src[i].data), IsOk());
  EXPECT_THAT(writer->Commit(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         AllOf(HasSubstr("tensor 'empty'"), HasSubstr("4 of 5"))));
  ASSERT_THAT(writer->Append(src.back().data), IsOk());
  EXPECT_THAT(writer->Append(src.back().data),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already written")));
  ASSERT_THAT(writer->Commit(), IsOk());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(ReadAll(path), ReadAll(Path("whole.safetensors")));
}

TEST_F(SafetensorsTest, StreamingWriterAbandonedLeavesNothing) {
  const std::string path = Path("abandoned.safetensors");
  WriteAll(path, "previous contents");
  {
    ASSERT_OK_AND_ASSIGN(auto writer, SafetensorsWriter::Open(path, {{"a", DType::kF32, {1}}}, {}));
    ASSERT_THAT(writer->Append(MakeF32("a", {1}, {1}).data), IsOk());
  }  // destroyed without Commit
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(ReadAll(path), "previous contents");
  EXPECT_THAT(SafetensorsWriter::Open(path, {{"a", DType::kF32, {1}}, {"a", DType::kF16, {}}}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
}

TEST_F(SafetensorsTest, WriterReportsIoErrorsNamingThePath) {
  OwnedTensor a = MakeF32("a", {1}, {1});
  absl::Status s = WriteSafetensors(Path("no/such/dir/x.safetensors"), {a.view()}, {});
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound, HasSubstr("no/such/dir/x.safetensors")));
}

// ---------------------------------------------------------------- corruption

constexpr char kOneTensor[] =
    R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST_F(SafetensorsTest, MissingPathIsNotFound) {
  EXPECT_THAT(ModelReader::Open(Path("absent.safetensors")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent.safetensors")));
  EXPECT_THAT(ModelReader::Open(dir_.string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no .safetensors")));
}

TEST_F(SafetensorsTest, HandWrittenFileReads) {
  std::vector<float> v = {4.0f, -0.5f};
  ASSERT_OK_AND_ASSIGN(auto r, ModelReader::Open(WriteRaw("ok.safetensors", kOneTensor,
                                                          Bytes(v.data(), 8))));
  ASSERT_OK_AND_ASSIGN(TensorView w, r->Get("w"));
  EXPECT_THAT(AsFloats(w), ElementsAre(4.0f, -0.5f));
}

TEST_F(SafetensorsTest, HeaderLengthHuge) {
  const std::string path =
      WriteRaw("huge.safetensors", kOneTensor, std::vector<uint8_t>(8), int64_t{200} << 20);
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("huge.safetensors"), HasSubstr("header length 209715200"),
                             HasSubstr("exceeds"))));
  // 2^64 - 1 must not wrap around in the bounds check.
  const std::string max =
      WriteRaw("max.safetensors", kOneTensor, std::vector<uint8_t>(8), -1);
  std::string raw = ReadAll(max);
  std::memset(raw.data(), 0xff, 8);
  WriteAll(max, raw);
  EXPECT_THAT(ModelReader::Open(max), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("exceeds")));
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  const std::string path = WriteRaw("past.safetensors", kOneTensor, {}, 4096);
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("past.safetensors"), HasSubstr("past the end"))));
}

TEST_F(SafetensorsTest, TruncatedFile) {
  const std::string path = Path("t.safetensors");
  const std::vector<OwnedTensor> src = Sample();
  ASSERT_THAT(WriteSafetensors(path, Views(src), {}), IsOk());
  const std::string raw = ReadAll(path);
  // Cut 2 bytes off the data buffer: the last two tensors in the file, "scale" [38, 42)
  // and the empty "empty" [42, 42), now end past it; names are checked in sorted order.
  WriteAll(path, raw.substr(0, raw.size() - 2));
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("t.safetensors"), HasSubstr("tensor 'empty'"),
                             HasSubstr("[42, 42]"),
                             HasSubstr("outside the data buffer"))));
  WriteAll(path, raw.substr(0, 5));
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too short")));
  WriteAll(path, "");
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too short")));
}

TEST_F(SafetensorsTest, EveryTruncationAndByteFlipIsAnErrorOrValid) {
  const std::string path = Path("f.safetensors");
  const std::vector<OwnedTensor> src = Sample();
  ASSERT_THAT(WriteSafetensors(path, Views(src), {{"k", "v"}}), IsOk());
  const std::string raw = ReadAll(path);
  int errors = 0;
  for (size_t len = 0; len < raw.size(); ++len) {
    WriteAll(path, raw.substr(0, len));
    errors += !ModelReader::Open(path).ok();
  }
  EXPECT_EQ(errors, static_cast<int>(raw.size()));  // every proper prefix is rejected
  uint64_t header_len;
  std::memcpy(&header_len, raw.data(), 8);
  for (size_t i = 0; i < 8 + header_len; ++i) {
    for (uint8_t flip : {0x01, 0x20, 0x80}) {
      std::string bad = raw;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      WriteAll(path, bad);
      auto r = ModelReader::Open(path);  // must not crash; either outcome is legal
      if (r.ok()) {
        for (const TensorInfo& t : (*r)->tensors()) {
          ASSERT_OK_AND_ASSIGN(TensorView v, (*r)->Get(t.name));
          EXPECT_EQ(v.data.size(), t.num_bytes());
        }
      } else {
        EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path)));
      }
    }
  }
}

TEST_F(SafetensorsTest, MalformedJson) {
  const std::string path = WriteRaw("bad.safetensors", R"({"w":{"dtype":"F32",)",
                                    std::vector<uint8_t>(8));
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad.safetensors"), HasSubstr("malformed JSON"))));
  EXPECT_THAT(ModelReader::Open(WriteRaw("arr.safetensors", "[1,2]", {})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a JSON object")));
  EXPECT_THAT(ModelReader::Open(WriteRaw("deep.safetensors", std::string(100000, '['), {})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed JSON")));
  // Well-formed but 10^6 levels deep: parsed and freed without recursion.
  const std::string deep = "{\"w\":" + std::string(1000000, '[') + std::string(1000000, ']') + "}";
  EXPECT_THAT(ModelReader::Open(WriteRaw("deep2.safetensors", deep, {})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w': entry is not a JSON object")));
}

TEST_F(SafetensorsTest, BadEntryFields) {
  struct Case {
    const char* header;
    const char* expect;
  };
  const Case cases[] = {
      {R"({"w":[1]})", "tensor 'w': entry is not a JSON object"},
      {R"({"w":{"shape":[2],"data_offsets":[0,8]}})", "tensor 'w': missing 'dtype'"},
      {R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", "tensor 'w': missing 'shape'"},
      {R"({"w":{"dtype":"F32","shape":[2]}})", "tensor 'w': missing 'data_offsets'"},
      {R"({"w":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", "tensor 'w' dtype"},
      {R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "negative"},
      {R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", "non-negative integer"},
      {R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", "tensor 'w' shape"},
      {R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
       "tensor 'w' shape"},
      {R"({"w":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,8]}})",
       "more than 2^63"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", "[begin, end]"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", "begin > end"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-1,8]}})", "negative"},
      {R"({"__metadata__":{"k":1}})", "__metadata__ value of 'k' is not a string"},
      {R"({"__metadata__":[]})", "__metadata__ is not a JSON object"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteRaw("e.safetensors", c.header, std::vector<uint8_t>(8));
    EXPECT_THAT(ModelReader::Open(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  AllOf(HasSubstr("e.safetensors"),
                                                        HasSubstr(c.expect))))
        << c.header;
  }
}

TEST_F(SafetensorsTest, OffsetsOutsideFile) {
  const std::string path = WriteRaw(
      "o.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      std::vector<uint8_t>(8));
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("o.safetensors"), HasSubstr("tensor 'w'"),
                             HasSubstr("[4, 12]"), HasSubstr("data buffer of 8 bytes"))));
  const std::string huge = WriteRaw(
      "h.safetensors",
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551616]}})",
      std::vector<uint8_t>(8));
  EXPECT_THAT(ModelReader::Open(huge), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("tensor 'w'")));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  const std::string path = WriteRaw(
      "ov.safetensors",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F16","shape":[2],"data_offsets":[6,10]}})",
      std::vector<uint8_t>(16));
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("ov.safetensors"), HasSubstr("tensor 'b'"),
                             HasSubstr("overlaps tensor 'a'"))));
  // Identical ranges overlap too; an empty tensor inside another does not.
  EXPECT_THAT(ModelReader::Open(WriteRaw(
                  "same.safetensors",
                  R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                  std::vector<uint8_t>(8))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlaps")));
  EXPECT_THAT(ModelReader::Open(WriteRaw(
                  "emptyin.safetensors",
                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                  std::vector<uint8_t>(8))),
              IsOk());
}

TEST_F(SafetensorsTest, SizeMismatch) {
  const std::string path = WriteRaw(
      "sz.safetensors", R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})",
      std::vector<uint8_t>(8));
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("sz.safetensors"), HasSubstr("tensor 'w'"),
                             HasSubstr("span 8 bytes"), HasSubstr("[3] x BF16 needs 6"))));
}

TEST_F(SafetensorsTest, UnsupportedDtype) {
  // I64 reads (reproduction 5 of issue 11); a dtype safetensors does not define fails.
  const std::string i64 =
      WriteRaw("i64.safetensors", R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
               std::vector<uint8_t>(8));
  ASSERT_OK_AND_ASSIGN(auto r, ModelReader::Open(i64));
  EXPECT_EQ(r->tensors()[0].dtype, DType::kI64);
  const std::string path =
      WriteRaw("c64.safetensors", R"({"ids":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})",
               std::vector<uint8_t>(8));
  EXPECT_THAT(
      ModelReader::Open(path),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("c64.safetensors"), HasSubstr("tensor 'ids'"), HasSubstr("C64"))));
}

// ---------------------------------------------------------------- sharded corruption

class ShardedCorruptionTest : public SafetensorsTest {
 protected:
  void SetUp() override {
    src_ = {MakeF32("a", {2}, {1, 2}), MakeF32("b", {2}, {3, 4}), MakeF32("c", {2}, {5, 6})};
    sharded_ = Path("s");
    ASSERT_THAT(WriteShardedSafetensors(sharded_, Views(src_), {{"k", "v"}}, 8), IsOk());
    index_ = sharded_ + "/model.safetensors.index.json";
  }
  std::vector<OwnedTensor> src_;
  std::string sharded_, index_;
};

TEST_F(ShardedCorruptionTest, MissingShard) {
  fs::remove(sharded_ + "/model-00002-of-00003.safetensors");
  EXPECT_THAT(ModelReader::Open(sharded_),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("model.safetensors.index.json"),
                             HasSubstr("model-00002-of-00003.safetensors"),
                             HasSubstr("tensor 'b'"))));
}

TEST_F(ShardedCorruptionTest, DuplicateTensorAcrossShards) {
  // Shard 2 now holds "a" and "b"; "a" is also in shard 1, where the index maps it.
  ASSERT_THAT(WriteSafetensors(sharded_ + "/model-00002-of-00003.safetensors",
                               {src_[0].view(), src_[1].view()}, {}),
              IsOk());
  EXPECT_THAT(ModelReader::Open(sharded_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model-00002-of-00003.safetensors"),
                             HasSubstr("tensor 'a'"), HasSubstr("also in shard"),
                             HasSubstr("model-00001-of-00003.safetensors"))));
}

TEST_F(ShardedCorruptionTest, TensorListedButMissingFromShard) {
  ASSERT_THAT(WriteSafetensors(sharded_ + "/model-00003-of-00003.safetensors", {}, {}), IsOk());
  EXPECT_THAT(ModelReader::Open(index_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model-00003-of-00003.safetensors"),
                             HasSubstr("tensor 'c'"), HasSubstr("missing"))));
}

TEST_F(ShardedCorruptionTest, BadIndex) {
  WriteAll(index_, R"({"weight_map": {"a": "model-00001-of-00003.safetensors",)");
  EXPECT_THAT(ModelReader::Open(index_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed JSON")));
  WriteAll(index_, R"({"metadata": {}})");
  EXPECT_THAT(ModelReader::Open(index_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight_map")));
  WriteAll(index_, R"({"weight_map": {"a": "../escape.safetensors"}})");
  EXPECT_THAT(ModelReader::Open(index_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'a'"), HasSubstr("bad shard path"))));
  WriteAll(index_, R"({"weight_map": {"a": 7}})");
  EXPECT_THAT(ModelReader::Open(index_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'a'")));
}

TEST_F(ShardedCorruptionTest, ShardTensorNotInIndexAndIndexMetadataMerge) {
  WriteAll(index_,
           R"({"metadata": {"total_size": 24, "k": "index", "n": 7},)"
           R"( "weight_map": {"a": "model-00001-of-00003.safetensors",)"
           R"( "b": "model-00002-of-00003.safetensors"}})");
  // Shard 3 is not referenced, so it is not opened; "a" and "b" load. Index metadata
  // wins over the first shard's; non-string scalars become their JSON text;
  // total_size (the index's own figure) is dropped.
  ASSERT_OK_AND_ASSIGN(auto r, ModelReader::Open(index_));
  EXPECT_EQ(r->tensors().size(), 2u);
  EXPECT_EQ(r->metadata(),
            (std::map<std::string, std::string>{{"k", "index"}, {"n", "7"}}));
  // A shard holding a tensor the index does not list is inconsistent.
  ASSERT_THAT(WriteSafetensors(sharded_ + "/model-00002-of-00003.safetensors",
                               {src_[1].view(), src_[2].view()}, {}),
              IsOk());
  EXPECT_THAT(ModelReader::Open(index_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'c'"), HasSubstr("not in the weight_map"))));
}

}  // namespace
}  // namespace deltaserve::codec

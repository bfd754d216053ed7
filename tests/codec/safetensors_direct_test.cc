#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "codec/safetensors.h"
#include "common/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<OwnedTensor> Tensors() {
  // Odd sizes, so that tensors start and end inside O_DIRECT blocks; one empty tensor.
  std::vector<OwnedTensor> ts;
  auto add = [&](std::string name, DType dtype, std::vector<int64_t> shape) {
    TensorInfo info{std::move(name), dtype, std::move(shape)};
    std::vector<uint8_t> data(info.num_bytes());
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + ts.size());
    ts.push_back(OwnedTensor{std::move(info), std::move(data)});
  };
  add("embed", DType::kF16, {1001, 37});
  add("norm", DType::kF32, {37});
  add("empty", DType::kF16, {0, 4});
  add("proj", DType::kBF16, {3, 4099});
  return ts;
}

TEST(DirectSafetensorsWriterTest, WritesTheSameBytesAsWriteSafetensors) {
  ScopedTempDir tmp;
  const std::vector<OwnedTensor> ts = Tensors();
  std::vector<TensorView> views;
  std::vector<TensorInfo> infos;
  for (const OwnedTensor& t : ts) {
    views.push_back(t.view());
    infos.push_back(t.info);
  }
  const std::map<std::string, std::string> md = {{"k", "v"}};
  ASSERT_THAT(WriteSafetensors(tmp.File("ref.safetensors"), views, md), IsOk());
  auto w = DirectSafetensorsWriter::Open(tmp.File("direct.safetensors"), infos, md);
  if (absl::IsUnimplemented(w.status())) GTEST_SKIP() << w.status();
  ASSERT_TRUE(w.ok()) << w.status();
  for (const OwnedTensor& t : ts) {
    absl::StatusOr<absl::Span<uint8_t>> out = (*w)->Next();
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->size(), t.data.size());
    std::copy(t.data.begin(), t.data.end(), out->begin());
  }
  EXPECT_THAT((*w)->Next().status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT((*w)->Commit(), IsOk());
  absl::StatusOr<std::string> ref = common::ReadFileToString(tmp.File("ref.safetensors"));
  absl::StatusOr<std::string> got = common::ReadFileToString(tmp.File("direct.safetensors"));
  ASSERT_TRUE(ref.ok() && got.ok());
  EXPECT_TRUE(*ref == *got) << "sizes " << ref->size() << " vs " << got->size();
}

TEST(DirectSafetensorsWriterTest, CommitNamesATensorNotWrittenAndLeavesNoFile) {
  ScopedTempDir tmp;
  std::vector<TensorInfo> infos;
  for (const OwnedTensor& t : Tensors()) infos.push_back(t.info);
  const std::string path = tmp.File("m.safetensors");
  {
    auto w = DirectSafetensorsWriter::Open(path, infos, {});
    if (absl::IsUnimplemented(w.status())) GTEST_SKIP() << w.status();
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Next().ok());
    EXPECT_THAT((*w)->Commit(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("norm")));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(DirectSafetensorsWriterTest, BadInfosAreInvalidArgumentBeforeAnyFile) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("m.safetensors");
  std::vector<TensorInfo> infos = {{"a", DType::kF16, {2}}, {"a", DType::kF16, {2}}};
  EXPECT_THAT(DirectSafetensorsWriter::Open(path, infos, {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

}  // namespace
}  // namespace deltaserve::codec

// Inputs shaped like real published checkpoints that used to load wrongly (issue 11):
// duplicate names, git-LFS pointers, index shards escaping the model directory.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "codec/safetensors.h"
#include "common/usage_error.h"
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
using ::testing::HasSubstr;

class SafetensorsInputsTest : public ::testing::Test {
 protected:
  // A file of 8-byte header length, header text, `data_bytes` zero bytes.
  std::string WriteRaw(const std::string& name, const std::string& header, size_t data_bytes) {
    std::string bytes(8, '\0');
    const uint64_t len = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(len >> (8 * i));
    bytes += header;
    bytes.append(data_bytes, '\0');
    return WriteText(name, bytes);
  }
  std::string WriteText(const std::string& name, const std::string& bytes) {
    const std::string path = tmp_.File(name);
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  }
  ScopedTempDir tmp_;
};

// Reproduction 1: "key00" twice used to load as one tensor holding the last entry.
TEST_F(SafetensorsInputsTest, DuplicateTensorNameIsRefused) {
  const std::string path =
      WriteRaw("dup.safetensors",
               R"({"key00":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
               R"("key00":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})",
               32);
  EXPECT_THAT(ModelReader::Open(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                                AllOf(HasSubstr("dup.safetensors"),
                                                      HasSubstr("duplicate tensor name 'key00'"))));
}

// Sibling: every JSON parser of the codec shares ParseJson, so a repeated key in an
// index's weight_map or in __metadata__ is refused as well.
TEST_F(SafetensorsInputsTest, DuplicateKeysInIndexAndMetadataAreRefused) {
  WriteRaw("s/a.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  const std::string index =
      WriteText("s/model.safetensors.index.json",
                R"({"weight_map": {"a": "a.safetensors", "a": "b.safetensors"}})");
  EXPECT_THAT(ModelReader::Open(index), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("duplicate key 'a' in 'weight_map'")));
  const std::string md = WriteRaw("md.safetensors", R"({"__metadata__":{"k":"1","k":"2"}})", 0);
  EXPECT_THAT(ModelReader::Open(md), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("duplicate key 'k' in '__metadata__'")));
}

// Reproduction 9: a 128-byte git-LFS pointer in place of the weights.
TEST_F(SafetensorsInputsTest, GitLfsPointerIsNamedAsSuch) {
  std::string pointer =
      "version https://git-lfs.github.com/spec/v1\n"
      "oid sha256:4d7a2b0c3e1f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b\n"
      "size 440\n";
  ASSERT_EQ(pointer.size(), 128u);
  const std::string path = WriteText("model.safetensors", pointer);
  EXPECT_THAT(ModelReader::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("header length 2336927755350992246"),
                             HasSubstr("the file is 128 bytes"), HasSubstr("git-LFS pointer"))));
}

// The first bytes of a zip archive whose first entry is `entry` (a local file header:
// signature, version 20, no flags, stored, zero times, CRC and sizes, the name).
std::string ZipStart(const std::string& entry) {
  std::string z("PK\x03\x04\x14\x00", 6);
  z.append(20, '\0');
  z += static_cast<char>(entry.size());
  z += '\0';
  z.append(2, '\0');  // extra field length
  return z + entry + std::string(64, 'x');
}

// New-user trial (session 9): a PyTorch checkpoint given as --finetuned said only "header
// length 578712552184433488 exceeds the limit of 104857600 bytes". Each common format
// that is not safetensors is named, with how to convert it (ModelReader::Open is what
// deltactl and deltaserved --base use).
TEST_F(SafetensorsInputsTest, OtherModelFormatsAreNamedWithAConversion) {
  const struct {
    const char* name;
    std::string bytes;
    std::vector<std::string> want;
  } cases[] = {
      {"model.pt",
       ZipStart("archive/data.pkl"),
       {"; it is a PyTorch checkpoint (torch.save's zip format, .pt/.pth/.bin), not "
        "safetensors: convert it with PYTHONPATH=build/python python3 -c \"import torch; "
        "from deltaserve.safetensors import write_file; sd = torch.load('",
        "model.pt', map_location='cpu'); sd = sd.get('state_dict', sd); "
        "write_file('model.safetensors', sd)\""}},
      {"pytorch_model.bin",
       std::string("\x80\x02}q\x00(X\x06\x00\x00\x00weight", 17) + std::string(64, 'x'),
       {"; it is a Python pickle (protocol 2: a legacy torch.save checkpoint or "
        "pytorch_model.bin?), not safetensors: convert it with PYTHONPATH=build/python "
        "python3 -c \"import torch;"}},
      {"model.gguf",
       std::string("GGUF\x03\x00\x00\x00", 8) + std::string(64, 'x'),
       {"; it is a GGUF (llama.cpp) file, not safetensors: use the Hugging Face safetensors "
        "checkpoint it was made from"}},
      {"w.npy",
       std::string("\x93NUMPY\x01\x00v\x00{'descr': '<f4'", 25) + std::string(64, ' '),
       {"; it is a numpy .npy array (one unnamed array), not safetensors",
        "from deltaserve.safetensors import write_file; write_file('model.safetensors', "
        "{'weight': np.load('"}},
      {"w.npz",
       ZipStart("arr_0.npy"),
       {"; it is a numpy .npz archive, not safetensors: convert it with "
        "PYTHONPATH=build/python python3 -c \"import numpy as np; from deltaserve.safetensors "
        "import write_file; write_file('model.safetensors', dict(np.load('"}},
      {"model.h5",
       std::string("\x89HDF\r\n\x1a\n", 8) + std::string(64, '\0'),
       {"; it is an HDF5 file (Keras .h5 weights?), not safetensors"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = WriteText(c.name, c.bytes);
    absl::StatusOr<std::unique_ptr<ModelReader>> r = ModelReader::Open(path);
    ASSERT_THAT(r.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr(path + ": header length ")));
    for (const std::string& piece : c.want) EXPECT_THAT(r.status().message(), HasSubstr(piece));
    // Another format is a usage error (deltactl and deltaserved exit 2 for it).
    EXPECT_TRUE(common::IsUsageError(r.status()));
  }
  // A damaged safetensors file (no format recognised) is not.
  const std::string damaged = WriteText("damaged.safetensors", std::string("\x40\x00\x00\x00\x00"
                                                                           "\x00\x00\x00{\"a\"",
                                                                           12));
  absl::StatusOr<std::unique_ptr<ModelReader>> r = ModelReader::Open(damaged);
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                   HasSubstr("header length 64 runs past the end")));
  EXPECT_FALSE(common::IsUsageError(r.status()));
  // A directory without safetensors names the model file it holds.
  WriteText("pt/pytorch_model.bin", ZipStart("archive/data.pkl"));
  WriteText("pt/config.json", "{}");
  EXPECT_THAT(ModelReader::Open(tmp_.File("pt")),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("pt: no .safetensors file or index; it holds "
                                 "pytorch_model.bin, a model in another format")));
  EXPECT_TRUE(common::IsUsageError(ModelReader::Open(tmp_.File("pt")).status()));
  WriteText("tfjs/model.json", "{}");
  EXPECT_THAT(ModelReader::Open(tmp_.File("tfjs")),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("; it holds model.json (a TF.js graph model?): deltactl convert "
                                 "--in " + tmp_.File("tfjs") + "/model.json --out "
                                 "model.safetensors")));
}

// Reproduction 7 (index half): a shard that is a symlink to a file outside the model
// directory is refused, naming the index, the tensor and the path; a NUL byte in a
// shard name is refused instead of truncating the name.
TEST_F(SafetensorsInputsTest, IndexShardOutsideTheDirectoryIsRefused) {
  const std::string outside = WriteRaw(
      "outside/secret.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  fs::create_directories(tmp_.path() / "m");
  fs::create_symlink(outside, tmp_.path() / "m" / "a.safetensors");
  const std::string index =
      WriteText("m/model.safetensors.index.json", R"({"weight_map": {"a": "a.safetensors"}})");
  EXPECT_THAT(ModelReader::Open(index),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("tensor 'a'"),
                             HasSubstr("'a.safetensors'"), HasSubstr("outside the model"))));

  WriteText("m/model.safetensors.index.json",
            R"({"weight_map": {"a": "a.safetensors\u0000.txt"}})");
  EXPECT_THAT(ModelReader::Open(index),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'a'"), HasSubstr("'a.safetensors\\x00.txt'"),
                             HasSubstr("NUL byte"))));

  // A symlink that stays inside the directory is followed.
  fs::remove(tmp_.path() / "m" / "a.safetensors");
  WriteRaw("m/real/a.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  fs::create_symlink("real/a.safetensors", tmp_.path() / "m" / "a.safetensors");
  WriteText("m/model.safetensors.index.json", R"({"weight_map": {"a": "a.safetensors"}})");
  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(index));
  EXPECT_EQ(reader->tensors().size(), 1u);
}

// New-user trial: a delta container given as the base (--base and --delta swapped)
// said only "header length 1891886005028672324 exceeds the limit".
TEST_F(SafetensorsInputsTest, ContainerGivenAsModelIsNamedAsSuch) {
  const std::string dds = WriteText("d.dds", std::string("DSDELTA\x1a\x01\0\0\0\xed\0\0\0", 16));
  EXPECT_THAT(ModelReader::Open(dds),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("header length 1891886005028672324"),
                             HasSubstr("it is a deltaserve delta container (.dds), not a model"))));
}

// New-user trial: a sharded checkpoint in the Hugging Face hub cache (the layout
// `huggingface-cli download` leaves: snapshots/REV/FILE -> ../../blobs/HASH) was refused
// as "outside the model directory (a symlink?)". A link into the same repository's
// blobs/ is followed; one elsewhere, or from a directory not named snapshots/REV, is not.
TEST_F(SafetensorsInputsTest, HuggingFaceHubCacheSnapshotIsRead) {
  const std::string repo = "hub/models--acme--m";
  WriteRaw(repo + "/blobs/1a2b", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  WriteText(repo + "/blobs/3c4d", R"({"weight_map": {"a": "model-00001-of-00001.safetensors"}})");
  const fs::path snap = tmp_.path() / repo / "snapshots" / "0123abcd";
  fs::create_directories(snap);
  fs::create_symlink("../../blobs/1a2b", snap / "model-00001-of-00001.safetensors");
  fs::create_symlink("../../blobs/3c4d", snap / "model.safetensors.index.json");
  ASSERT_OK_AND_ASSIGN(auto reader, ModelReader::Open(snap.string()));
  ASSERT_EQ(reader->tensors().size(), 1u);
  EXPECT_EQ(reader->tensors()[0].name, "a");

  // Out of the repository (another repository's blobs) is still refused.
  WriteRaw("hub/models--other--x/blobs/9f",
           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  fs::remove(snap / "model-00001-of-00001.safetensors");
  fs::create_symlink("../../../models--other--x/blobs/9f",
                     snap / "model-00001-of-00001.safetensors");
  EXPECT_THAT(ModelReader::Open(snap.string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the model")));

  // The same links from a directory that is not snapshots/REV are refused.
  const fs::path plain = tmp_.path() / repo / "notsnapshots" / "0123abcd";
  fs::create_directories(plain);
  fs::create_symlink("../../blobs/1a2b", plain / "model-00001-of-00001.safetensors");
  fs::create_symlink("../../blobs/3c4d", plain / "model.safetensors.index.json");
  EXPECT_THAT(ModelReader::Open(plain.string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the model")));
}

}  // namespace
}  // namespace deltaserve::codec

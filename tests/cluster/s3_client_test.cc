#include "cluster/s3_client.h"

#include <unistd.h>

#include <string>

#include "cluster/blob_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster/live_env.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::cluster {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string Pattern(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 131 + (i >> 13));
  return s;
}

std::string UniqueKey(const std::string& what) {
  return "test/" + std::to_string(::getpid()) + "/" + what;
}

TEST(Sha256HexTest, KnownVectors) {
  EXPECT_EQ(Sha256Hex({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex(Bytes("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(S3OptionsTest, ValidateNamesTheField) {
  S3Options o{.endpoint = "127.0.0.1:9000", .access_key = "a", .secret_key = "b", .bucket = "c"};
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("endpoint")));
  o.endpoint = "http://127.0.0.1:9000";
  EXPECT_THAT(o.Validate(), IsOk());
  o.bucket = "";
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bucket")));
  EXPECT_THAT(BlobStoreOptions{.part_bytes = 1 << 20}.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 MiB")));
}

TEST(S3ClientLiveTest, PutHeadRangedGetDelete) {
  DS_SKIP_WITHOUT_CLUSTER();
  S3Client s3(testing::LiveS3());
  ASSERT_THAT(s3.CreateBucket(), IsOk());
  ASSERT_THAT(s3.CreateBucket(), IsOk());  // idempotent
  std::string key = UniqueKey("a b+c"), data = Pattern(100000, 3);
  ASSERT_THAT(s3.PutObject(key, Bytes(data)), IsOk());
  ASSERT_OK_AND_ASSIGN(uint64_t size, s3.HeadObject(key));
  EXPECT_EQ(size, 100000u);
  absl::StatusOr<std::string> whole = s3.GetObject(key);
  ASSERT_THAT(whole.status(), IsOk());
  EXPECT_EQ(*whole, data);
  absl::StatusOr<std::string> part = s3.GetObject(key, 99990, 20);  // past the end: cut
  ASSERT_THAT(part.status(), IsOk());
  EXPECT_EQ(*part, data.substr(99990));
  absl::StatusOr<std::string> mid = s3.GetObject(key, 12345, 1000);
  ASSERT_THAT(mid.status(), IsOk());
  EXPECT_EQ(*mid, data.substr(12345, 1000));
  EXPECT_THAT(s3.GetObject(key, 200000, 10).status(), StatusIs(absl::StatusCode::kOutOfRange));
  absl::StatusOr<std::vector<std::string>> keys = s3.ListObjects(UniqueKey(""));
  ASSERT_THAT(keys.status(), IsOk());
  EXPECT_THAT(*keys, ::testing::Contains(key));
  ASSERT_THAT(s3.DeleteObject(key), IsOk());
  EXPECT_THAT(s3.HeadObject(key).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(s3.GetObject(key).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(s3.DeleteObject(key), IsOk());  // absent: still OK
}

TEST(S3ClientLiveTest, WrongSecretIsPermissionDenied) {
  DS_SKIP_WITHOUT_CLUSTER();
  S3Options o = testing::LiveS3();
  o.secret_key = "not-the-secret";
  S3Client s3(o);
  EXPECT_THAT(s3.PutObject(UniqueKey("x"), Bytes("x")),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(S3ClientLiveTest, UnreachableEndpointIsUnavailable) {
  S3Options o{.endpoint = "http://127.0.0.1:9",
              .access_key = "a",
              .secret_key = "b",
              .bucket = "c",
              .connect_timeout_s = 2};
  EXPECT_THAT(S3Client(o).HeadObject("k").status(), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(BlobStoreLiveTest, MultipartRoundTripIsContentAddressed) {
  DS_SKIP_WITHOUT_CLUSTER();
  BlobStore blobs(testing::LiveS3(), BlobStoreOptions{.part_bytes = 5 << 20});
  ASSERT_THAT(blobs.s3().CreateBucket(), IsOk());
  std::string data = Pattern((11 << 20) + 17, static_cast<uint8_t>(::getpid()));  // 3 parts
  absl::StatusOr<std::string> digest = blobs.Put(Bytes(data));
  ASSERT_THAT(digest.status(), IsOk());
  EXPECT_EQ(*digest, Sha256Hex(Bytes(data)));
  ASSERT_OK_AND_ASSIGN(uint64_t size, blobs.s3().HeadObject(BlobStore::Key(*digest)));
  EXPECT_EQ(size, data.size());
  absl::StatusOr<std::string> back = blobs.Get(*digest, data.size());
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_TRUE(*back == data);
  absl::StatusOr<std::string> range = blobs.GetRange(*digest, (5 << 20) - 3, 6);
  ASSERT_THAT(range.status(), IsOk());
  EXPECT_EQ(*range, data.substr((5 << 20) - 3, 6));                 // across a part boundary
  ASSERT_OK_AND_ASSIGN(std::string again, blobs.Put(Bytes(data)));  // already there
  EXPECT_EQ(again, *digest);
  EXPECT_THAT(blobs.Get(*digest, data.size() + 1).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("expected")));
  ASSERT_THAT(blobs.Delete(*digest), IsOk());
  EXPECT_THAT(blobs.Get(*digest, data.size()).status(), StatusIs(absl::StatusCode::kNotFound));
}

TEST(BlobStoreLiveTest, CorruptObjectIsDataLoss) {
  DS_SKIP_WITHOUT_CLUSTER();
  BlobStore blobs(testing::LiveS3(), BlobStoreOptions{});
  ASSERT_THAT(blobs.s3().CreateBucket(), IsOk());
  std::string good = Pattern(4096, 1), bad = good;
  bad[100] ^= 1;
  std::string digest = Sha256Hex(Bytes(good));
  // The object under good's name holds other bytes of the same size.
  ASSERT_THAT(blobs.s3().PutObject(BlobStore::Key(digest), Bytes(bad)), IsOk());
  EXPECT_THAT(blobs.Get(digest, good.size()).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
  ASSERT_THAT(blobs.Delete(digest), IsOk());
}

}  // namespace
}  // namespace deltaserve::cluster

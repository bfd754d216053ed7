// BlobStore: containers in an S3 bucket, content-addressed: the object of a container
// is "blobs/sha256/<lowercase hex SHA-256 of its bytes>", written once and never changed
// (an identical container maps to the same object, so a re-push uploads nothing). Large
// containers go up as multipart uploads; reads are ranged GETs, every whole read is
// checked against the digest.
//
// Thread safety: thread-safe (S3Client is). Calls block on the network.
// Errors: those of S3Client; DataLoss when bytes read back do not match the digest or
// the expected size.
#ifndef DELTASERVE_CLUSTER_BLOB_STORE_H_
#define DELTASERVE_CLUSTER_BLOB_STORE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cluster/s3_client.h"

namespace deltaserve::cluster {

struct BlobStoreOptions {
  // Containers larger than this are uploaded in parts of this size (S3 wants parts of
  // >= 5 MiB but the last) and read back in ranged GETs of this size. Larger: fewer
  // requests, more memory per request in flight. Default: 16 MiB. Must be >= 5 MiB.
  uint64_t part_bytes = 16ull << 20;

  absl::Status Validate() const;
};

class BlobStore {
 public:
  BlobStore(S3Options s3, BlobStoreOptions options) : s3_(std::move(s3)), options_(options) {}

  // The object key of `digest`.
  static std::string Key(absl::string_view digest) { return absl::StrCat("blobs/sha256/", digest); }

  // Uploads `data` unless an object of the same digest and size exists; returns the
  // digest. A failed multipart upload is aborted (its parts freed).
  absl::StatusOr<std::string> Put(absl::Span<const uint8_t> data) const;
  // The whole blob, read in ranged GETs of part_bytes, checked: DataLoss unless it is
  // `size` bytes with SHA-256 `digest`. NotFound if there is no such object.
  absl::StatusOr<std::string> Get(absl::string_view digest, uint64_t size) const;
  // Bytes [offset, offset + length) of the blob (not verified: a part of a blob has no
  // digest of its own).
  absl::StatusOr<std::string> GetRange(absl::string_view digest, uint64_t offset,
                                       uint64_t length) const;
  // Deletes the blob (OK if absent). Only garbage collection calls this, after its grace
  // period (cluster/cluster_store.h).
  absl::Status Delete(absl::string_view digest) const;

  const S3Client& s3() const { return s3_; }

 private:
  S3Client s3_;
  BlobStoreOptions options_;
};

}  // namespace deltaserve::cluster

#endif  // DELTASERVE_CLUSTER_BLOB_STORE_H_

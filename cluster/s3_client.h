// S3Client: the few S3 calls the cluster mode needs, over Debian's libcurl with its
// built-in AWS Signature Version 4 (CURLOPT_AWS_SIGV4), path-style URLs
// (<endpoint>/<bucket>/<key>). Tested against OpenStack Swift's s3api middleware
// (tests/cluster); any S3-compatible server that takes SigV4 path-style requests works.
//
// Every request carries x-amz-content-sha256 with the payload's real SHA-256, so the
// server verifies each body it receives (a bad one is refused, BadDigest / 400).
//
// Thread safety: thread-safe; each call uses its own curl easy handle. Calls block
// (network I/O): run them on a worker pool, never in a gRPC callback.
//
// Errors (messages name the method, bucket and key and the server's error code):
//   NotFound            404 (NoSuchKey / NoSuchBucket / NoSuchUpload)
//   PermissionDenied    403 (bad credentials or signature)
//   FailedPrecondition  412 / 409 (precondition failed, bucket conflict)
//   OutOfRange          416 (range past the end)
//   DataLoss            400 BadDigest / a body that does not match its checksum
//   InvalidArgument     other 4xx
//   Unavailable         5xx, connection refused/reset, timeouts (retry elsewhere)
#ifndef DELTASERVE_CLUSTER_S3_CLIENT_H_
#define DELTASERVE_CLUSTER_S3_CLIENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace deltaserve::cluster {

struct S3Options {
  // "http://host:port" (or https). Required.
  std::string endpoint;
  // Signing region. Default: us-east-1.
  std::string region = "us-east-1";
  std::string access_key, secret_key;  // Required.
  std::string bucket;                  // Required.
  // Connect timeout and whole-request timeout per call. Default: 5 s, 300 s.
  int connect_timeout_s = 5;
  int request_timeout_s = 300;

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// Lowercase hex SHA-256 of `data` (OpenSSL).
std::string Sha256Hex(absl::Span<const uint8_t> data);

class S3Client {
 public:
  explicit S3Client(S3Options options) : options_(std::move(options)) {}

  // Creates the bucket; OK if it exists already and is ours.
  absl::Status CreateBucket() const;
  // Whole-object upload (one request). For large objects use the multipart calls.
  absl::Status PutObject(absl::string_view key, absl::Span<const uint8_t> data) const;
  // Size of the object in bytes. NotFound if absent.
  absl::StatusOr<uint64_t> HeadObject(absl::string_view key) const;
  // Bytes [offset, offset + length) of the object (ranged GET); length 0 = to the end.
  // Fewer bytes than asked only at the end of the object.
  absl::StatusOr<std::string> GetObject(absl::string_view key, uint64_t offset = 0,
                                        uint64_t length = 0) const;
  // Deletes the object (OK if absent: S3 semantics).
  absl::Status DeleteObject(absl::string_view key) const;
  // Keys under `prefix`, at most 1000 (one listing page): enough for tests and GC
  // sweeps that run repeatedly.
  absl::StatusOr<std::vector<std::string>> ListObjects(absl::string_view prefix) const;

  // Multipart upload: Create returns the upload id; parts are numbered from 1, each
  // (but the last) at least 5 MiB; Complete takes the ETags UploadPart returned, in
  // part order. Abort frees the parts of an unfinished upload.
  absl::StatusOr<std::string> CreateMultipartUpload(absl::string_view key) const;
  absl::StatusOr<std::string> UploadPart(absl::string_view key, absl::string_view upload_id,
                                         int part_number, absl::Span<const uint8_t> data) const;
  absl::Status CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                       const std::vector<std::string>& etags) const;
  absl::Status AbortMultipartUpload(absl::string_view key, absl::string_view upload_id) const;

  const S3Options& options() const { return options_; }

 private:
  struct Response {
    long code = 0;
    std::string body;
    std::string etag;
    uint64_t content_length = 0;
  };
  // One signed request. `query` is appended after '?' (already encoded, sorted).
  absl::StatusOr<Response> Call(absl::string_view method, absl::string_view key,
                                absl::string_view query, absl::Span<const uint8_t> body,
                                const std::vector<std::string>& headers) const;
  // The Status for a non-2xx response of `what`.
  absl::Status HttpError(const Response& r, absl::string_view what, absl::string_view key) const;

  S3Options options_;
};

}  // namespace deltaserve::cluster

#endif  // DELTASERVE_CLUSTER_S3_CLIENT_H_

#include "cluster/blob_store.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace deltaserve::cluster {

absl::Status BlobStoreOptions::Validate() const {
  if (part_bytes < (5ull << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob store: part_bytes must be >= 5 MiB (got ", part_bytes, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> BlobStore::Put(absl::Span<const uint8_t> data) const {
  std::string digest = Sha256Hex(data);
  std::string key = Key(digest);
  absl::StatusOr<uint64_t> have = s3_.HeadObject(key);
  if (have.ok() && *have == data.size()) return digest;
  if (!have.ok() && !absl::IsNotFound(have.status())) return have.status();
  if (data.size() <= options_.part_bytes) {
    DS_RETURN_IF_ERROR(s3_.PutObject(key, data));
    return digest;
  }
  DS_ASSIGN_OR_RETURN(std::string upload, s3_.CreateMultipartUpload(key));
  std::vector<std::string> etags;
  absl::Status s;
  for (uint64_t off = 0; off < data.size() && s.ok(); off += options_.part_bytes) {
    uint64_t n = std::min<uint64_t>(options_.part_bytes, data.size() - off);
    absl::StatusOr<std::string> etag =
        s3_.UploadPart(key, upload, static_cast<int>(etags.size() + 1), data.subspan(off, n));
    if (etag.ok()) {
      etags.push_back(*etag);
    } else {
      s = etag.status();
    }
  }
  if (s.ok()) s = s3_.CompleteMultipartUpload(key, upload, etags);
  if (!s.ok()) {
    s3_.AbortMultipartUpload(key, upload).IgnoreError();  // best effort; s says why
    return s;
  }
  DS_ASSIGN_OR_RETURN(uint64_t stored, s3_.HeadObject(key));
  if (stored != data.size()) {
    return absl::DataLossError(absl::StrCat("blob ", digest, ": stored ", stored,
                                            " bytes after upload, sent ", data.size()));
  }
  return digest;
}

absl::StatusOr<std::string> BlobStore::Get(absl::string_view digest, uint64_t size) const {
  std::string out;
  out.reserve(size);
  std::string key = Key(digest);
  while (out.size() < size) {
    uint64_t n = std::min<uint64_t>(options_.part_bytes, size - out.size());
    absl::StatusOr<std::string> part = s3_.GetObject(key, out.size(), n);
    if (absl::IsOutOfRange(part.status())) break;  // shorter than the pointer says
    if (!part.ok()) return part.status();
    if (part->empty()) break;
    out += *part;
  }
  if (out.size() != size) {
    return absl::DataLossError(
        absl::StrCat("blob ", digest, ": read ", out.size(), " bytes, expected ", size));
  }
  std::string actual = Sha256Hex({reinterpret_cast<const uint8_t*>(out.data()), out.size()});
  if (actual != digest) {
    return absl::DataLossError(
        absl::StrCat("blob ", digest, ": content hashes to ", actual, " (corrupt object)"));
  }
  return out;
}

absl::StatusOr<std::string> BlobStore::GetRange(absl::string_view digest, uint64_t offset,
                                                uint64_t length) const {
  return s3_.GetObject(Key(digest), offset, length);
}

absl::Status BlobStore::Delete(absl::string_view digest) const {
  return s3_.DeleteObject(Key(digest));
}

}  // namespace deltaserve::cluster

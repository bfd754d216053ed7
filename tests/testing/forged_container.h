// Containers a hostile or buggy writer could make: a real container with one record's
// fields edited, the record re-serialized (codec::SerializeRecord: valid on its own,
// checksum resealed) and the trailer recomputed, so that framing, checksums and base
// hash all hold and only checks against the base can tell. For tests of those checks.
#ifndef DELTASERVE_TESTS_TESTING_FORGED_CONTAINER_H_
#define DELTASERVE_TESTS_TESTING_FORGED_CONTAINER_H_

#include <xxhash.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "codec/container.h"

namespace deltaserve::testing {

// Bytes of `container` with the record of tensor `name` replaced by edit(record).
// NotFound if no record has that name; SerializeRecord's InvalidArgument if the edited
// record is invalid on its own.
inline absl::StatusOr<std::vector<uint8_t>> ForgedContainer(
    const codec::ContainerReader& container, const std::string& name,
    const std::function<void(codec::TensorRecord*)>& edit) {
  std::vector<std::vector<uint8_t>> forged(container.num_records());
  bool found = false;
  for (size_t i = 0; i < container.num_records(); ++i) {
    absl::StatusOr<codec::TensorRecord> rec = container.record(i);
    if (!rec.ok()) return rec.status();
    if (rec->info.name != name) continue;
    found = true;
    edit(&*rec);
    absl::StatusOr<std::vector<uint8_t>> bytes = codec::SerializeRecord(*rec);
    if (!bytes.ok()) return bytes.status();
    forged[i] = *std::move(bytes);
  }
  if (!found) return absl::NotFoundError(absl::StrCat("no record named '", name, "'"));
  std::vector<absl::Span<const uint8_t>> records;
  for (size_t i = 0; i < container.num_records(); ++i) {
    records.push_back(forged[i].empty() ? container.record_bytes(i)
                                        : absl::MakeConstSpan(forged[i]));
  }
  return codec::AssembleContainer(container.header_bytes(), records);
}

// An "unchanged" edit: the record claims to be its base tensor bit for bit, in `dtype`
// (no payload, base shape = shape).
inline std::function<void(codec::TensorRecord*)> UnchangedAs(codec::DType dtype) {
  return [dtype](codec::TensorRecord* r) {
    r->encoding = codec::Encoding::kUnchanged;
    r->info.dtype = dtype;
    r->base_shape = r->info.shape;
    r->rows = r->cols = 0;
    r->payload = {};
    r->extra_rows = {};
  };
}

// Rewrites the u64 at `off` of a serialized record and reseals its checksum (XXH3-64 of
// every byte before it): a lie only field validation can catch.
inline std::vector<uint8_t> ResealedRecord(std::vector<uint8_t> rec, size_t off, uint64_t v) {
  for (int k = 0; k < 8; ++k) rec[off + k] = static_cast<uint8_t>(v >> (8 * k));
  const uint64_t sum = XXH3_64bits(rec.data(), rec.size() - 8);
  for (int k = 0; k < 8; ++k) rec[rec.size() - 8 + k] = static_cast<uint8_t>(sum >> (8 * k));
  return rec;
}

}  // namespace deltaserve::testing

#endif  // DELTASERVE_TESTS_TESTING_FORGED_CONTAINER_H_

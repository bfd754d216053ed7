// Side files: small files stored with a task beside its delta (a checkpoint's
// config.json, generation_config.json, tokenizer files, ...), so that a checkpoint
// directory pulled from the store loads like the original finetuned one.
//
// A task's side files are committed, replaced and deleted in the same RocksDB
// WriteBatch as the task (storage/store.h), counted in the tenant's quota, listed in
// its meta with their size and XXH3-64 (storage/key_schema.h), and verified on every
// read (DataLoss on a mismatch).
//
// Limits (ValidateSideFiles; InvalidArgument / ResourceExhausted naming the file):
//   name   1..255 bytes of UTF-8, no '/', '\\', NUL or other control character, not
//          "." or "..", not ending in ".safetensors" or ".safetensors.index.json" (those
//          are the checkpoint's weight files, written beside the side files)
//   size   at most kMaxSideFileBytes (32 MiB) per file, kMaxSideFilesTotalBytes
//          (64 MiB) per task, kMaxSideFiles (64) files per task; empty files are kept
#ifndef DELTASERVE_STORAGE_SIDE_FILES_H_
#define DELTASERVE_STORAGE_SIDE_FILES_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace deltaserve::storage {

// Largest side file, bytes. A Hugging Face tokenizer.json is 2-20 MB.
inline constexpr uint64_t kMaxSideFileBytes = 32ull << 20;
// Largest sum of one task's side files, bytes.
inline constexpr uint64_t kMaxSideFilesTotalBytes = 64ull << 20;
// Most side files one task may carry.
inline constexpr size_t kMaxSideFiles = 64;
// Longest side file name, bytes.
inline constexpr size_t kMaxSideFileNameBytes = 255;

// A side file to commit. `data` is not owned: it must outlive the commit call.
struct SideFile {
  std::string name;
  std::string_view data;
};

// A stored side file, as listed in the task meta.
struct SideFileEntry {
  std::string name;
  uint64_t bytes = 0;    // file size
  uint64_t xxh3_64 = 0;  // XXH3-64 (seed 0) of its bytes

  bool operator==(const SideFileEntry&) const = default;
};

// InvalidArgument "side file '<escaped name>': ..." unless `name` follows the naming
// rule above.
absl::Status ValidateSideFileName(std::string_view name);

// Every name valid (ValidateSideFileName) and distinct (InvalidArgument "appears
// twice"); ResourceExhausted naming the file and its size for a file above
// kMaxSideFileBytes, naming the total for more than kMaxSideFilesTotalBytes, and for
// more than kMaxSideFiles files.
absl::Status ValidateSideFiles(absl::Span<const SideFileEntry> files);

// Name, size and XXH3-64 of each file, in the given order.
std::vector<SideFileEntry> DescribeSideFiles(absl::Span<const SideFile> files);

// XXH3-64 (seed 0) of `data`: the side files' checksum.
uint64_t SideFileChecksum(std::string_view data);

// Sum of the entries' sizes.
uint64_t SideFileBytes(absl::Span<const SideFileEntry> files);

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_SIDE_FILES_H_

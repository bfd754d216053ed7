// Local file helpers of the client: a sequential writer that commits by rename, and a
// read-only memory map.
#ifndef DELTASERVE_CLIENT_INTERNAL_FILES_H_
#define DELTASERVE_CLIENT_INTERNAL_FILES_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace deltaserve::client {

// Writes `path + ".tmp"`, and on Commit() flushes, fsyncs and
// renames it to `path`. Destroyed without Commit(): the temporary file is removed. Errors
// are errno statuses naming the file. Not thread-safe.
class FileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<FileWriter>> Open(const std::string& path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  absl::Status Append(absl::Span<const uint8_t> data);
  uint64_t size() const { return size_; }
  // Flushes and closes the file without renaming it (for a scratch file that is read
  // back and then discarded: it is still removed by the destructor).
  absl::Status Close();
  absl::Status Commit();
  const std::string& tmp_path() const { return tmp_path_; }

 private:
  FileWriter(std::string path, std::string tmp_path, std::FILE* f)
      : path_(std::move(path)), tmp_path_(std::move(tmp_path)), file_(f) {}
  std::string path_, tmp_path_;
  std::FILE* file_;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// A whole file mapped read-only. An empty file maps to an empty span.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  MappedFile(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  const uint8_t* data_;
  size_t size_;
};

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_FILES_H_

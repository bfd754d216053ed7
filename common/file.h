// Files for every deltaserve library: read-only memory mappings and writers that
// replace a file atomically (write `path.tmp`, fsync, rename).
#ifndef DELTASERVE_COMMON_FILE_H_
#define DELTASERVE_COMMON_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace deltaserve::common {

// What fstat(2) says of a file: its identity (device, inode) and the fields that a
// change of its bytes moves (size; mtime on every write or truncation; ctime on those
// and on metadata changes: chmod, chown, links, renames, utimensat). Times in ns since
// the epoch. Reads (atime) move none of them.
struct FileStamp {
  uint64_t dev = 0;
  uint64_t ino = 0;
  int64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;

  bool SameFile(const FileStamp& o) const { return dev == o.dev && ino == o.ino; }
  bool operator==(const FileStamp& o) const {
    return SameFile(o) && size == o.size && mtime_ns == o.mtime_ns && ctime_ns == o.ctime_ns;
  }
  bool operator!=(const FileStamp& o) const { return !(*this == o); }
};

// fstat(fd) / stat(path) (symlinks followed) as a FileStamp. Errors: the errno mapped by
// absl::ErrnoToStatus, naming `path` (for fd, the name given for messages).
absl::StatusOr<FileStamp> StampOf(int fd, const std::string& path);
absl::StatusOr<FileStamp> StampOf(const std::string& path);

// absl::ErrnoToStatus(err, message), except that EIO (an I/O error of the device: data
// written may not have reached the disk, or what was read is lost) is DataLoss, not
// absl's Unknown. ENOSPC/EDQUOT stay ResourceExhausted, EFBIG OutOfRange, EACCES/EROFS
// PermissionDenied, ENOENT NotFound. The one errno mapping of the project's file code.
absl::Status ErrnoStatus(int err, absl::string_view message);

// A whole file's bytes, read-only, for the object's lifetime. Thread-safe (immutable
// after Open).
//   kMap (default): mapped (POSIX mmap, PROT_READ, MAP_PRIVATE), not copied. If another
//     process rewrites the file in place, the bytes change under the reader; if it
//     truncates the file, reading the lost pages raises SIGBUS. For files the caller
//     owns or that are immutable for as long as it runs.
//   kCopy: read once into private anonymous memory (made read-only), so that later
//     writes, truncation or replacement of the file change nothing here. Costs the
//     file's size in process memory (not shared with other processes' page cache) and
//     one read at open. For a long-running process's inputs (deltaserved's base).
class MappedFile {
 public:
  enum class Residency { kMap, kCopy };

  // Errors: NotFound (no such file), InvalidArgument (a directory or not a regular
  // file), DataLoss (kCopy: the file shrank while it was read), or the errno mapped by
  // absl::ErrnoToStatus for open/fstat/mmap/read failures. Every message names `path`.
  // An empty file maps to an empty span.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path,
                                                          Residency residency = Residency::kMap);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  Residency residency() const { return residency_; }
  // The file as fstat saw it at Open (before it was mapped or read), so that a
  // long-running reader of a kMap file can tell later whether it changed
  // (server/internal/base_watch.h).
  const FileStamp& stamp() const { return stamp_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size, Residency residency,
             const FileStamp& stamp)
      : path_(std::move(path)), data_(data), size_(size), residency_(residency), stamp_(stamp) {}

  std::string path_;
  const uint8_t* data_;  // nullptr when size_ == 0
  size_t size_;
  Residency residency_;
  FileStamp stamp_;
};

// True if `rel` is a non-empty relative path with no ".." component, i.e. a file name
// from an untrusted manifest or index that cannot point outside its directory.
bool IsContainedRelativePath(const std::string& rel);

// Resolves `rel`, a file name read from an untrusted manifest or index, inside the
// directory `dir` ("" = the working directory). Policy (realpath containment): `rel`
// must be a contained relative path (IsContainedRelativePath) without NUL bytes, and
// realpath(dir/rel) must lie inside realpath(dir), so a symlink is followed only while
// it stays in the directory. One exception, the Hugging Face hub cache: in a directory
// `.../snapshots/<revision>`, whose files are symlinks `../../blobs/<hash>`, a target
// inside `.../blobs` (the same repository's blob store) is accepted too. Returns the
// resolved absolute path, to be opened instead
// of dir/rel. Errors: InvalidArgument for a bad name or a resolution outside `dir` (the
// message quotes `rel`, with NUL bytes escaped, and where it leads); NotFound if it
// does not exist; other errno-derived codes from realpath. The caller prefixes the
// manifest and entry it came from.
absl::StatusOr<std::string> ResolveContainedPath(const std::string& dir, const std::string& rel);

// InvalidArgument naming the path if the output `path`, or `path + ".tmp"` where it is
// written first, is a FIFO, a device or a socket (symlinks followed): opening a FIFO for
// writing blocks until a reader comes, and the rename of the finished .tmp file would
// replace the node at `path` (as root, `--out /dev/null` would replace /dev/null). OK for
// a regular file, a directory or nothing there. Writes nothing; for writers that open
// files themselves (the writers below call it).
absl::Status RefuseSpecialOutput(const std::string& path);

// Checks, before a long job, that a file can be created at `path`: InvalidArgument
// "cannot write PATH: it is a directory (HINT)" if `path` is a directory (`hint` says
// what to do instead; none when empty), InvalidArgument "cannot write PATH: it is a
// FIFO (named pipe), not a regular file ..." (or a character device, block device,
// socket; symlinks followed) for `path` or `path.tmp` (as the writers below refuse),
// NotFound "cannot write PATH: no directory DIR" if its parent directory does not
// exist. Writes nothing.
absl::Status CheckOutputFilePath(const std::string& path, absl::string_view hint);

// Reads a whole (small) file. Same errors as MappedFile::Open.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `path + ".tmp"` sequentially; Commit() fsyncs, closes and renames it over
// `path`, so readers never see a half-written file. Destroyed without a successful
// Commit(), the .tmp file is removed and `path` is left as it was. Open refuses, with
// InvalidArgument naming the path, a `path` or `path.tmp` that is a FIFO, a device or a
// socket (opening a FIFO would block; the rename would replace the node). Other errors
// are errno-derived statuses naming the file. Not thread-safe.
class AtomicFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Open(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  absl::Status Append(absl::Span<const uint8_t> data);
  // Writes `data` at byte `offset` of the .tmp file (pwrite; size() is unchanged): for
  // writers that place pieces themselves. Thread-safe against other WriteAt calls (of
  // disjoint ranges), not against Append, Reserve, Commit or Close.
  absl::Status WriteAt(uint64_t offset, absl::Span<const uint8_t> data) const;
  // Makes the .tmp file `bytes` long (allocated where the file system can, so that a
  // full disk shows here rather than in a later WriteAt; else a sparse extension).
  absl::Status Reserve(uint64_t bytes);
  // fsyncs, closes and renames the .tmp file over path().
  absl::Status Commit();
  // Closes the .tmp file without renaming it (a scratch file that is read back, e.g.
  // mapped, and removed by the destructor). FailedPrecondition if already closed.
  absl::Status Close();
  const std::string& path() const { return path_; }
  std::string tmp_path() const { return path_ + ".tmp"; }
  // Bytes appended so far.
  uint64_t size() const { return size_; }

 private:
  AtomicFileWriter(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;  // -1 once closed
  uint64_t size_ = 0;
  bool committed_ = false;
};

// Writes `path + ".tmp"` sequentially with O_DIRECT: the caller stores the next bytes
// of the file straight into an aligned staging buffer (Reserve), and whole blocks go
// from there to the disk by DMA, without the page-cache copy that write(2) makes (41%
// of `deltactl decompress`'s samples; writing 1 GiB took 0.03-0.07 s of CPU this way
// against 0.34-2.4 s with write(2) on the reference VM). Only the last partial block
// (< kDirectAlign bytes) is carried from one Reserve to the next. Commit() writes the
// tail (padded, then truncated to the true size), fsyncs, closes and renames over
// `path`, as AtomicFileWriter; destroyed without a successful Commit(), the .tmp file
// is removed and `path` is left as it was. Memory: one staging buffer as large as the
// largest Reserve plus one block. Not thread-safe.
class DirectFileWriter {
 public:
  // Alignment of file offsets, lengths and buffers for O_DIRECT (the logical block
  // size of every common device is at most this).
  static constexpr size_t kDirectAlign = 4096;

  // Unimplemented if the file system refuses O_DIRECT (EINVAL, e.g. tmpfs): the caller
  // writes with AtomicFileWriter instead. InvalidArgument for a FIFO, device or socket
  // at `path` or `path.tmp`, as AtomicFileWriter::Open. Other errors are errno-derived,
  // naming the .tmp file.
  static absl::StatusOr<std::unique_ptr<DirectFileWriter>> Open(const std::string& path);
  ~DirectFileWriter();
  DirectFileWriter(const DirectFileWriter&) = delete;
  DirectFileWriter& operator=(const DirectFileWriter&) = delete;

  // Writes out the bytes of the previous Reserve (whole blocks) and returns the next
  // `n` bytes of the file to fill, valid until the next Reserve, Append or Commit.
  // Every byte of it must be stored before then. Errors of write(2) name the .tmp file:
  // ResourceExhausted for a full disk (ENOSPC), OutOfRange over the file size limit
  // (EFBIG); ResourceExhausted if the staging buffer cannot be allocated.
  absl::StatusOr<absl::Span<uint8_t>> Reserve(size_t n);
  // Reserve(data.size()) and a copy of `data` into it.
  absl::Status Append(absl::Span<const uint8_t> data);
  // FailedPrecondition once committed; Reserve's errors; fsync/close/rename errors.
  absl::Status Commit();

  const std::string& path() const { return path_; }
  // Bytes reserved so far (the file's size after Commit).
  uint64_t size() const { return size_; }

 private:
  DirectFileWriter(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  // Writes the first `bytes` (a multiple of kDirectAlign) of the staging buffer.
  absl::Status WriteBlocks(size_t bytes);

  std::string path_;
  int fd_;  // -1 once closed
  uint64_t size_ = 0;
  uint8_t* buf_ = nullptr;  // kDirectAlign-aligned staging buffer of cap_ bytes
  size_t cap_ = 0;
  size_t used_ = 0;  // bytes of buf_ that belong to the file and are not written yet
  bool committed_ = false;
};

// Writes the concatenation of `pieces` to `path + ".tmp"`, flushes it, and renames it
// over `path`, so readers never see a half-written file. On failure the .tmp file is
// removed and an errno-derived status naming the path comes back.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::vector<absl::Span<const uint8_t>>& pieces);

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_FILE_H_

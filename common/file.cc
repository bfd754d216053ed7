#include "common/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/tmp_files.h"

namespace deltaserve::common {

absl::Status ErrnoStatus(int err, absl::string_view message) {
  if (err == EIO) return absl::DataLossError(absl::StrCat(message, ": Input/output error"));
  return absl::ErrnoToStatus(err, message);
}

namespace {

absl::Status ErrnoError(int err, absl::string_view what, const std::string& path) {
  return ErrnoStatus(err, absl::StrCat(what, " ", path));
}

// Closes a descriptor on scope exit; the mapping, once made, does not need it.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  // Closes now and reports close()'s errno (0 on success); for writers, whose data
  // may only fail to reach the disk at close.
  int Close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

// The commit of a writer of `path + ".tmp"` open as *fd: fsync, close (*fd = -1),
// rename over `path`. FailedPrecondition("<tmp>: <closed_what>") if *fd < 0.
absl::Status SyncCloseRename(const std::string& path, int* fd, absl::string_view closed_what) {
  const std::string tmp = path + ".tmp";
  if (*fd < 0) return absl::FailedPreconditionError(absl::StrCat(tmp, ": ", closed_what));
  if (::fsync(*fd) != 0) return ErrnoError(errno, "cannot fsync", tmp);
  FdCloser closer(*fd);
  *fd = -1;
  if (int err = closer.Close(); err != 0) return ErrnoError(err, "cannot close", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoError(errno, absl::StrCat("cannot rename ", tmp, " to"), path);
  }
  return absl::OkStatus();
}

// What `mode` is when it is neither a regular file nor a directory, for messages; null
// for those two.
const char* SpecialFileKind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return nullptr;
}

FileStamp StampFromStat(const struct stat& st) {
  FileStamp s;
  s.dev = static_cast<uint64_t>(st.st_dev);
  s.ino = static_cast<uint64_t>(st.st_ino);
  s.size = static_cast<int64_t>(st.st_size);
  s.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  s.ctime_ns = int64_t{st.st_ctim.tv_sec} * 1000000000 + st.st_ctim.tv_nsec;
  return s;
}

}  // namespace

absl::Status RefuseSpecialOutput(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (const char* kind = SpecialFileKind(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot write ", path, ": it is ", kind, ", not a regular file (an output is written to ",
          path, ".tmp and renamed over its path, which would replace it)"));
    }
  }
  const std::string tmp = path + ".tmp";
  if (::stat(tmp.c_str(), &st) == 0) {
    if (const char* kind = SpecialFileKind(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": ", tmp,
                                                     ", where it is written first, is ", kind,
                                                     "; remove it or choose another path"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FileStamp> StampOf(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "cannot stat", path);
  return StampFromStat(st);
}

absl::StatusOr<FileStamp> StampOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "cannot stat", path);
  return StampFromStat(st);
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path,
                                                         Residency residency) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot open", path);
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "cannot stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const FileStamp stamp = StampFromStat(st);
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    return std::unique_ptr<MappedFile>(new MappedFile(path, nullptr, 0, residency, stamp));
  }
  if (residency == Residency::kMap) {
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) return ErrnoError(errno, "cannot mmap", path);
    return std::unique_ptr<MappedFile>(
        new MappedFile(path, static_cast<const uint8_t*>(addr), size, residency, stamp));
  }
  void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (addr == MAP_FAILED) return ErrnoError(errno, "cannot allocate memory for", path);
  // Owns the memory from here, so that every error below unmaps it.
  std::unique_ptr<MappedFile> copy(
      new MappedFile(path, static_cast<const uint8_t*>(addr), size, residency, stamp));
  auto* out = static_cast<uint8_t*>(addr);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, out + done, std::min<size_t>(size - done, size_t{1} << 30),
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "cannot read", path);
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path, ": the file shrank from ", size, " to ", done,
                                              " bytes while it was read; is it being rewritten?"));
    }
    done += static_cast<size_t>(n);
  }
  ::mprotect(addr, size, PROT_READ);
  return copy;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

bool IsContainedRelativePath(const std::string& rel) {
  const std::filesystem::path p(rel);
  if (rel.empty() || p.is_absolute()) return false;
  for (const std::filesystem::path& part : p) {
    if (part == "..") return false;
  }
  return true;
}

absl::StatusOr<std::string> ResolveContainedPath(const std::string& dir, const std::string& rel) {
  const std::string quoted = absl::StrCat("'", absl::CHexEscape(rel), "'");
  if (rel.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("path ", quoted, " contains a NUL byte"));
  }
  if (!IsContainedRelativePath(rel)) {
    return absl::InvalidArgumentError(
        absl::StrCat("path ", quoted, " leaves the model directory (absolute or with '..')"));
  }
  const std::string root_in = dir.empty() ? "." : dir;
  auto real = [](const std::string& p) -> absl::StatusOr<std::string> {
    std::unique_ptr<char, decltype(&std::free)> r(::realpath(p.c_str(), nullptr), &std::free);
    if (r == nullptr) return ErrnoError(errno, "cannot resolve", p);
    return std::string(r.get());
  };
  DS_ASSIGN_OR_RETURN(const std::string root, real(root_in));
  const std::string joined = (std::filesystem::path(root_in) / rel).string();
  DS_ASSIGN_OR_RETURN(const std::string target, real(joined));
  auto inside = [&target](const std::string& dir) {
    const std::string prefix = dir == "/" ? dir : dir + "/";
    return target.compare(0, prefix.size(), prefix) == 0;
  };
  // A Hugging Face hub cache snapshot (models--ORG--NAME/snapshots/REV/FILE ->
  // ../../blobs/HASH, what `huggingface-cli download` leaves) links out of its
  // directory by design, into its own repository's blob store.
  const std::filesystem::path root_path(root);
  const bool hub_blob = root_path.parent_path().filename() == "snapshots" &&
                        inside((root_path.parent_path().parent_path() / "blobs").string());
  if (!inside(root) && !hub_blob) {
    return absl::InvalidArgumentError(absl::StrCat("path ", quoted, " resolves to ", target,
                                                   ", outside the model directory ", root,
                                                   " (a symlink?)"));
  }
  return target;
}

absl::Status CheckOutputFilePath(const std::string& path, absl::string_view hint) {
  DS_RETURN_IF_ERROR(RefuseSpecialOutput(path));
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": it is a directory",
                                                   hint.empty() ? "" : " (", hint,
                                                   hint.empty() ? "" : ")"));
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    return absl::NotFoundError(
        absl::StrCat("cannot write ", path, ": no directory ", parent.string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  absl::Span<const uint8_t> bytes = file->bytes();
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Open(const std::string& path) {
  DS_RETURN_IF_ERROR(RefuseSpecialOutput(path));
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "cannot create", tmp);
  TrackTmpFile(tmp);
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, fd));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path().c_str());
  UntrackTmpFile(tmp_path());
}

absl::Status AtomicFileWriter::Append(absl::Span<const uint8_t> data) {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ".tmp: already closed"));
  }
  const uint8_t* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot write", path_ + ".tmp");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  size_ += data.size();
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::WriteAt(uint64_t offset, absl::Span<const uint8_t> data) const {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ".tmp: already closed"));
  }
  const uint8_t* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::pwrite(fd_, p, left, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot write", path_ + ".tmp");
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    left -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Reserve(uint64_t bytes) {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ".tmp: already closed"));
  }
  if (bytes == 0) return absl::OkStatus();
  // fallocate(2), not posix_fallocate: where the file system cannot allocate, glibc's
  // emulation would write every block; a sparse extension is enough then.
  int err = ::fallocate(fd_, 0, 0, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
  if (err == EOPNOTSUPP || err == ENOSYS) {
    err = ::ftruncate(fd_, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
  }
  if (err != 0) return ErrnoError(err, absl::StrCat("cannot reserve ", bytes, " bytes for"),
                                  path_ + ".tmp");
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Close() {
  const std::string tmp = tmp_path();
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp, ": already closed"));
  FdCloser closer(fd_);
  fd_ = -1;
  if (int err = closer.Close(); err != 0) return ErrnoError(err, "cannot close", tmp);
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  DS_RETURN_IF_ERROR(SyncCloseRename(path_, &fd_, "already closed"));
  committed_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DirectFileWriter>> DirectFileWriter::Open(const std::string& path) {
  DS_RETURN_IF_ERROR(RefuseSpecialOutput(path));
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
  if (fd < 0 && errno == EINVAL) {
    ::unlink(tmp.c_str());  // some file systems create the file before refusing O_DIRECT
    return absl::UnimplementedError(absl::StrCat(tmp, ": the file system refuses O_DIRECT"));
  }
  if (fd < 0) return ErrnoError(errno, "cannot create", tmp);
  TrackTmpFile(tmp);
  return std::unique_ptr<DirectFileWriter>(new DirectFileWriter(path, fd));
}

DirectFileWriter::~DirectFileWriter() {
  std::free(buf_);
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink((path_ + ".tmp").c_str());
  UntrackTmpFile(path_ + ".tmp");
}

absl::Status DirectFileWriter::WriteBlocks(size_t bytes) {
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = ::write(fd_, buf_ + done, bytes - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot write", path_ + ".tmp");
    }
    if (n == 0) return ErrnoError(EIO, "cannot write (no progress)", path_ + ".tmp");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<uint8_t>> DirectFileWriter::Reserve(size_t n) {
  const std::string tmp = path_ + ".tmp";
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp, ": already committed"));
  // The previous reservation is filled: write its whole blocks, keep the partial one.
  const size_t whole = used_ / kDirectAlign * kDirectAlign;
  DS_RETURN_IF_ERROR(WriteBlocks(whole));
  const size_t carry = used_ - whole;
  if (carry > 0) std::memmove(buf_, buf_ + whole, carry);
  used_ = carry;
  const size_t need = (carry + n + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  if (need > cap_) {
    void* grown = std::aligned_alloc(kDirectAlign, need);
    if (grown == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat(tmp, ": cannot allocate a staging buffer of ", need, " bytes"));
    }
    if (carry > 0) std::memcpy(grown, buf_, carry);
    std::free(buf_);
    buf_ = static_cast<uint8_t*>(grown);
    cap_ = need;
  }
  used_ += n;
  size_ += n;
  return absl::Span<uint8_t>(buf_ + carry, n);
}

absl::Status DirectFileWriter::Append(absl::Span<const uint8_t> data) {
  DS_ASSIGN_OR_RETURN(absl::Span<uint8_t> to, Reserve(data.size()));
  if (!data.empty()) std::memcpy(to.data(), data.data(), data.size());
  return absl::OkStatus();
}

absl::Status DirectFileWriter::Commit() {
  const std::string tmp = path_ + ".tmp";
  DS_RETURN_IF_ERROR(Reserve(0).status());  // whole blocks out; the tail is at buf_[0, used_)
  if (used_ > 0) {
    // O_DIRECT writes whole blocks: pad the tail with zeros, then cut the file back.
    std::memset(buf_ + used_, 0, kDirectAlign - used_);
    DS_RETURN_IF_ERROR(WriteBlocks(kDirectAlign));
    used_ = 0;
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
      return ErrnoError(errno, "cannot truncate", tmp);
    }
  }
  DS_RETURN_IF_ERROR(SyncCloseRename(path_, &fd_, "already committed"));
  committed_ = true;
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::vector<absl::Span<const uint8_t>>& pieces) {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> writer, AtomicFileWriter::Open(path));
  for (absl::Span<const uint8_t> piece : pieces) DS_RETURN_IF_ERROR(writer->Append(piece));
  return writer->Commit();
}

}  // namespace deltaserve::common

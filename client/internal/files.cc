#include "client/internal/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace deltaserve::client {
namespace {

absl::Status Errno(int err, const std::string& what) {
  return absl::ErrnoToStatus(err, what);
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileWriter>> FileWriter::Open(const std::string& path) {
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return Errno(errno, absl::StrCat("cannot create ", tmp));
  // Large stdio buffer: chunks arrive in ~1 MiB pieces anyway.
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<FileWriter>(new FileWriter(path, std::move(tmp), f));
}

FileWriter::~FileWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) std::remove(tmp_path_.c_str());
}

absl::Status FileWriter::Append(absl::Span<const uint8_t> data) {
  if (file_ == nullptr) return absl::FailedPreconditionError(tmp_path_ + " is closed");
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), file_) != data.size()) {
    return Errno(errno, absl::StrCat("cannot write ", tmp_path_));
  }
  size_ += data.size();
  return absl::OkStatus();
}

absl::Status FileWriter::Close() {
  if (file_ == nullptr) return absl::OkStatus();
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fflush(f) != 0) {
    const int err = errno;
    std::fclose(f);
    return Errno(err, absl::StrCat("cannot write ", tmp_path_));
  }
  if (std::fclose(f) != 0) return Errno(errno, absl::StrCat("cannot close ", tmp_path_));
  return absl::OkStatus();
}

absl::Status FileWriter::Commit() {
  if (file_ != nullptr) {
    if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0) {
      return Errno(errno, absl::StrCat("cannot write ", tmp_path_));
    }
  }
  if (absl::Status s = Close(); !s.ok()) return s;
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return Errno(errno, absl::StrCat("cannot rename ", tmp_path_, " to ", path_));
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(errno, absl::StrCat("cannot open ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Errno(err, absl::StrCat("cannot stat ", path));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return Errno(err, absl::StrCat("cannot mmap ", path));
    }
    ::madvise(p, size, MADV_SEQUENTIAL);
    data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return std::unique_ptr<MappedFile>(new MappedFile(data, size));
}

MappedFile::~MappedFile() {
  if (size_ > 0) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace deltaserve::client

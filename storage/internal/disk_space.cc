#include "storage/internal/disk_space.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace deltaserve::storage {

absl::StatusOr<uint64_t> FreeBytes(const std::string& path) {
  struct statvfs st {};
  if (statvfs(path.c_str(), &st) != 0) {
    return absl::UnavailableError(
        absl::StrCat("statvfs(", path, "): ", std::strerror(errno)));
  }
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

absl::Status CheckRoom(const std::string& path, uint64_t free_bytes, uint64_t footprint,
                       uint64_t reserve_bytes, const std::string& what) {
  if (free_bytes >= reserve_bytes && free_bytes - reserve_bytes >= footprint) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      what, ": disk full: ", free_bytes, " bytes free on the filesystem of ", path,
      ", this write needs ", footprint, " plus ", reserve_bytes,
      " kept free (StoreOptions.min_free_bytes, --db-min-free-bytes); writes resume "
      "once space is freed"));
}

}  // namespace deltaserve::storage

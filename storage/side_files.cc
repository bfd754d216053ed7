#include "storage/side_files.h"

#include <xxhash.h>

#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "codec/container_checks.h"
#include "storage/internal/strings.h"

namespace deltaserve::storage {
namespace {

std::string Shown(std::string_view name) {
  std::string_view head = name.substr(0, 64);
  return absl::StrCat("side file '", absl::CHexEscape(Av(head)),
                      name.size() > head.size() ? "...'" : "'");
}

std::string MiB(uint64_t bytes) {
  return absl::StrCat(bytes, " bytes (", absl::SixDigits(static_cast<double>(bytes) / (1 << 20)),
                      " MiB)");
}

}  // namespace

absl::Status ValidateSideFileName(std::string_view name) {
  if (name.empty() || name.size() > kMaxSideFileNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(Shown(name), ": a name must have 1 to ",
                                                   kMaxSideFileNameBytes, " bytes"));
  }
  if (!codec::IsValidUtf8(name)) {
    return absl::InvalidArgumentError(absl::StrCat(Shown(name), ": name is not valid UTF-8"));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat(Shown(name), ": name must not be . or .."));
  }
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || c == '\\' || u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          Shown(name), ": name must be a plain file name (no '/', '\\' or control "
                       "characters)"));
    }
  }
  if (absl::EndsWith(Av(name), ".safetensors") ||
      absl::EndsWith(Av(name), ".safetensors.index.json")) {
    return absl::InvalidArgumentError(absl::StrCat(
        Shown(name), ": safetensors weight files are not side files (they would collide "
                     "with the checkpoint's shards)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSideFiles(absl::Span<const SideFileEntry> files) {
  if (files.size() > kMaxSideFiles) {
    return absl::ResourceExhaustedError(absl::StrCat(files.size(), " side files exceed the limit of ",
                                                     kMaxSideFiles, " per task"));
  }
  std::set<std::string_view> names;
  for (const SideFileEntry& f : files) {
    if (absl::Status s = ValidateSideFileName(f.name); !s.ok()) return s;
    if (!names.insert(f.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(Shown(f.name), " appears twice"));
    }
    if (f.bytes > kMaxSideFileBytes) {
      return absl::ResourceExhaustedError(absl::StrCat(Shown(f.name), " has ", MiB(f.bytes),
                                                       ", above the limit of ",
                                                       MiB(kMaxSideFileBytes), " per file"));
    }
  }
  if (const uint64_t total = SideFileBytes(files); total > kMaxSideFilesTotalBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("side files total ", MiB(total),
                                                     ", above the limit of ",
                                                     MiB(kMaxSideFilesTotalBytes), " per task"));
  }
  return absl::OkStatus();
}

std::vector<SideFileEntry> DescribeSideFiles(absl::Span<const SideFile> files) {
  std::vector<SideFileEntry> out;
  out.reserve(files.size());
  for (const SideFile& f : files) {
    out.push_back(SideFileEntry{f.name, f.data.size(), SideFileChecksum(f.data)});
  }
  return out;
}

uint64_t SideFileChecksum(std::string_view data) { return XXH3_64bits(data.data(), data.size()); }

uint64_t SideFileBytes(absl::Span<const SideFileEntry> files) {
  uint64_t total = 0;
  for (const SideFileEntry& f : files) total += f.bytes;
  return total;
}

}  // namespace deltaserve::storage

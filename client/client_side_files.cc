// DeltaClient's side files: GetSideFile in slices, and writing them beside a pulled
// checkpoint directory.
#include <xxhash.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/internal/impl.h"
#include "client/internal/side_files.h"
#include "codec/container_checks.h"
#include "common/file.h"
#include "common/status_macros.h"

namespace deltaserve::client {

absl::Status CheckSideFileName(const std::string& name, std::string_view label) {
  // The name comes from a server or a command line: it must not lead outside `dir`.
  if (name.empty() || name == "." || name == ".." ||
      name.find_first_of(std::string("/\\\0", 3)) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(label), ": side file '",
                                                   codec::Utf8OrEscaped(name),
                                                   "' is not a plain file name"));
  }
  return absl::OkStatus();
}

absl::Status WriteSideFileInto(const std::string& dir, const std::string& name,
                               std::string_view data, std::string_view label) {
  DS_RETURN_IF_ERROR(CheckSideFileName(name, label));
  return common::WriteFileAtomically(
      (std::filesystem::path(dir) / name).string(),
      {absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size())});
}

absl::StatusOr<std::string> DeltaClient::GetSideFile(const std::string& task,
                                                     const std::string& name) {
  const std::string label = absl::StrCat("GetSideFile ", TaskLabel(impl_->options, task), " '",
                                         codec::Utf8OrEscaped(name), "'");
  v1::GetSideFileRequest request;
  request.set_tenant(impl_->options.tenant);
  request.set_task(task);
  request.set_name(name);
  request.set_max_bytes(proto::kMaxChunkBytes);
  std::string data;
  uint64_t size = 0, hash = 0;
  do {
    request.set_offset(data.size());
    DS_ASSIGN_OR_RETURN(v1::GetSideFileResponse response,
                        impl_->Unary(&v1::DeltaService::Stub::GetSideFile, request,
                                     impl_->options.deadline, label));
    if (request.offset() == 0) {
      size = response.file().size_bytes();
      hash = response.file().xxh3_64();
      data.reserve(size);
    } else if (response.file().size_bytes() != size || response.file().xxh3_64() != hash) {
      return absl::DataLossError(
          absl::StrCat(label, ": the file changed while it was read (task replaced?)"));
    }
    if (response.offset() != request.offset() || response.data().size() > size - data.size() ||
        (response.data().empty() && data.size() < size)) {
      return absl::DataLossError(absl::StrCat(label, ": bad slice at offset ", data.size(),
                                              " of ", size, " bytes"));
    }
    data.append(response.data());
  } while (data.size() < size);
  if (XXH3_64bits(data.data(), data.size()) != hash) {
    return absl::DataLossError(absl::StrCat(label, ": XXH3-64 checksum mismatch"));
  }
  return data;
}

absl::StatusOr<std::vector<std::string>> DeltaClient::WriteSideFiles(const std::string& task,
                                                                     const std::string& dir) {
  DS_ASSIGN_OR_RETURN(v1::TaskInfo info, GetTask(task, /*include_tensors=*/false));
  const std::string label = absl::StrCat("side files of ", TaskLabel(impl_->options, task));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return common::ErrnoStatus(ec.value(), absl::StrCat("cannot create directory ", dir));
  std::vector<std::string> written;
  for (const v1::SideFileInfo& f : info.side_files()) {
    DS_ASSIGN_OR_RETURN(std::string data, GetSideFile(task, f.name()));
    DS_RETURN_IF_ERROR(WriteSideFileInto(dir, f.name(), data, label));
    written.push_back(f.name());
  }
  return written;
}

}  // namespace deltaserve::client

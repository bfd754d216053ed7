// deltactl's side file flags (--side-file, --side-files-from) for push and decompress.
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/internal/deltactl_command.h"
#include "client/internal/side_files.h"
#include "codec/container_checks.h"
#include "common/file.h"
#include "common/status_macros.h"

namespace deltaserve::client {

void AddSideFileOptions(CLI::App* sub, SideFileFlags* flags) {
  // push stores them with the task; decompress --out-dir writes them beside the shards.
  const std::string kept = sub->get_name() == "push" ? "stored with the task"
                                                     : "written into --out-dir beside the shards";
  sub->add_option("--side-file", flags->paths,
                  absl::StrCat("A small file (config.json, tokenizer files, ...) ", kept,
                               " under its base name; repeatable"));
  sub->add_option("--side-files-from", flags->from_dir,
                  "Take the checkpoint's config, generation config, tokenizer and processor "
                  "files present in this directory as side files");
}

absl::StatusOr<std::vector<SideFileUpload>> ReadSideFileFlags(const SideFileFlags& flags) {
  std::vector<std::string> paths = flags.paths;
  if (!flags.from_dir.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(flags.from_dir, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--side-files-from ", flags.from_dir, " is not a directory"));
    }
    for (const char* name : kCheckpointSideFiles) {
      const std::filesystem::path p = std::filesystem::path(flags.from_dir) / name;
      if (std::filesystem::is_regular_file(p, ec)) paths.push_back(p.string());
    }
  }
  std::vector<SideFileUpload> files;
  std::set<std::string> names;
  for (const std::string& path : paths) {
    SideFileUpload f;
    f.name = std::filesystem::path(path).filename().string();
    if (!names.insert(f.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("side file '", codec::Utf8OrEscaped(f.name),
                                                     "' is given twice (", path, ")"));
    }
    DS_ASSIGN_OR_RETURN(f.data, common::ReadFileToString(path));
    files.push_back(std::move(f));
  }
  return files;
}

absl::Status WriteSideFilesToDir(const std::vector<SideFileUpload>& files,
                                 const std::string& dir) {
  for (const SideFileUpload& f : files) {
    DS_RETURN_IF_ERROR(WriteSideFileInto(dir, f.name, f.data, "decompress --out-dir"));
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::client

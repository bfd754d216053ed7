// Temporary files, and output directories, that an interrupted command line tool
// removes before it dies.
//
// The writers of this project (common::AtomicFileWriter, common::DirectFileWriter,
// codec::ContainerWriter) write `path + ".tmp"` and rename it over `path` when
// complete; destroyed early, they remove it. A signal that kills the process (Ctrl-C
// in a shell) runs no destructor, and left behind a .tmp file as large as the output
// (a pull reserves the whole file first: 1 GB for a 0.5 G-weight fp16 model). The
// writers track their .tmp files here; a tool that calls RemoveTmpFilesOnSignals()
// has them removed when SIGINT, SIGTERM or SIGHUP arrives. Likewise a directory made
// for an output (`pull --out-dir`, `decompress --out-dir`; ScopedOutputDir) is removed,
// with what was written into it, when the command fails or is killed by one of them.
#ifndef DELTASERVE_COMMON_TMP_FILES_H_
#define DELTASERVE_COMMON_TMP_FILES_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace deltaserve::common {

// Adds `path` to the files removed on a signal (after RemoveTmpFilesOnSignals), until
// UntrackTmpFile(path). Best effort: up to 64 files and directories at once, each under
// PATH_MAX bytes; one beyond that is not tracked. Thread-safe.
void TrackTmpFile(const std::string& path);

// Removes `path` from the tracked files (call it once the file is renamed or removed).
// Does nothing if it is not tracked. Thread-safe.
void UntrackTmpFile(const std::string& path);

// Adds the directory `dir` to those removed on a signal, with every file in it (and
// every empty subdirectory), until UntrackOutputDir(dir). Only for a directory this
// process created and fills: whatever is in it goes. Same limits as TrackTmpFile.
// Thread-safe.
void TrackOutputDir(const std::string& dir);
void UntrackOutputDir(const std::string& dir);

// Installs handlers for SIGINT, SIGTERM and SIGHUP that unlink(2) every tracked file,
// empty and rmdir(2) every tracked directory (nested ones innermost first), and then
// let the signal take its default action (the process dies of it, so a shell still
// sees exit status 128 + signal). Also ignores SIGXFSZ, so that a write beyond the file
// size limit (`ulimit -f`) fails with EFBIG, an OutOfRange status naming the file, and
// the writer removes its .tmp file, instead of killing the process with no message.
// For command line tools (deltactl); a daemon that drains on SIGTERM does not call it.
// A signal that was ignored when the process started stays ignored. Call once, from
// main, before any thread starts.
void RemoveTmpFilesOnSignals();

// The directory an output is written into (a checkpoint directory of shards), made
// with its missing parents by Create. Until Keep(), the directories Create made are
// tracked (TrackOutputDir), and the destructor removes them with all they hold
// (std::filesystem::remove_all of the outermost one it made): a failed or interrupted
// command leaves no directory of its own making behind. A directory that existed
// before is never removed (nor what is in it). Not thread-safe.
class ScopedOutputDir {
 public:
  // Creates `dir` and its missing parents. Errors: errno-derived statuses, "cannot
  // create directory DIR: ..." (e.g. a file is in the way).
  static absl::StatusOr<std::unique_ptr<ScopedOutputDir>> Create(const std::string& dir);
  ~ScopedOutputDir();
  ScopedOutputDir(const ScopedOutputDir&) = delete;
  ScopedOutputDir& operator=(const ScopedOutputDir&) = delete;

  // The output is complete: keep the directory (and stop tracking it).
  void Keep();
  const std::string& path() const { return path_; }
  // True if Create made `path()` (it did not exist before).
  bool created() const { return !created_.empty(); }

 private:
  ScopedOutputDir(std::string path, std::vector<std::string> created)
      : path_(std::move(path)), created_(std::move(created)) {}
  void Untrack();

  std::string path_;
  std::vector<std::string> created_;  // the directories Create made, outermost first
};

// Files that replace those of a directory together (a checkpoint: side files, shards,
// index): each is written and fsynced under a private staging directory inside `dir`
// (mkdtemp "<dir>/.deltaserve-staging-XXXXXX", tracked as an output directory, so a
// signal removes it), and only Publish() renames them over `dir/<name>`, one by one in
// the order added (the caller adds an index last). A failure before Publish leaves
// `dir` as it was. Staged files are named by their position ("0", "1", ...), so no
// name a caller publishes (side file names are arbitrary) can collide with another
// file's staged name or with its writer's ".tmp" file; ScratchPath names ("scratch-*")
// cannot either. Remaining window: a crash or kill during Publish's renames leaves a
// mix of new and old files (each file whole); the index is renamed last.
// Not thread-safe.
class StagedFiles {
 public:
  // Creates the staging directory in `dir` (which must exist). Errors: errno-derived
  // (common::ErrnoStatus), naming `dir`.
  static absl::StatusOr<std::unique_ptr<StagedFiles>> Create(const std::string& dir);
  // Removes the staging directory and everything still in it.
  ~StagedFiles();
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;

  // Where to write the file that Publish makes `dir/name` (a plain name: no '/').
  // The caller writes it completely (fsynced: the project's atomic writers do) before
  // Publish.
  std::string Add(const std::string& name);
  // A path in the staging directory for a scratch file that is never published.
  std::string ScratchPath(const std::string& tag) const;
  // Renames every added file over `dir/name` in the order added, then fsyncs `dir`.
  // Errors: errno-derived, naming both paths (NotFound if a file was never written);
  // files renamed before the error stay renamed.
  absl::Status Publish();
  const std::string& dir() const { return dir_; }

 private:
  StagedFiles(std::string dir, std::string staging)
      : dir_(std::move(dir)), staging_(std::move(staging)) {}
  std::string dir_, staging_;
  std::vector<std::string> names_;
};

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_TMP_FILES_H_

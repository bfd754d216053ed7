// Temporary files that an interrupted command line tool removes before it dies.
//
// The writers of this project (common::AtomicFileWriter, common::DirectFileWriter,
// codec::ContainerWriter) write `path + ".tmp"` and rename it over `path` when
// complete; destroyed early, they remove it. A signal that kills the process (Ctrl-C
// in a shell) runs no destructor, and left behind a .tmp file as large as the output
// (a pull reserves the whole file first: 1 GB for a 0.5 G-weight fp16 model). The
// writers track their .tmp files here; a tool that calls RemoveTmpFilesOnSignals()
// has them removed when SIGINT, SIGTERM or SIGHUP arrives.
#ifndef DELTASERVE_COMMON_TMP_FILES_H_
#define DELTASERVE_COMMON_TMP_FILES_H_

#include <string>

namespace deltaserve::common {

// Adds `path` to the files removed on a signal (after RemoveTmpFilesOnSignals), until
// UntrackTmpFile(path). Best effort: up to 64 files at once, each under PATH_MAX bytes;
// a file beyond that is not tracked. Thread-safe.
void TrackTmpFile(const std::string& path);

// Removes `path` from the tracked files (call it once the file is renamed or removed).
// Does nothing if it is not tracked. Thread-safe.
void UntrackTmpFile(const std::string& path);

// Installs handlers for SIGINT, SIGTERM and SIGHUP that unlink(2) every tracked file
// and then let the signal take its default action (the process dies of it, so a shell
// still sees exit status 128 + signal). Also ignores SIGXFSZ, so that a write beyond
// the file size limit (`ulimit -f`) fails with EFBIG, an OutOfRange status naming the
// file, and the writer removes its .tmp file, instead of killing the process with no
// message. For command line tools (deltactl); a daemon that drains on SIGTERM does not
// call it. A signal that was ignored when the process started stays ignored. Call
// once, from main, before any thread starts.
void RemoveTmpFilesOnSignals();

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_TMP_FILES_H_

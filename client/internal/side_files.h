// Writing a side file into a checkpoint directory: shared by DeltaClient (side files
// pulled from a server) and deltactl (side files given to offline decompress).
#ifndef DELTASERVE_CLIENT_INTERNAL_SIDE_FILES_H_
#define DELTASERVE_CLIENT_INTERNAL_SIDE_FILES_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace deltaserve::client {

// Writes `data` as `dir`/`name`, replacing it atomically. InvalidArgument (prefixed by
// `label`) if `name` is not a plain file name (empty, ".", "..", or holding '/', '\\'
// or NUL: it would land outside `dir`); errno statuses naming the path otherwise.
// InvalidArgument (prefixed by `label`) unless `name` is a plain file name, as above.
absl::Status CheckSideFileName(const std::string& name, std::string_view label);

absl::Status WriteSideFileInto(const std::string& dir, const std::string& name,
                               std::string_view data, std::string_view label);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_SIDE_FILES_H_

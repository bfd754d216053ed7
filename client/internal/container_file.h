// Opening a delta container file that a user named (push --in, inspect, eval,
// decompress --delta): the one place that tells "not a container at all" from "a
// damaged container".
#ifndef DELTASERVE_CLIENT_INTERNAL_CONTAINER_FILE_H_
#define DELTASERVE_CLIENT_INTERNAL_CONTAINER_FILE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "codec/container.h"

namespace deltaserve::client {

// codec::MappedContainer::Open(path), except that a file with another magic (often the
// finetuned model itself, a .safetensors file) is InvalidArgument saying to make a
// container with `deltactl compress`, not DataLoss: nothing is damaged. Other errors as
// MappedContainer::Open (NotFound, DataLoss for a damaged container, ...).
absl::StatusOr<std::unique_ptr<codec::MappedContainer>> OpenContainerFile(
    const std::string& path);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_CONTAINER_FILE_H_

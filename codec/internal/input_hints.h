// What a file that is not safetensors looks like, for the message that refuses it: the
// common model formats a new user passes as --base or --finetuned (PyTorch checkpoints,
// pickles, GGUF, numpy, HDF5, git-LFS pointers, delta containers), each with how to get
// safetensors from it.
#ifndef DELTASERVE_CODEC_INTERNAL_INPUT_HINTS_H_
#define DELTASERVE_CODEC_INTERNAL_INPUT_HINTS_H_

#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace deltaserve::codec::internal {

// "; it is a PyTorch checkpoint (torch.save's zip format), not safetensors: convert it
// with ..." for the first bytes of the file at `path` (any length; only a prefix is
// looked at), or "" when they match no known format. Starts with "; " so that it can
// follow a message. Recognised: deltaserve containers, git-LFS pointers, zip archives
// (PyTorch checkpoints, numpy .npz, Keras .keras), Python pickles (protocol 2-5: legacy
// torch.save, pytorch_model.bin), GGUF, numpy .npy, HDF5, text (HTML, JSON).
std::string NotSafetensorsHint(const std::string& path, absl::Span<const uint8_t> bytes);

// For a directory holding no .safetensors file or index: "; it holds pytorch_model.bin
// (...)"-style hint naming the first model file of another format found among
// `file_names` (names, not paths), or "".
std::string NoSafetensorsInDirHint(const std::string& dir,
                                   absl::Span<const std::string> file_names);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_INPUT_HINTS_H_

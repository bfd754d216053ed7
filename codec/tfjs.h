// TensorFlow.js graph-model importer (model.json + binary weight shards).
//
// Format: TF.js "weightsManifest" (tfjs-core src/io/types.ts): a list of groups
// {paths: [files], weights: [{name, shape, dtype, quantization?: {dtype: "float16" |
// "uint8" | "uint16", scale, min}}]}; each group's bytes are its files concatenated,
// weights laid out back to back in manifest order, little-endian. Stored bytes per
// element: the quantization dtype's size if quantized, else float32/int32 4, bool 1,
// complex64 8; "string" elements are a uint32 length then that many bytes.
#ifndef DELTASERVE_CODEC_TFJS_H_
#define DELTASERVE_CODEC_TFJS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/tensor.h"

namespace deltaserve::codec {

struct TfjsModel {
  std::vector<OwnedTensor> tensors;  // manifest order (group by group)
  // "format", "generatedBy", "convertedBy" when model.json has them as strings, and
  // "skipped": comma-separated names of the weights not imported (absent if none).
  std::map<std::string, std::string> metadata;
};

// Reads `model_json_path` and its weight files (paths relative to the JSON's
// directory, no ".." and not absolute), mapping the files and copying each imported
// weight once. Only float32 weights are imported:
//   float32                          -> F32 tensor, bytes as stored;
//   quantization float16             -> F16 tensor, the stored halves as they are;
//   quantization uint8 / uint16      -> F32 tensor, min + scale * q (dequantized).
// Non-float weights (int32, bool, string, complex64) are skipped and listed in
// metadata["skipped"]. Scalars (shape []) and empty tensors are imported.
// Errors: NotFound (model.json or a weight file missing; message names it),
// InvalidArgument naming the file and the weight: bad JSON, missing or ill-typed
// fields, unknown dtype, unknown quantization dtype, uint8/uint16 without scale and
// min, weight files shorter than the manifest says (with the byte range and sizes), a
// weight name used twice, a path leaving the model directory.
// Thread-safe (no shared state).
absl::StatusOr<TfjsModel> ImportTfjsGraphModel(const std::string& model_json_path);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_TFJS_H_

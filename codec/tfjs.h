// TensorFlow.js graph-model importer (model.json + binary weight shards).
//
// Format: TF.js "weightsManifest": a list of groups {paths: [files], weights: [{name,
// shape, dtype, quantization?: {dtype: "float16"|"uint8"|"uint16", scale, min}}]};
// each group's bytes are its files concatenated, weights laid out in manifest order,
// little-endian. float16-quantized weights are imported as F16 tensors; float32 as F32.
#ifndef DELTASERVE_CODEC_TFJS_H_
#define DELTASERVE_CODEC_TFJS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/tensor.h"

namespace deltaserve::codec {

struct TfjsModel {
  std::vector<OwnedTensor> tensors;             // manifest order
  std::map<std::string, std::string> metadata;  // format, generatedBy, convertedBy
};

// Reads `model_json_path` and its shards (paths relative to the JSON's directory).
// Only float tensors are imported (non-float weights, e.g. int32 constants, are
// skipped and listed in metadata["skipped"]). Errors: NotFound (missing file),
// InvalidArgument (bad JSON, shard shorter than the manifest says, unsupported
// quantization; message names the file and weight).
absl::StatusOr<TfjsModel> ImportTfjsGraphModel(const std::string& model_json_path);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_TFJS_H_

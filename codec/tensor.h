// Tensor descriptors and dtype conversion shared by the codec, storage and server.
//
// Shapes are row-major (C order), element counts are int64. Supported dtypes are the
// ones deltaserve reads and writes: F32, F16 (IEEE 754 binary16) and BF16 (bfloat16).
// All functions here are thread-safe (pure).
#ifndef DELTASERVE_CODEC_TENSOR_H_
#define DELTASERVE_CODEC_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace deltaserve::codec {

// Numeric values are part of the container format (codec/FORMAT.md): never renumber.
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Bytes per element: 4, 2, 2.
size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "F16", "BF16".
std::string_view DTypeName(DType dtype);
// Parses a safetensors dtype name. InvalidArgument for any other name (e.g. "I64").
absl::StatusOr<DType> ParseDType(std::string_view name);

// Product of dims (1 for a scalar shape {}). REQUIRES: every dim >= 0, no overflow
// (callers validating untrusted shapes use CheckedNumElements).
int64_t NumElements(absl::Span<const int64_t> shape);
// Like NumElements but InvalidArgument on a negative dim or int64 overflow.
absl::StatusOr<int64_t> CheckedNumElements(absl::Span<const int64_t> shape);
// "[3, 3, 32, 1]".
std::string ShapeString(absl::Span<const int64_t> shape);

// Name, dtype and shape of a tensor, without its bytes.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  int64_t num_elements() const { return NumElements(shape); }
  size_t num_bytes() const { return static_cast<size_t>(num_elements()) * DTypeSize(dtype); }
};

// A tensor whose bytes are owned elsewhere (an mmap, a buffer). Little-endian data of
// exactly info.num_bytes() bytes. Valid as long as its owner is.
struct TensorView {
  TensorInfo info;
  absl::Span<const uint8_t> data;
};

// A tensor that owns its bytes.
struct OwnedTensor {
  TensorInfo info;
  std::vector<uint8_t> data;

  TensorView view() const { return TensorView{info, absl::MakeConstSpan(data)}; }
};

// Converts `n` elements of `src` (little-endian bytes of dtype `dtype`) to float32.
// REQUIRES: src holds n * DTypeSize(dtype) bytes, dst holds n floats.
void ToFloat32(const uint8_t* src, DType dtype, int64_t n, float* dst);
// Converts `n` float32 values to `dtype`, round-to-nearest-even (F16 saturates to inf
// as IEEE does; NaN stays NaN). REQUIRES: dst holds n * DTypeSize(dtype) bytes.
void FromFloat32(const float* src, int64_t n, DType dtype, uint8_t* dst);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_TENSOR_H_

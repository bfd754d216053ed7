// Tensor descriptors and dtype conversion shared by the codec, storage and server.
//
// Shapes are row-major (C order), element counts are int64. Every safetensors dtype is
// read and written; the float dtypes F32, F16 (IEEE 754 binary16) and BF16 (bfloat16)
// are the "castable" ones: their deltas can be DCT-coded and they convert to any other
// castable dtype. All others (F64, integers, BOOL, FP8) are kept bit for bit: stored
// raw or unchanged, never cast. All functions here are thread-safe (pure).
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

// Numeric values are part of the container format (codec/FORMAT.md) and, plus one,
// of the proto enum deltaserve.v1.DType: never renumber.
enum class DType : uint8_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kF64 = 3,
  kI64 = 4,
  kI32 = 5,
  kI16 = 6,
  kI8 = 7,
  kU8 = 8,
  kBool = 9,     // one byte per element
  kF8E4M3 = 10,  // OCP FP8 E4M3 (safetensors "F8_E4M3")
  kF8E5M2 = 11,  // OCP FP8 E5M2 (safetensors "F8_E5M2")
  kU16 = 12,
  kU32 = 13,
  kU64 = 14,
};
inline constexpr DType kLastDType = DType::kU64;

// Bytes per element: F32 4, F16/BF16 2, F64/I64/U64 8, I32/U32 4, I16/U16 2,
// I8/U8/BOOL/F8_* 1.
size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "F16", "BF16", "F64", "I64", ..., "BOOL", "F8_E4M3".
std::string_view DTypeName(DType dtype);
// Parses a safetensors dtype name. InvalidArgument for any other name (e.g. "C64").
absl::StatusOr<DType> ParseDType(std::string_view name);
// True for F32, F16 and BF16: the dtypes ToFloat32/FromFloat32 take, deltas are
// computed in and merged tensors may be cast between.
bool IsCastable(DType dtype);
// The dtype a tensor stored as `stored` is merged and served in when `requested` is
// asked for: `requested` if both are castable, else `stored` (integers, BOOL, F64 and
// FP8 are never converted).
DType OutputDType(DType stored, DType requested);

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
// REQUIRES: IsCastable(dtype), src holds n * DTypeSize(dtype) bytes, dst holds n floats.
void ToFloat32(const uint8_t* src, DType dtype, int64_t n, float* dst);
// Converts `n` float32 values to `dtype`, round-to-nearest-even (F16 saturates to inf
// as IEEE does; NaN stays NaN). REQUIRES: IsCastable(dtype), dst holds
// n * DTypeSize(dtype) bytes.
void FromFloat32(const float* src, int64_t n, DType dtype, uint8_t* dst);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_TENSOR_H_

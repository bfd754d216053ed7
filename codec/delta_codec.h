// Model-level Delta-DCT: compress a finetuned model against its base into a container,
// and decode/merge tensors back. Built on codec/delta_dct.h and codec/container.h.
#ifndef DELTASERVE_CODEC_DELTA_CODEC_H_
#define DELTASERVE_CODEC_DELTA_CODEC_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/container.h"
#include "codec/delta_dct.h"
#include "codec/delta_ecq.h"
#include "codec/ecq_alloc.h"
#include "codec/safetensors.h"
#include "codec/tensor.h"

namespace deltaserve::codec {

// Writer name and version recorded in every container's "tool" metadata.
inline constexpr char kToolName[] = "deltaserve 0.1.0";

// "minmax", "symmetric", "clipped" (as in container metadata and on the command line).
std::string QuantizerName(Quantizer q);
// Inverse of QuantizerName. InvalidArgument for any other text.
absl::StatusOr<Quantizer> ParseQuantizer(std::string_view text);

// Per-tensor encoding override: tensors whose name matches `pattern` (fnmatch glob,
// e.g. "*embed*" or "*/bias") get `encoding`. First matching rule wins. A rule cannot
// make a tensor absent from the base anything but raw; kUnchanged is refused
// (InvalidArgument) for a tensor that is not bit-identical to its base, kDct for a
// tensor of rank < 2. Policy in FORMAT.md, "Tensor policy".
struct EncodingRule {
  std::string pattern;
  Encoding encoding = Encoding::kRaw;

  // Parses "GLOB=raw|dct|unchanged" (the last '=' splits). InvalidArgument otherwise.
  static absl::StatusOr<EncodingRule> Parse(std::string_view text);
  std::string ToString() const;
};

// Codec of the tensors the policy codes lossily (FORMAT.md, "Tensor policy").
enum class LossyCodec : uint8_t {
  kDct = 0,  // Delta-DCT, encoding 2, fixed-rate schedule (CompressOptions::dct)
  kEcq = 1,  // codec v2, encoding 3: entropy-coded, rate-controlled (CompressOptions::ecq*)
};
// "dct" or "ecq" (container metadata and command line), and its inverse
// (InvalidArgument for any other text).
std::string LossyCodecName(LossyCodec c);
absl::StatusOr<LossyCodec> ParseLossyCodec(std::string_view text);

// Per-tensor step of codec v2: the container's step times
enum class EcqWeighting : uint8_t {
  kMse = 0,        // 1: minimal total squared delta error (what rel. delta error measures)
  kWeightRms = 1,  // the RMS of the base tensor: minimal sum of squared errors relative to
                   // each tensor's weight scale (a data-free proxy of output noise)
  kDeltaRms = 2,   // the RMS of the tensor's delta: every tensor at about the same
                   // relative delta error (as a uniform fixed-rate schedule)
};
// "mse", "weight", "delta"; and its inverse (InvalidArgument for any other text).
std::string EcqWeightingName(EcqWeighting w);
absl::StatusOr<EcqWeighting> ParseEcqWeighting(std::string_view text);

struct CompressOptions {
  // Codec of the lossy tensors. Default: kDct.
  LossyCodec codec = LossyCodec::kDct;
  // DCT parameters (patch size, schedule, quantizer) of kDct. Default: ~1 bit per weight.
  DctParams dct;
  // kEcq: transform choices, and the size or error target over all its tensors (bits
  // per weight counted as `deltactl inspect` counts them for the lossy tensors: record
  // bytes plus their share of header and trailer). Default: 1 bit per weight.
  EcqOptions ecq;
  EcqTarget ecq_target{1.0, 0.0};
  // kEcq: how the common step is scaled per tensor (the distortion each tensor's error
  // is weighed by). Default: kDeltaRms, the best task metrics measured on faceres at 1
  // and 2 bits per weight (tests/eval/RESULTS.md; kMse has the lowest total delta error
  // but starves the tensors with small deltas).
  EcqWeighting ecq_weighting = EcqWeighting::kDeltaRms;
  // Tensors with fewer elements than this, and all 1-D/scalar tensors, are stored raw
  // (lossless). Larger: fewer lossy tensors, more bytes. Default: see FORMAT.md.
  int64_t min_dct_elements = 16384;
  std::vector<EncodingRule> rules;
  // Base tensors the finetune lacks (renamed, dropped, or a buffer such as
  // `rotary_emb.inv_freq`) are left out of the merged model, each named in
  // CompressStats::warnings. false: refused. Default: false.
  bool allow_missing = false;
  // Finetuned tensors the base lacks are stored raw (16-32 bits per weight), each named
  // in the warnings. false: refused. Default: false.
  bool allow_extra = false;
  // Finetuned float tensors holding NaN or +-Inf are stored raw, as they are, and named
  // in the warnings. false: refused with the tensor, count and first coordinates.
  // Default: false.
  bool allow_nonfinite = false;
  // A finetuned tensor whose dtype differs from its base tensor's where one of the two
  // is not F32/F16/BF16 (an F32 weight saved as I32, a BF16 finetune of an FP8 base) is
  // stored raw, and the merged model gets the finetuned dtype; it is named in the
  // warnings ("'w': base dtype F32 -> finetuned dtype I32: stored raw; ..."). false:
  // refused, naming the tensor and both dtypes. (F32/F16/BF16 to one another is always
  // coded as a delta; the merged model gets the finetuned dtype.) Default: false.
  bool allow_dtype_change = false;
  // A tensor whose delta norm exceeds this many times its base tensor's norm is refused
  // (finetunes move weights by ~1%; a transposed square matrix or an unrelated tensor
  // gives ~1.4). 0 disables the check. Default: 1.
  double max_relative_delta = 1.0;
  // The tie rule (FORMAT.md, "Tied tensors"): a finetuned output head the base lacks
  // (`lm_head.weight` of a model whose base ties it to `model.embed_tokens.weight`) is
  // coded against the base's input embedding of a mergeable shape, like any shared
  // tensor (~1 bit per weight instead of 16-32), and recorded in the header
  // (kBaseAliasKey). false: such a head is one-sided (allow_extra). Default: true.
  bool tie_embeddings = true;
  // Threads that check and encode tensors at once; the container is written in tensor
  // order by the calling thread, so its bytes are the same for every thread count (the
  // codec v2 low-rank factors come from BLAS, whose sums follow OpenBLAS's own thread
  // count: run OpenBLAS on one thread, as deltactl does with openblas_set_num_threads(1),
  // for bytes that do not depend on the machine's core count). At
  // most 2 x threads encoded tensors wait to be written (memory: their float deltas and
  // payloads). 0: std::thread::hardware_concurrency(). Must be in [0, 256]. Default: 0.
  int threads = 0;

  absl::Status Validate() const;
};

// The header metadata of a container as shown to a user (`deltactl inspect`, `deltactl
// info`): `metadata` less the keys that do not apply to how it was made. Codec v2
// containers (codec.lossy=ecq) still carry Delta-DCT's codec.schedule, codec.quantizer
// and codec.separate_dc (written with the defaults, kept so that the bytes, and so the
// rate control's header share, stay as pinned); those are left out. Other containers'
// metadata is returned as it is.
std::map<std::string, std::string> DisplayedMetadata(
    const std::map<std::string, std::string>& metadata);

// Progress callback: (tensors done, tensors total, name of the tensor just done).
using ProgressFn = std::function<void(size_t, size_t, const std::string&)>;

// XXH3-128 over every tensor of `base` in name order (name, dtype, shape, bytes); the
// exact byte stream is in FORMAT.md, "Base hash". Reads every byte of the model.
BaseHash ComputeBaseHash(const ModelReader& base);

// OK if a delta compressed against the base hashing to `made_against` applies to the
// base hashing to `have`, i.e. the two are equal. Otherwise FailedPrecondition
// "<what> was compressed against base <hex>, not <have_what> <hex>". The one check of
// base identity: offline decode (CheckBaseHash) and the server's PutDelta, StreamWeights
// and PinTask all use it.
absl::Status CheckBaseHashMatch(const BaseHash& made_against, const BaseHash& have,
                                absl::string_view what, absl::string_view have_what);

// OK if `base` hashes to the container's base hash, or if `force`. Otherwise
// CheckBaseHashMatch's FailedPrecondition, with a hint to force. Reads every byte of
// the base.
absl::Status CheckBaseHash(const ModelReader& base, const ContainerHeader& header, bool force);

// The encoding CompressModel gives finetuned tensor `ft` against `base` (null: the
// tensor is absent from the base), per FORMAT.md "Tensor policy". InvalidArgument
// (naming the tensor) for shapes that cannot be merged or a rule that cannot apply.
absl::StatusOr<Encoding> ChooseEncoding(const TensorView& ft, const TensorView* base,
                                        const CompressOptions& options);

struct CompressStats {
  uint64_t container_bytes = 0;
  uint64_t dct_weights = 0, dct_bytes = 0;  // DCT-coded tensors and their record bytes
  uint64_t total_weights = 0;               // all tensors of the finetuned model
  uint64_t raw_tensors = 0, unchanged_tensors = 0, dct_tensors = 0;
  std::vector<std::string> base_only;      // left out of the merged model (allow_missing)
  std::vector<std::string> finetune_only;  // stored raw (allow_extra)
  // Ties used: finetuned name -> the base tensor its record merges into (a tied head
  // stored raw, e.g. a small one, is not listed).
  std::map<std::string, std::string> ties;
  bool noop = false;                       // every tensor bit-identical to the base
  // One line per tensor that is dropped, one-sided, stored raw for a reason the user
  // should know (non-finite values, FP8 scales) and for a no-op delta.
  std::vector<std::string> warnings;
};

// Compresses `finetuned` against `base` into a container at `out_path`. The merged model
// holds exactly the finetuned tensors. Output heads the base lacks are tied to its input
// embedding (CompressOptions::tie_embeddings). Before anything is written, InvalidArgument for:
// no tensor in common (wrong base); one-sided tensors unless allowed (CompressOptions
// allow_missing / allow_extra; the message lists them with a common-prefix hint);
// shapes that cannot merge (every such tensor named, "transposed?" for a reversed
// rank-2 shape; an embedding may have more rows, dim 0, than the base). While encoding,
// InvalidArgument naming every tensor with NaN/Inf values (unless allow_nonfinite), a
// dtype change to or from a non-float dtype (unless allow_dtype_change) or a delta norm
// above max_relative_delta x its base's: "N tensor(s) refused (<how>): <tensor>; ...",
// <how> naming the option that accepts each kind refused, as
// "CompressOptions::allow_nonfinite stores ..." (a CLI may put its flag there). Non-float tensors (integers,
// BOOL, F64, FP8) and the scales of FP8 tensors are stored raw or unchanged, bit for
// bit. stats.warnings names every dropped, one-sided or specially stored tensor.
absl::StatusOr<CompressStats> CompressModel(const ModelReader& base, const ModelReader& finetuned,
                                            const CompressOptions& options,
                                            const std::string& out_path,
                                            const ProgressFn& progress = nullptr);

// Number of bytes MergeTensor writes for `record` in `out_dtype` (that is, in
// OutputDType(record.info.dtype, out_dtype): non-float tensors keep their dtype).
uint64_t MergedBytes(const TensorRecord& record, DType out_dtype);

// Writes the merged tensor (base + decoded delta, or the raw tensor) in
// OutputDType(record.info.dtype, out_dtype) into `out` (REQUIRES out.size() == MergedBytes(record,
// out_dtype)). `base` may be null only for records that do not need it (kRaw). The
// base tensor is record.base_tensor() (a tie names another one than the record).
// NotFound/InvalidArgument if the base tensor is missing or its shape differs from
// record.base_shape. Deterministic.
// Every cast to F16 or BF16 (a DCT merge, a raw or unchanged tensor, extra rows)
// follows one rule (FORMAT.md, "Decoding"): a finite value the cast would make infinite
// saturates to the dtype's largest finite value; `saturated`, if given, is incremented
// by the number of such values (Inf and NaN stored raw stay as they are, uncounted).
absl::Status MergeTensor(const ModelReader* base, const TensorRecord& record, DType out_dtype,
                         absl::Span<uint8_t> out, int64_t* saturated = nullptr);

// Parallel merge of one large tensor: MergeTensorPart(part, num_parts) writes a disjoint
// piece of `out` (same `out` and errors as MergeTensor, plus InvalidArgument unless
// 0 <= part < num_parts); once every part in [0, num_parts) has returned OK, `out` holds
// exactly MergeTensor's bytes, whatever the order or threads. kDct pieces are row ranges
// of the 2-D view in multiples of kMergeRowAlign rows (so each patch-row strip is
// decoded once for patch sizes dividing 64, e.g. 8, 16, 32); a part may be empty.
inline constexpr int64_t kMergeRowAlign = 64;
// `on_bytes`, if given, is called on this thread with consecutive pieces of `out` as
// they become final, in increasing order, covering exactly this part's byte range
// (patch-row strips of a kDct record; one piece otherwise): e.g. to hash a single-part
// merge while its bytes are still in cache.
using MergedBytesFn = std::function<void(absl::Span<const uint8_t> piece)>;
absl::Status MergeTensorPart(const ModelReader* base, const TensorRecord& record, DType out_dtype,
                             int part, int num_parts, absl::Span<uint8_t> out,
                             const MergedBytesFn& on_bytes = nullptr, int64_t* saturated = nullptr);
// A part count for `record`: about one part per `min_part_weights` weights, at most
// `max_parts`, at least 1, never more than the record has row units.
int MergeTensorParts(const TensorRecord& record, int64_t min_part_weights, int max_parts);

// The safetensors `__metadata__` of a merged model decoded from a container made against
// `base_hash`: {"deltaserve.base_hash": hex, "deltaserve.tool": kToolName, "format": "pt"}
// ("format" as torch's safetensors writer sets it; transformers requires it). DecompressModel
// writes it, and the server sends it with StreamWeights so that a client writing the
// streamed tensors in order produces the same file.
std::map<std::string, std::string> MergedModelMetadata(const BaseHash& base_hash);

// Values DecompressModel saturated to the output dtype's range (MergeTensor).
struct DecompressStats {
  int64_t saturated_values = 0;
  std::vector<std::pair<std::string, int64_t>> saturated_tensors;  // (name, count), in order
};

struct DecompressOptions {
  bool force = false;              // decode even if the base hash differs
  std::optional<DType> out_dtype;  // default: each tensor's recorded dtype
};

// Decodes a whole container against `base` into a safetensors file at `out_path`
// (tensors in record order, __metadata__ MergedModelMetadata). FailedPrecondition if the
// container's base hash differs from base's (unless force); errors of MergeTensor /
// ContainerReader::record (DataLoss naming the tensor) and SafetensorsWriter otherwise; on error no
// file is left at out_path. Values saturated by the casts are counted in *stats when
// given. Memory: one merged tensor at a time, merged straight into the output's
// O_DIRECT staging buffer (DirectSafetensorsWriter), or into a buffer written with
// write(2) on a file system that refuses O_DIRECT; the bytes are the same. A full disk
// is ResourceExhausted. Records are verified twice: once for the header's shapes, once
// when merged.
absl::Status DecompressModel(const ModelReader& base, const ContainerReader& container,
                             const DecompressOptions& options, const std::string& out_path,
                             const ProgressFn& progress = nullptr,
                             DecompressStats* stats = nullptr);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_DELTA_CODEC_H_

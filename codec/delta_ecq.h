// Codec v2 ("ecq", container encoding 3): entropy-coded dead-zone quantization of a 2-D
// delta, in the DCT domain (p x p patches, as Delta-DCT) or in the raw (identity)
// domain, chosen per tensor at encode time.
//
// Every coefficient c of the tensor is quantized with one step `s` (the same for every
// coefficient of every tensor of a container, which is what rate-distortion theory asks
// for when the target is the total squared error: reverse water-filling over the
// coefficient variances, Cover & Thomas 2006, Section 10.3.3, realised by entropy-coded
// uniform scalar quantization, Gish & Pierce 1968): q = sign(c) floor(|c| / s + r), with
// a rounding offset r <= 1/2 chosen per tensor (a dead zone: coefficients whose
// variance is below the "water level" mostly become 0 and cost almost nothing), and
// reconstructed as sign(q) (|q| - bias) s with a per-tensor bias in [0, 1) fitted to the
// data (the centroid correction). The codes are entropy-coded with htscodecs rANS
// (codec/internal/rans.h), order 0 or 1 per chunk of rows, so a coefficient costs a
// fractional number of bits that follows its band's variance: with the coefficient-major
// scan of a DCT chunk the order-1 context is the same frequency of the neighbouring
// patch. Byte layout: codec/FORMAT.md, "Entropy-coded payload (encoding 3)".
//
// All functions are thread-safe; they allocate only their own scratch.
#ifndef DELTASERVE_CODEC_DELTA_ECQ_H_
#define DELTASERVE_CODEC_DELTA_ECQ_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/delta_dct.h"
#include "codec/tensor.h"

namespace deltaserve::codec {
namespace internal {
struct EcqPlane;
}  // namespace internal

// Transform of an ecq payload (stored as a u8).
enum class EcqTransform : uint8_t {
  kIdentity = 0,  // the delta itself, row-major
  kDct = 1,       // orthonormal 2-D DCT-II of p x p patches (codec/internal/dct.h)
};

// Rate-distortion figures of one tensor at one step, as the encoder would code it.
struct EcqTrial {
  double distortion = 0.0;  // squared error, sum over the tensor's coefficients
  double bytes = 0.0;       // payload bytes (order-0 entropy estimate unless exact)
  EcqTransform transform = EcqTransform::kDct;  // of the coefficients (the residual's)
  int rank = 0;             // of the low-rank factors; 0: none
  float rounding = 0.5f;    // r
};

struct EcqOptions {
  // Edge of a DCT patch, in weights, [2, 64]. Default: 32 (as Delta-DCT: FORMAT.md).
  int patch_size = 32;
  // Consider the identity transform as well as the DCT and keep the one with the lower
  // rate-distortion cost D + lambda R at the step. Default: true.
  bool try_identity = true;
  // Consider low-rank factors plus the quantized residual as well (int8 factors of the
  // top singular pairs, ranks whose factors cost about 1/16, then 1/8, 2/8, .., 1 bit
  // per weight, for matrices whose dims are >= 16 and whose smaller dim is <= 2048), kept
  // when their
  // D + lambda R, factor bytes included, is the lowest. Costs a Gram eigenproblem per
  // tensor at Prepare and 2x the delta's memory per rank. Default: true.
  bool try_low_rank = true;
  // Weight w >= 1 of the error along the delta against the error across it, which sets
  // each payload's reconstruction gain g (the stored step is the quantizer's step times
  // g): w = 1 is the least-squares reconstruction, which shrinks the delta (at 1 bit per
  // weight it keeps ~0.7 of it, most weights at 0 in the identity domain); larger w
  // keeps more of the delta's length for some more squared error. Measured on faceres
  // at 1 bit per weight: see codec/FORMAT.md, "Reconstruction gain". Default: 2.
  double gain_weight = 2.0;
  // CompressModel: a model of at most this many weights is planned exhaustively
  // (EcqTensor::Prepare: every candidate's coefficients kept, each tensor's transform
  // picked from exact codings); a larger one from summaries (EcqTensor::Summarize),
  // each tensor coded once at the planned step, from its delta computed again, so that
  // memory and time grow with the largest tensor and the model's size, not with
  // model x candidates. Default: 2^23 (the eval models, 3.5 M and 7.0 M weights, keep
  // the exhaustive plan; the 0.5 G-weight stream_bench model took 20 minutes and 18 GB
  // with it).
  int64_t exhaustive_max_weights = int64_t{1} << 23;

  absl::Status Validate() const;
};

// A tensor's delta prepared for coding at any step: its transform coefficients are
// computed once (so rate control can try many steps cheaply). Memory: one float per
// coefficient per transform tried (2x the delta with try_identity).
class EcqTensor {
 public:
  // delta[rows x cols], row-major float32, copied. InvalidArgument for bad options,
  // dims outside [1, 2^32 - 1], a row of more than 2^24 coefficients, or a non-finite
  // value.
  static absl::StatusOr<std::unique_ptr<EcqTensor>> Prepare(const float* delta, int64_t rows,
                                                            int64_t cols,
                                                            const EcqOptions& options);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  double energy() const { return energy_; }  // sum of squares of the delta
  // Largest |coefficient| over the transforms (a step above twice this codes all-zero).
  double max_abs() const { return max_abs_; }
  // Multiplier of the container's common step for this tensor (PlanEcq codes it at
  // step x step_scale()): a distortion weight of 1 / step_scale^2. Default: 1.
  double step_scale() const { return step_scale_; }
  void set_step_scale(double s) { step_scale_ = s; }

  // The best (transform, rounding) at `step` > 0, by D + lambda R with
  // lambda = ln(2) step^2 / 6 per bit (the slope of the high-rate curve D = s^2 / 12),
  // with the estimated payload size. sample > 1 estimates from every sample-th
  // coefficient only (about sample x faster; for rate control's search). With `fixed`,
  // its transform and rounding are used instead of the best ones (rate control freezes
  // the choices while it fine-tunes the step: sizes then vary smoothly with it).
  EcqTrial Evaluate(float step, int sample = 1, const EcqTrial* fixed = nullptr) const;
  // Encodes with the choice of Evaluate(step, 1, fixed); without `fixed`, with the
  // choice of Choose(step) (transform and rank by D + lambda R from estimates, lambda
  // the slope of the tensor's own quantizer: codec/delta_ecq.cc, PickRank). `trial`, if
  // given, receives the choice, the exact payload size and the squared error
  // (coefficient domain).
  absl::StatusOr<std::vector<uint8_t>> Encode(float step, EcqTrial* trial = nullptr,
                                              const EcqTrial* fixed = nullptr) const;

  // A summary of the delta for planning without keeping its coefficients: the
  // candidates of Prepare, each as a sample of at most ~9000 coefficients (the DCT's of
  // 96 patches spread over the tensor), its low-rank factors, and no other copy of the
  // delta. Low-rank candidates are dropped when a randomized sketch of the delta shows
  // that the top singular pairs hold too little energy for their factor bytes
  // (EcqLowRankMayPay, internal/ecq_lowrank.h); otherwise the factors are computed as in
  // Prepare. Evaluate works from the sample (estimates); Encode is refused
  // (FailedPrecondition): code with Choose and EncodeDelta. Memory: O(samples x
  // candidates + factors). Errors: those of Prepare.
  static absl::StatusOr<std::unique_ptr<EcqTensor>> Summarize(const float* delta, int64_t rows,
                                                              int64_t cols,
                                                              const EcqOptions& options);
  bool summary() const { return summary_; }
  // The choice (transform, rank, rounding) that Encode(step) makes, judged from
  // Evaluate's estimates instead of codings (for summaries, and for rate control's
  // search), each from every sample-th coefficient (as Evaluate).
  EcqTrial Choose(float step, int sample = 1) const;
  // Summaries: codes delta[rows x cols] (the one summarized) at `step` with `choice`'s
  // transform, rank and rounding, building only that candidate's coefficients (memory:
  // about 2x the delta; the calling thread keeps the coefficients' buffer in
  // thread_local storage for its next call). `trial`, if given, receives the choice, the
  // exact size and the squared error (from a sample of ~2^19 coefficients for large
  // tensors). InvalidArgument as Encode, or for a choice that was not a candidate.
  absl::StatusOr<std::vector<uint8_t>> EncodeDelta(const float* delta, float step,
                                                   const EcqTrial& choice,
                                                   EcqTrial* trial = nullptr) const;
  // Writes rows [r0, r1) of the delta (the one summarized) to out[0, (r1 - r0) x cols).
  using RowsFn = std::function<absl::Status(int64_t r0, int64_t r1, float* out)>;
  // Summaries: EncodeDelta's payload size estimated by coding every chunk_stride-th
  // entropy chunk of the plane only, from those chunks' rows of the delta (about
  // chunk_stride times less work): the header and factor bytes exactly, the chunks'
  // bytes scaled by the plane's symbols over the coded ones. With chunk_stride <= 1, or
  // a plane of one chunk, the exact size. For rate control's trial codings (PlanEcq).
  // Like EncodeDelta, safe to call from several threads at once; the calling thread
  // keeps its row and coefficient buffers in thread_local storage for its next call.
  // Errors: those of EncodeDelta and rows_of.
  absl::StatusOr<double> ProbeDeltaBytes(const RowsFn& rows_of, float step,
                                         const EcqTrial& choice, int chunk_stride) const;

  ~EcqTensor();

 private:
  EcqTensor() = default;
  // Checks the arguments (as Prepare) and sets the shape, energy and options.
  static absl::StatusOr<std::unique_ptr<EcqTensor>> Begin(const float* delta, int64_t rows,
                                                          int64_t cols,
                                                          const EcqOptions& options);
  // Evaluate over the planes of one rank only (-1: all).
  EcqTrial EvaluateRank(float step, int sample, const EcqTrial* fixed, int only_rank) const;
  // Encodes the planes of `choice` (its transform, rank and rounding) at `step`.
  absl::StatusOr<std::vector<uint8_t>> EncodeChoice(float step, const EcqTrial& choice,
                                                    EcqTrial* trial) const;
  // InvalidArgument for a step that is not in (0, 2^96) or too small for max_abs().
  absl::Status CheckStep(float step) const;
  int64_t rows_ = 0, cols_ = 0;
  double energy_ = 0.0, max_abs_ = 0.0, step_scale_ = 1.0, gain_weight_ = 1.0;
  bool summary_ = false;
  int patch_size_ = 32;
  std::vector<std::unique_ptr<internal::EcqPlane>> planes_;
};

// Encodes at one step (EcqTensor::Prepare + Encode). InvalidArgument as Prepare, or for
// a step that is not finite and > 0.
absl::StatusOr<std::vector<uint8_t>> EncodeEcqMatrix(const float* delta, int64_t rows,
                                                     int64_t cols, float step,
                                                     const EcqOptions& options = {});

// Decodes a payload into out[rows x cols]. InvalidArgument if rows/cols differ from the
// payload's; DataLoss for any malformed, truncated or trailing byte. Never over-reads.
absl::Status DecodeEcqMatrix(absl::Span<const uint8_t> payload, int64_t rows, int64_t cols,
                             float* out);

// Fused decode + merge of rows [row_begin, row_end), with the contract of
// DecodeDctMatrixMergeRows (codec/delta_dct.h): only those rows of `out` are written,
// ranges are independent, the union of ranges covering [0, rows) is byte-identical to
// one call over all rows; `saturated`, if given, is incremented by the number of merged
// values that saturated (internal/merge.h). Rows are decoded a chunk (EcqChunkRows) at a time: a range
// that splits a chunk decodes that chunk's entropy stream in both calls.
absl::Status DecodeEcqMatrixMergeRows(absl::Span<const uint8_t> payload, int64_t rows,
                                      int64_t cols, int64_t row_begin, int64_t row_end,
                                      const uint8_t* base, DType base_dtype, DType out_dtype,
                                      uint8_t* out, const RowsDoneFn& on_rows = nullptr,
                                      int64_t* saturated = nullptr);

// Rows per entropy chunk of a payload (the unit for parallel merges), or 0 if the
// payload's fixed header is malformed (decoding reports the error).
int64_t EcqChunkRows(absl::Span<const uint8_t> payload);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_DELTA_ECQ_H_

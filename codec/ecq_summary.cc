// Codec v2's summary encoder (EcqTensor::Summarize, Choose's input, EncodeDelta): plans a
// large model from samples of every candidate's coefficients and codes each tensor once,
// so that memory does not grow with model x candidates (codec/delta_ecq.h).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/delta_ecq.h"
#include "codec/internal/dct.h"
#include "codec/internal/ecq_encode.h"
#include "codec/internal/ecq_lowrank.h"
#include "codec/internal/ecq_payload.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

// Coefficients sampled per candidate: the identity's every s-th value (s odd), the
// DCT's every kPatchStride-th coefficient of kSamplePatches patches spread over the
// tensor (all of them for patches of fewer than 64 coefficients).
constexpr uint64_t kSamples = 8192;
constexpr int64_t kSamplePatches = 96;
constexpr int kPatchStride = 11;
// Coefficients EncodeDelta's bias and error are measured on (every s-th, s odd).
constexpr uint64_t kStatsCoefficients = uint64_t{1} << 19;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Values of src - L at chosen positions, L the low-rank part of `f` (null: none).
// Estimates only: L is summed in double here, not as the decoder sums it.
class LowRankSource {
 public:
  LowRankSource(const float* delta, int64_t cols, const internal::EcqFactors* f)
      : delta_(delta), cols_(cols), f_(f) {}
  float At(int64_t r, int64_t c) const {
    const float d = delta_[r * cols_ + c];
    if (f_ == nullptr) return d;
    double low = 0.0;
    for (int k = 0; k < f_->rank; ++k) {
      low += static_cast<double>(f_->u_scale[k]) * f_->u[r * f_->rank + k] * f_->v_scale[k] *
             f_->v[static_cast<size_t>(k) * cols_ + c];
    }
    return static_cast<float>(d - low);
  }

 private:
  const float* delta_;
  int64_t cols_;
  const internal::EcqFactors* f_;
};

// A summary plane of `transform` for delta - L (rank 0: the delta).
std::unique_ptr<internal::EcqPlane> SamplePlane(const float* delta, int64_t rows, int64_t cols,
                                                EcqTransform transform, int patch_size,
                                                int rank,
                                                std::shared_ptr<const internal::EcqFactors> f) {
  const LowRankSource src(delta, cols, f.get());
  auto pl = internal::NewEcqPlane(rows, cols, transform, patch_size, rank, f);
  pl->full_count = pl->chunk_begin.back();
  if (transform == EcqTransform::kIdentity) {
    const uint64_t n = pl->full_count;
    const uint64_t stride = std::max<uint64_t>(1, (n + kSamples - 1) / kSamples) | 1;
    for (uint64_t i = 0; i < n; i += stride) {
      pl->coef.push_back(src.At(static_cast<int64_t>(i) / cols, static_cast<int64_t>(i) % cols));
    }
    pl->sorted = internal::SortEcqSample(pl->coef);
    return pl;
  }
  const int p = patch_size;
  const int64_t prows = CeilDiv(rows, p), pcols = CeilDiv(cols, p);
  const int64_t patches = prows * pcols;
  const int cstride = p * p >= 64 ? kPatchStride : 1;
  const int64_t want = std::min<int64_t>(
      patches, std::max<int64_t>(kSamplePatches, kSamples * cstride / (p * p)));
  const internal::DctBasis basis(p);
  std::vector<float> patch(static_cast<size_t>(p) * p), coef(patch.size());
  for (int64_t j = 0; j < want; ++j) {
    const int64_t idx = static_cast<int64_t>((static_cast<double>(j) + 0.5) *
                                             static_cast<double>(patches) / want);
    const int64_t r0 = (idx / pcols) * p, c0 = (idx % pcols) * p;
    const int h = static_cast<int>(std::min<int64_t>(p, rows - r0));
    const int w = static_cast<int>(std::min<int64_t>(p, cols - c0));
    std::fill(patch.begin(), patch.end(), 0.0f);
    for (int r = 0; r < h; ++r) {
      for (int c = 0; c < w; ++c) patch[r * p + c] = src.At(r0 + r, c0 + c);
    }
    internal::ForwardDct2d(basis, patch.data(), p, coef.data(), p);
    for (int k = static_cast<int>((7 * j) % cstride); k < p * p; k += cstride) {
      pl->coef.push_back(coef[k]);
    }
  }
  pl->sorted = internal::SortEcqSample(pl->coef);
  return pl;
}

// An upper bound of |DCT coefficient| of any p x p patch of delta[rows x cols]: the
// largest patch L2 norm (the transform is orthonormal).
double DctBound(const float* delta, int64_t rows, int64_t cols, int p) {
  const int64_t pcols = CeilDiv(cols, p);
  std::vector<double> sq(static_cast<size_t>(pcols));
  double best = 0.0;
  for (int64_t r0 = 0; r0 < rows; r0 += p) {
    std::fill(sq.begin(), sq.end(), 0.0);
    for (int64_t r = r0; r < std::min(rows, r0 + p); ++r) {
      const float* row = delta + r * cols;
      for (int64_t pc = 0; pc < pcols; ++pc) {
        float s = 0.0f;  // a bound: float rounding is far below the margin it needs
        for (int64_t c = pc * p; c < std::min(cols, (pc + 1) * p); ++c) s += row[c] * row[c];
        sq[pc] += s;
      }
    }
    for (double s : sq) best = std::max(best, s);
  }
  return std::sqrt(best) * 1.001;  // margin for the float sums
}

}  // namespace

absl::StatusOr<std::unique_ptr<EcqTensor>> EcqTensor::Summarize(const float* delta, int64_t rows,
                                                                int64_t cols,
                                                                const EcqOptions& options) {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<EcqTensor> t, Begin(delta, rows, cols, options));
  t->summary_ = true;
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
  double max_abs = internal::EcqMaxAbs(delta, n);
  max_abs = std::max(max_abs, DctBound(delta, rows, cols, options.patch_size));
  auto add_planes = [&](int rank, std::shared_ptr<const internal::EcqFactors> f) {
    t->planes_.push_back(SamplePlane(delta, rows, cols, EcqTransform::kDct, options.patch_size,
                                     rank, f));
    if (options.try_identity) {
      t->planes_.push_back(
          SamplePlane(delta, rows, cols, EcqTransform::kIdentity, 1, rank, std::move(f)));
    }
  };
  add_planes(0, nullptr);
  const std::vector<int> ranks = internal::EcqCandidateRanks(rows, cols, options);
  if (!ranks.empty() && t->energy_ > 0.0 &&
      internal::EcqLowRankMayPay(delta, rows, cols, ranks.front(), t->energy_)) {
    DS_ASSIGN_OR_RETURN(internal::EcqFactors top,
                        internal::TopEcqFactors(delta, rows, cols, ranks.back()));
    for (int rank : ranks) {
      auto f = std::make_shared<const internal::EcqFactors>(
          internal::TruncateEcqFactors(top, rank, rows));
      add_planes(rank, std::move(f));
    }
    // The residual's coefficients may exceed the delta's (by at most |L|): a margin for
    // the planner's step range (EncodeDelta checks the exact maximum).
    max_abs *= 2.0;
  }
  t->max_abs_ = max_abs;
  return t;
}

absl::StatusOr<double> EcqTensor::ProbeDeltaBytes(const RowsFn& rows_of, float step,
                                                  const EcqTrial& choice,
                                                  int chunk_stride) const {
  const internal::EcqPlane* cand = nullptr;
  for (const auto& p : planes_) {
    if (p->header.transform == choice.transform && p->header.rank == choice.rank) cand = p.get();
  }
  const int64_t chunks =
      cand != nullptr ? static_cast<int64_t>(cand->chunk_begin.size()) - 1 : int64_t{0};
  thread_local std::vector<float> rows;
  if (cand == nullptr || chunk_stride <= 1 || chunks <= 1) {
    rows.resize(static_cast<size_t>(rows_ * cols_));
    DS_RETURN_IF_ERROR(rows_of(0, rows_, rows.data()));
    DS_ASSIGN_OR_RETURN(std::vector<uint8_t> out, EncodeDelta(rows.data(), step, choice));
    return static_cast<double>(out.size());
  }
  if (!std::isfinite(step) || !(step > 0.0f) || step >= internal::kEcqMaxStep) {
    return absl::InvalidArgumentError(absl::StrCat("ecq step ", step, " not in (0, 2^96)"));
  }
  // The rows of chunks stride/2, stride/2 + stride, ... (at least one chunk), one after
  // another: chunks are whole patch rows, so these rows' plane is those chunks'
  // coefficients.
  const int64_t chunk_rows = cand->header.chunk_rows;
  std::vector<int64_t> picked;
  for (int64_t c = chunk_stride / 2; c < chunks; c += chunk_stride) picked.push_back(c);
  if (picked.empty()) picked.push_back(chunks / 2);
  uint64_t symbols = 0;
  int64_t sub_rows = 0;
  for (int64_t c : picked) sub_rows += std::min(rows_, (c + 1) * chunk_rows) - c * chunk_rows;
  rows.resize(static_cast<size_t>(sub_rows * cols_));
  const std::vector<float> vf =
      cand->factors ? internal::EcqRightFactor(*cand->factors, cols_) : std::vector<float>();
  float* at = rows.data();
  for (int64_t c : picked) {
    const int64_t r0 = c * chunk_rows, r1 = std::min(rows_, r0 + chunk_rows);
    DS_RETURN_IF_ERROR(rows_of(r0, r1, at));
    if (cand->factors) {  // the residual, as EcqResidual makes it
      std::vector<float> low(static_cast<size_t>((r1 - r0) * cols_), 0.0f);
      internal::AddEcqLowRankRows(*cand->factors, vf.data(), r0, r1, cols_, low.data());
      for (size_t i = 0; i < low.size(); ++i) at[i] -= low[i];
    }
    at += (r1 - r0) * cols_;
    symbols += cand->chunk_begin[c + 1] - cand->chunk_begin[c];
  }
  double max_abs = 0.0;
  thread_local std::vector<float> coef;
  const bool identity = choice.transform == EcqTransform::kIdentity;
  std::unique_ptr<internal::EcqPlane> plane;
  if (identity) {
    plane = internal::NewEcqPlane(sub_rows, cols_, choice.transform, patch_size_, 0, nullptr);
    max_abs = internal::EcqMaxAbs(rows.data(), rows.size());
  } else {
    plane = internal::BuildEcqPlane(rows.data(), sub_rows, cols_, choice.transform, patch_size_,
                                    0, nullptr, &max_abs, &coef);
  }
  if (max_abs / step >= internal::kEcqMaxCode) {
    return absl::InvalidArgumentError(
        absl::StrCat("ecq step ", step, " too small for coefficients up to ", max_abs));
  }
  const float* values = identity ? rows.data() : plane->coef.data();
  DS_ASSIGN_OR_RETURN(std::vector<uint8_t> out,
                      internal::EncodeEcqCoefficients(*plane, values, step, choice.rounding,
                                                      gain_weight_, nullptr, 0));
  if (!identity) coef.swap(plane->coef);
  // The coded chunks' bytes, then the whole plane's header and factors exactly.
  std::vector<uint8_t> header;
  internal::AppendEcqHeader(plane->header,
                            std::vector<uint32_t>(plane->chunk_begin.size() - 1), &header);
  const double body = static_cast<double>(out.size() - header.size());
  header.clear();
  internal::AppendEcqHeader(cand->header, std::vector<uint32_t>(static_cast<size_t>(chunks)),
                            &header);
  return static_cast<double>(header.size() + cand->factor_bytes) +
         body * static_cast<double>(cand->chunk_begin.back()) / static_cast<double>(symbols);
}

absl::StatusOr<std::vector<uint8_t>> EcqTensor::EncodeDelta(const float* delta, float step,
                                                             const EcqTrial& choice,
                                                             EcqTrial* trial) const {
  if (delta == nullptr) return absl::InvalidArgumentError("delta is null");
  if (!std::isfinite(step) || !(step > 0.0f) || step >= internal::kEcqMaxStep) {
    return absl::InvalidArgumentError(absl::StrCat("ecq step ", step, " not in (0, 2^96)"));
  }
  const internal::EcqPlane* cand = nullptr;
  for (const auto& p : planes_) {
    if (p->header.transform == choice.transform && p->header.rank == choice.rank) cand = p.get();
  }
  if (cand == nullptr) return absl::InvalidArgumentError("ecq: the choice was not a candidate");
  std::vector<float> residual;
  const float* src = delta;
  if (cand->factors) {
    internal::EcqResidual(delta, rows_, cols_, *cand->factors, &residual);
    src = residual.data();
  }
  double max_abs = 0.0;
  // The coefficients' buffer is kept by the thread for its next tensor (as the delta's,
  // internal/ecq_compress.cc): fewer page faults. An identity plane's coefficients are
  // its source, read in place.
  thread_local std::vector<float> coef;
  const bool identity = choice.transform == EcqTransform::kIdentity;
  std::unique_ptr<internal::EcqPlane> plane;
  if (identity) {
    plane = internal::NewEcqPlane(rows_, cols_, choice.transform, patch_size_, choice.rank,
                                  cand->factors);
    max_abs = internal::EcqMaxAbs(src, plane->chunk_begin.back());
  } else {
    plane = internal::BuildEcqPlane(src, rows_, cols_, choice.transform, patch_size_,
                                    choice.rank, cand->factors, &max_abs, &coef);
    std::vector<float>().swap(residual);
  }
  const float* values = identity ? src : plane->coef.data();
  if (max_abs / step >= internal::kEcqMaxCode) {
    return absl::InvalidArgumentError(
        absl::StrCat("ecq step ", step, " too small for coefficients up to ", max_abs));
  }
  // The bias, gain and error from at most ~2^20 coefficients (relative error of the
  // squared-error sum ~2e-3 for a tensor, less over a model).
  const uint64_t n = plane->chunk_begin.back();
  const uint64_t stats_stride = n > kStatsCoefficients ? (n / kStatsCoefficients) | 1 : 1;
  DS_ASSIGN_OR_RETURN(std::vector<uint8_t> out,
                      internal::EncodeEcqCoefficients(*plane, values, step, choice.rounding,
                                                      gain_weight_, trial, stats_stride));
  if (!identity) coef.swap(plane->coef);
  if (trial) {
    trial->transform = choice.transform;
    trial->rank = choice.rank;
    trial->rounding = choice.rounding;
  }
  return out;
}

}  // namespace deltaserve::codec

#include "codec/delta_dct.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "codec/internal/bitpack.h"
#include "codec/internal/dct.h"
#include "codec/internal/dct_payload.h"
#include "codec/internal/fp16.h"
#include "codec/internal/merge.h"
#include "codec/internal/quantize.h"
#include "common/coding.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

using internal::DctBasis;
using internal::PayloadHeader;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Copies the in-bounds part of patch (pr, pc) into a zero-padded p x p buffer.
void GatherPatch(const float* m, int64_t rows, int64_t cols, int p, int64_t pr, int64_t pc,
                 float* patch) {
  const int64_t r0 = pr * p, c0 = pc * p;
  const int h = static_cast<int>(std::min<int64_t>(p, rows - r0));
  const int w = static_cast<int>(std::min<int64_t>(p, cols - c0));
  for (int r = 0; r < p; ++r) {
    float* dst = patch + r * p;
    if (r < h) {
      std::memcpy(dst, m + (r0 + r) * cols + c0, sizeof(float) * w);
      std::fill(dst + w, dst + p, 0.0f);
    } else {
      std::fill(dst, dst + p, 0.0f);
    }
  }
}

// Squared L2 norm of every patch (in the spatial domain; the orthonormal DCT preserves
// it), in patch order. InvalidArgument if the delta holds a non-finite value.
absl::StatusOr<std::vector<double>> PatchSquaredNorms(const float* m, int64_t rows,
                                                      int64_t cols, int p) {
  const int64_t prows = CeilDiv(rows, p), pcols = CeilDiv(cols, p);
  std::vector<double> norms(static_cast<size_t>(prows * pcols), 0.0);
  std::vector<float> row_acc(static_cast<size_t>(pcols));
  for (int64_t pr = 0; pr < prows; ++pr) {
    std::fill(row_acc.begin(), row_acc.end(), 0.0f);
    const int64_t r_end = std::min<int64_t>(rows, (pr + 1) * p);
    for (int64_t r = pr * p; r < r_end; ++r) {
      const float* row = m + r * cols;
      for (int64_t pc = 0; pc < pcols; ++pc) {
        const int64_t c_end = std::min<int64_t>(cols, (pc + 1) * p);
        float s = 0.0f;
        for (int64_t c = pc * p; c < c_end; ++c) s += row[c] * row[c];
        row_acc[pc] += s;
      }
    }
    for (int64_t pc = 0; pc < pcols; ++pc) {
      if (!std::isfinite(row_acc[pc])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "delta patch (", pr, ", ", pc, ") holds a non-finite or too large value"));
      }
      norms[pr * pcols + pc] = row_acc[pc];
    }
  }
  return norms;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// BitSchedule, DctParams, MatrixView

absl::Status BitSchedule::Validate() const {
  if (levels.empty()) return absl::InvalidArgumentError("bit schedule is empty");
  if (levels.size() > static_cast<size_t>(kMaxLevels)) {
    return absl::InvalidArgumentError(absl::StrCat("bit schedule has ", levels.size(),
                                                   " levels; at most ", kMaxLevels));
  }
  double sum = 0.0;
  for (const auto& [bits, frac] : levels) {
    if (bits < 0 || bits > 8) {
      return absl::InvalidArgumentError(
          absl::StrCat("bit schedule: bit-width ", bits, " outside [0, 8]"));
    }
    if (!(frac > 0.0) || !std::isfinite(frac)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bit schedule: fraction ", frac, " for ", bits, " bits must be > 0"));
    }
    sum += frac;
  }
  if (std::fabs(sum - 1.0) > 1e-6) {
    return absl::InvalidArgumentError(
        absl::StrCat("bit schedule: fractions sum to ", sum, ", not 1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<BitSchedule> BitSchedule::Parse(std::string_view text_in) {
  // Debian's Abseil has its own string_view type.
  const absl::string_view text(text_in.data(), text_in.size());
  BitSchedule s;
  if (absl::StripAsciiWhitespace(text).empty()) {
    return absl::InvalidArgumentError("bit schedule is empty");
  }
  for (absl::string_view token : absl::StrSplit(text, ',')) {
    const absl::string_view t = absl::StripAsciiWhitespace(token);
    std::vector<absl::string_view> parts = absl::StrSplit(t, ':');
    int bits = 0;
    double frac = 0.0;
    if (parts.size() != 2 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(parts[0]), &bits) ||
        !absl::SimpleAtod(absl::StripAsciiWhitespace(parts[1]), &frac)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bit schedule: malformed token \"", t, "\" (want bits:fraction, e.g. 2:0.5)"));
    }
    s.levels.emplace_back(bits, frac);
  }
  DS_RETURN_IF_ERROR(s.Validate());
  return s;
}

std::string BitSchedule::ToString() const {
  std::string out;
  for (size_t i = 0; i < levels.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", levels[i].first, ":", levels[i].second);
  }
  return out;
}

std::vector<int64_t> BitSchedule::Counts(int64_t num_patches) const {
  std::vector<int64_t> counts(levels.size(), 0);
  double cum = 0.0;
  int64_t prev = 0;
  for (size_t i = 0; i < levels.size(); ++i) {
    cum += levels[i].second;
    int64_t boundary = (i + 1 == levels.size())
                           ? num_patches
                           : static_cast<int64_t>(std::floor(cum * num_patches));
    boundary = std::clamp<int64_t>(boundary, prev, num_patches);
    counts[i] = boundary - prev;
    prev = boundary;
  }
  return counts;
}

double BitSchedule::MeanBits() const {
  double m = 0.0;
  for (const auto& [bits, frac] : levels) m += bits * frac;
  return m;
}

absl::Status DctParams::Validate() const {
  if (patch_size < 2 || patch_size > internal::kMaxDctPatch) {
    return absl::InvalidArgumentError(
        absl::StrCat("patch_size ", patch_size, " outside [2, ", internal::kMaxDctPatch, "]"));
  }
  DS_RETURN_IF_ERROR(schedule.Validate());
  if (quantizer != Quantizer::kMinMax && quantizer != Quantizer::kSymmetric &&
      quantizer != Quantizer::kClipped) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown quantizer ", static_cast<int>(quantizer)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<int64_t, int64_t>> MatrixView(absl::Span<const int64_t> shape,
                                                       int patch_size) {
  if (shape.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeString(shape), " has no 2-D view (needs >= 2 dims)"));
  }
  if (patch_size < 1) return absl::InvalidArgumentError("patch_size must be >= 1");
  for (int64_t d : shape) {
    if (d <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " has a non-positive dimension"));
    }
  }
  DS_RETURN_IF_ERROR(CheckedNumElements(shape).status());
  std::pair<int64_t, int64_t> best{0, 0};
  __int128 best_area = -1;
  for (size_t k = 1; k < shape.size(); ++k) {
    const int64_t r = NumElements(shape.subspan(0, k));
    const int64_t c = NumElements(shape.subspan(k));
    const __int128 area = static_cast<__int128>(CeilDiv(r, patch_size)) *
                          CeilDiv(c, patch_size);
    if (best_area < 0 || area <= best_area) {  // "<=": ties go to the larger k
      best_area = area;
      best = {r, c};
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------
// Encode

absl::StatusOr<std::vector<uint8_t>> EncodeDctMatrix(const float* delta, int64_t rows, int64_t cols,
                                                     const DctParams& params, int threads) {
  DS_RETURN_IF_ERROR(params.Validate());
  if (rows <= 0 || cols <= 0 || rows > internal::kMaxPayloadDim ||
      cols > internal::kMaxPayloadDim) {
    return absl::InvalidArgumentError(absl::StrCat("matrix ", rows, " x ", cols,
                                                   ": dims must be in [1, 2^32 - 1]"));
  }
  if (delta == nullptr) return absl::InvalidArgumentError("delta is null");
  const int p = params.patch_size;
  const int64_t prows = CeilDiv(rows, p), pcols = CeilDiv(cols, p);
  const int64_t num_patches = prows * pcols;

  DS_ASSIGN_OR_RETURN(std::vector<double> norms, PatchSquaredNorms(delta, rows, cols, p));
  std::vector<int64_t> order(static_cast<size_t>(num_patches));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return norms[a] > norms[b]; });
  std::vector<uint8_t> level_of(static_cast<size_t>(num_patches), 0);
  const std::vector<int64_t> counts = params.schedule.Counts(num_patches);
  int64_t rank = 0;
  for (size_t level = 0; level < counts.size(); ++level) {
    for (int64_t i = 0; i < counts[level]; ++i) level_of[order[rank++]] = level;
  }

  PayloadHeader h;
  h.patch_size = p;
  h.quantizer = params.quantizer;
  h.separate_dc = params.separate_dc;
  h.rows = rows;
  h.cols = cols;
  for (const auto& lv : params.schedule.levels) h.widths.push_back(lv.first);
  std::vector<uint8_t> out;
  internal::AppendPayloadHeader(h, &out);
  {
    internal::BitWriter map_writer(&out);
    const int idx_bits = internal::LevelIndexBits(static_cast<int>(h.widths.size()));
    if (idx_bits > 0) map_writer.Write(level_of.data(), num_patches, idx_bits);
  }

  const DctBasis basis(p);
  const int dc = params.separate_dc ? 1 : 0;
  const int ncoef = p * p - dc;
  // Patches [first, last), in order, into their own parameter bytes and code bits.
  struct Piece {
    std::vector<uint8_t> params, codes;
    uint64_t code_bits = 0;
  };
  auto encode = [&](int64_t first, int64_t last, Piece* piece) {
    std::vector<float> patch(static_cast<size_t>(p) * p), coef(static_cast<size_t>(p) * p);
    std::vector<uint8_t> codes(static_cast<size_t>(p) * p);
    internal::BitWriter code_writer(&piece->codes);
    auto put_bf16 = [&](float v) {
      common::ByteWriter(&piece->params).U16(internal::FloatToBf16(v));
    };
    for (int64_t pi = first; pi < last; ++pi) {
      const int bits = h.widths[level_of[pi]];
      if (bits == 0) continue;
      GatherPatch(delta, rows, cols, p, pi / pcols, pi % pcols, patch.data());
      internal::ForwardDct2d(basis, patch.data(), p, coef.data(), p);
      if (dc) put_bf16(coef[0]);
      const internal::QuantParams qp =
          internal::ChooseQuantParams(coef.data() + dc, ncoef, bits, params.quantizer);
      if (params.quantizer != Quantizer::kSymmetric) put_bf16(qp.offset);
      put_bf16(qp.scale);
      internal::QuantizeValues(coef.data() + dc, ncoef, bits, qp, codes.data());
      code_writer.Write(codes.data(), ncoef, bits);
    }
    piece->code_bits = code_writer.bit_count();
    code_writer.Flush();
  };
  // Pieces of whole patch rows, encoded at once; the streams are joined in order, so the
  // payload is the same bytes as one piece's.
  const int64_t num_pieces = std::clamp<int64_t>(threads, 1, prows);
  std::vector<Piece> pieces(static_cast<size_t>(num_pieces));
  auto piece_range = [&](int64_t k) {
    return std::make_pair(k * prows / num_pieces * pcols, (k + 1) * prows / num_pieces * pcols);
  };
  {
    std::vector<std::thread> workers;
    for (int64_t k = 1; k < num_pieces; ++k) {
      workers.emplace_back([&, k] {
        const auto [first, last] = piece_range(k);
        encode(first, last, &pieces[k]);
      });
    }
    const auto [first, last] = piece_range(0);
    encode(first, last, &pieces[0]);
    for (std::thread& t : workers) t.join();
  }
  for (const Piece& piece : pieces) out.insert(out.end(), piece.params.begin(), piece.params.end());
  if (num_pieces == 1) {
    out.insert(out.end(), pieces[0].codes.begin(), pieces[0].codes.end());
  } else {
    internal::BitWriter code_writer(&out);
    for (const Piece& piece : pieces) code_writer.AppendBits(piece.codes.data(), piece.code_bits);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Decode

namespace {

// Decodes patch row `pr` into dst (rows [pr*p, min(rows, pr*p+p)) x cols, row stride
// `stride`), writing zeros for dropped patches.
class StripDecoder {
 public:
  explicit StripDecoder(const internal::ParsedPayload& pp)
      : pp_(pp), basis_(pp.header.patch_size),
        coef_(static_cast<size_t>(pp.header.patch_size) * pp.header.patch_size),
        tmp_(coef_.size()), codes_(coef_.size()) {}

  // Positions the cursors at the first patch of patch row `pr` (any pr <= prows), as if
  // patch rows [0, pr) had been decoded: counts the kept patches before it.
  void Seek(int64_t pr) {
    const auto& h = pp_.header;
    const int dc = h.separate_dc ? 1 : 0;
    const int ncoef = h.patch_size * h.patch_size - dc;
    const int nparams = internal::NumStoredParams(h.quantizer) + dc;
    uint64_t kept = 0, bits_total = 0;
    const int64_t end = pr * pp_.pcols;
    if (h.widths.size() == 1) {
      kept = h.widths[0] ? end : 0;
      bits_total = kept * static_cast<uint64_t>(ncoef) * h.widths[0];
    } else {
      for (int64_t pi = 0; pi < end; ++pi) {
        const int bits = h.widths[pp_.LevelOf(pi)];
        kept += bits != 0;
        bits_total += static_cast<uint64_t>(ncoef) * bits;
      }
    }
    param_cursor_ = kept * 2 * nparams;
    code_cursor_ = bits_total;
  }

  void Decode(int64_t pr, float* dst, int64_t stride) {
    const int p = pp_.header.patch_size;
    const int hgt = static_cast<int>(std::min<int64_t>(p, pp_.header.rows - pr * p));
    for (int64_t pc = 0; pc < pp_.pcols; ++pc) {
      const int64_t c0 = pc * p;
      const int w = static_cast<int>(std::min<int64_t>(p, pp_.header.cols - c0));
      float* d = dst + c0;
      if (!Coefficients(pr * pp_.pcols + pc)) {
        for (int r = 0; r < hgt; ++r) std::fill(d + r * stride, d + r * stride + w, 0.0f);
        continue;
      }
      if (hgt == p && w == p) {
        internal::InverseDct2d(basis_, coef_.data(), p, d, stride);
      } else {
        internal::InverseDct2d(basis_, coef_.data(), p, tmp_.data(), p);
        for (int r = 0; r < hgt; ++r) std::memcpy(d + r * stride, &tmp_[r * p], sizeof(float) * w);
      }
    }
  }

  // Decode of a whole patch row (p rows) merged into 16-bit float base rows of `dtype`:
  // out = MergeRow(dtype, dtype) of base + the decoded strip, the same bytes as Decode
  // then MergeRow on each row. Full patches go through the fused inverse (no float strip);
  // dropped and edge patches merge through MergeRow. Returns the number of values
  // saturated. REQUIRES: internal::CanInverseDct2dMerge(p, dtype), (pr + 1) * p <= rows.
  int64_t DecodeMerge16(int64_t pr, DType dtype, const uint16_t* base, uint16_t* out,
                        float* scratch) {
    const int p = pp_.header.patch_size;
    const int64_t cols = pp_.header.cols;
    const uint8_t* b8 = reinterpret_cast<const uint8_t*>(base);
    uint8_t* o8 = reinterpret_cast<uint8_t*>(out);
    int64_t saturated = 0;
    for (int64_t pc = 0; pc < pp_.pcols; ++pc) {
      const int64_t c0 = pc * p;
      const int w = static_cast<int>(std::min<int64_t>(p, cols - c0));
      const bool kept = Coefficients(pr * pp_.pcols + pc);
      if (kept && w == p) {
        saturated += internal::InverseDct2dMerge(basis_, coef_.data(), dtype, base + c0, cols,
                                                 out + c0, cols);
        continue;
      }
      if (kept) internal::InverseDct2d(basis_, coef_.data(), p, tmp_.data(), p);
      for (int r = 0; r < p; ++r) {
        const int64_t at = (r * cols + c0) * 2;
        saturated += internal::MergeRow(b8 + at, dtype, kept ? &tmp_[r * p] : nullptr, w, dtype,
                                        o8 + at, scratch);
      }
    }
    return saturated;
  }

 private:
  // Reads patch pi's parameters and codes at the cursors into coef_ (dequantized
  // coefficients, row stride p) and advances the cursors. False for a dropped patch
  // (0 bits; nothing read).
  bool Coefficients(int64_t pi) {
    const auto& h = pp_.header;
    const int p = h.patch_size;
    const int dc = h.separate_dc ? 1 : 0;
    const int ncoef = p * p - dc;
    const int nparams = internal::NumStoredParams(h.quantizer) + dc;
    const int bits = h.widths[pp_.LevelOf(pi)];
    if (bits == 0) return false;
    const uint8_t* prm = pp_.params + param_cursor_;
    param_cursor_ += 2 * nparams;
    auto bf16 = [&](int i) {
      return internal::Bf16ToFloat(static_cast<uint16_t>(prm[2 * i] | (prm[2 * i + 1] << 8)));
    };
    float offset, scale;
    if (h.quantizer == Quantizer::kSymmetric) {
      scale = bf16(dc);
      offset = -0.5f * static_cast<float>((1 << bits) - 1) * scale;
    } else {
      offset = bf16(dc);
      scale = bf16(dc + 1);
    }
    if (dc) coef_[0] = bf16(0);
    if (bits == 1 && (code_cursor_ & 7) == 0 &&
        (code_cursor_ >> 3) + (ncoef + 7) / 8 <= pp_.codes_size) {
      // The default (1 bit, byte-aligned patches): unpack and dequantize in one pass.
      internal::DequantizeBits1(pp_.codes + (code_cursor_ >> 3), ncoef, offset, scale,
                                coef_.data() + dc);
    } else {
      internal::UnpackCodes(pp_.codes, pp_.codes_size, code_cursor_, ncoef, bits,
                            codes_.data());
      internal::DequantizeCodes(codes_.data(), ncoef, offset, scale, coef_.data() + dc);
    }
    code_cursor_ += static_cast<uint64_t>(ncoef) * bits;
    return true;
  }

  const internal::ParsedPayload& pp_;
  DctBasis basis_;
  std::vector<float> coef_, tmp_;
  std::vector<uint8_t> codes_;
  uint64_t param_cursor_ = 0;  // bytes into pp_.params
  uint64_t code_cursor_ = 0;   // bits into pp_.codes
};

}  // namespace

absl::Status DecodeDctMatrix(absl::Span<const uint8_t> payload, int64_t rows, int64_t cols,
                             float* out) {
  DS_ASSIGN_OR_RETURN(internal::ParsedPayload pp, internal::ParsePayload(payload, rows, cols));
  if (out == nullptr) return absl::InvalidArgumentError("output buffer is null");
  StripDecoder dec(pp);
  const int p = pp.header.patch_size;
  for (int64_t pr = 0; pr < pp.prows; ++pr) dec.Decode(pr, out + pr * p * cols, cols);
  return absl::OkStatus();
}

absl::Status DecodeDctMatrixMerge(absl::Span<const uint8_t> payload, int64_t rows,
                                  int64_t cols, const uint8_t* base, DType base_dtype,
                                  DType out_dtype, uint8_t* out) {
  return DecodeDctMatrixMergeRows(payload, rows, cols, 0, rows, base, base_dtype, out_dtype,
                                  out);
}

absl::Status DecodeDctMatrixMergeRows(absl::Span<const uint8_t> payload, int64_t rows, int64_t cols,
                                      int64_t row_begin, int64_t row_end, const uint8_t* base,
                                      DType base_dtype, DType out_dtype, uint8_t* out,
                                      const RowsDoneFn& on_rows, int64_t* saturated) {
  DS_ASSIGN_OR_RETURN(internal::ParsedPayload pp, internal::ParsePayload(payload, rows, cols));
  DS_RETURN_IF_ERROR(internal::CheckMergeRowsArgs(base, out, rows, row_begin, row_end));
  if (row_begin == row_end) return absl::OkStatus();
  StripDecoder dec(pp);
  const int p = pp.header.patch_size;
  const int64_t pr_begin = row_begin / p, pr_end = CeilDiv(row_end, p);
  dec.Seek(pr_begin);
  std::vector<float> strip(static_cast<size_t>(p) * cols), scratch(static_cast<size_t>(cols));
  const size_t bsz = DTypeSize(base_dtype), osz = DTypeSize(out_dtype);
  int64_t clamped = 0;
  // F16 -> F16 and BF16 -> BF16 at p = 32 on AVX-512: whole patch rows decode straight
  // into the output.
  const bool fused = base_dtype == out_dtype && internal::CanInverseDct2dMerge(p, out_dtype);
  for (int64_t pr = pr_begin; pr < pr_end; ++pr) {
    const int64_t r_begin = std::max<int64_t>(row_begin, pr * p);
    const int64_t r_end = std::min<int64_t>(row_end, (pr + 1) * p);
    if (fused && r_begin == pr * p && r_end == r_begin + p) {
      clamped += dec.DecodeMerge16(pr, out_dtype,
                                   reinterpret_cast<const uint16_t*>(base) + r_begin * cols,
                                   reinterpret_cast<uint16_t*>(out) + r_begin * cols,
                                   scratch.data());
      if (on_rows) on_rows(r_begin, r_end);
      continue;
    }
    dec.Decode(pr, strip.data(), cols);
    for (int64_t r = r_begin; r < r_end; ++r) {
      clamped +=
          internal::MergeRow(base + r * cols * bsz, base_dtype, strip.data() + (r - pr * p) * cols,
                             cols, out_dtype, out + r * cols * osz, scratch.data());
    }
    if (on_rows) on_rows(r_begin, r_end);
  }
  if (saturated != nullptr) *saturated += clamped;
  return absl::OkStatus();
}

}  // namespace deltaserve::codec

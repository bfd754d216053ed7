// The names and checks of codec/delta_codec.h's compression options: quantizers, encoding
// rules, ecq weighting and codec names, and CompressOptions::Validate.
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "codec/container_checks.h"
#include "codec/delta_codec.h"
#include "common/status_macros.h"

namespace deltaserve::codec {

std::string QuantizerName(Quantizer q) {
  switch (q) {
    case Quantizer::kMinMax:
      return "minmax";
    case Quantizer::kSymmetric:
      return "symmetric";
    case Quantizer::kClipped:
      return "clipped";
  }
  return absl::StrCat("quantizer-", static_cast<int>(q));
}

absl::StatusOr<Quantizer> ParseQuantizer(std::string_view text) {
  for (Quantizer q : {Quantizer::kMinMax, Quantizer::kSymmetric, Quantizer::kClipped}) {
    if (text == QuantizerName(q)) return q;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown quantizer '", std::string(text), "' (minmax, symmetric or clipped)"));
}

absl::StatusOr<EncodingRule> EncodingRule::Parse(std::string_view text) {
  const size_t eq = text.rfind('=');
  if (eq == std::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoding rule '", std::string(text), "': expected GLOB=raw|dct|unchanged"));
  }
  EncodingRule rule;
  rule.pattern = std::string(text.substr(0, eq));
  const std::string_view enc = text.substr(eq + 1);
  if (enc == "raw") {
    rule.encoding = Encoding::kRaw;
  } else if (enc == "dct") {
    rule.encoding = Encoding::kDct;
  } else if (enc == "unchanged") {
    rule.encoding = Encoding::kUnchanged;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("encoding rule '", std::string(text),
                                                   "': unknown encoding '", std::string(enc),
                                                   "' (raw, dct or unchanged)"));
  }
  return rule;
}

std::string EncodingRule::ToString() const {
  return absl::StrCat(pattern, "=", std::string(EncodingName(encoding)));
}

std::string EcqWeightingName(EcqWeighting w) {
  switch (w) {
    case EcqWeighting::kMse:
      return "mse";
    case EcqWeighting::kWeightRms:
      return "weight";
    case EcqWeighting::kDeltaRms:
      return "delta";
  }
  return absl::StrCat("weighting-", static_cast<int>(w));
}

absl::StatusOr<EcqWeighting> ParseEcqWeighting(std::string_view text) {
  for (EcqWeighting w : {EcqWeighting::kMse, EcqWeighting::kWeightRms, EcqWeighting::kDeltaRms}) {
    if (text == EcqWeightingName(w)) return w;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ecq weighting '", std::string(text), "' (want mse, weight or delta)"));
}

std::string LossyCodecName(LossyCodec c) { return c == LossyCodec::kEcq ? "ecq" : "dct"; }

absl::StatusOr<LossyCodec> ParseLossyCodec(std::string_view text) {
  if (text == "dct") return LossyCodec::kDct;
  if (text == "ecq") return LossyCodec::kEcq;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown codec '", std::string(text), "' (want dct or ecq)"));
}

absl::Status CompressOptions::Validate() const {
  DS_RETURN_IF_ERROR(dct.Validate());
  if (codec != LossyCodec::kDct && codec != LossyCodec::kEcq) {
    return absl::InvalidArgumentError(absl::StrCat("unknown codec ", static_cast<int>(codec)));
  }
  if (codec == LossyCodec::kEcq) {
    DS_RETURN_IF_ERROR(ecq.Validate());
    DS_RETURN_IF_ERROR(ParseEcqWeighting(EcqWeightingName(ecq_weighting)).status());
    const double b = ecq_target.bits_per_weight, e = ecq_target.max_error;
    if (!(e >= 0) || !std::isfinite(e) || (e == 0 && !(b > 0 && std::isfinite(b)))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ecq target: bits per weight ", b, " must be > 0, or max error ", e, " > 0"));
    }
  }
  if (!(max_relative_delta >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_relative_delta must be >= 0, is ", max_relative_delta));
  }
  if (min_dct_elements < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_dct_elements must be >= 0, is ", min_dct_elements));
  }
  if (threads < 0 || threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be in [0, 256], is ", threads));
  }
  for (const auto& r : rules) {
    if (r.pattern.empty()) return absl::InvalidArgumentError("encoding rule with empty glob");
    DS_RETURN_IF_ERROR(CheckUtf8(r.pattern, "encoding rule glob"));
    if (static_cast<uint8_t>(r.encoding) > static_cast<uint8_t>(Encoding::kDct)) {
      return absl::InvalidArgumentError(
          absl::StrCat("encoding rule '", r.pattern, "': unknown encoding"));
    }
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::codec

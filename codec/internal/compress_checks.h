// Checks CompressModel runs on a (base, finetuned) pair before and while it encodes, so
// that a pair that would give a silently wrong merged model is refused or reported by
// tensor name (FORMAT.md, "Tensor policy"; issue 11). Internal to codec/.
#ifndef DELTASERVE_CODEC_INTERNAL_COMPRESS_CHECKS_H_
#define DELTASERVE_CODEC_INTERNAL_COMPRESS_CHECKS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "codec/delta_codec.h"

namespace deltaserve::codec::internal {

// The tie rule (FORMAT.md, "Tied tensors"): each finetuned tensor absent from the base
// whose name ends in an output-head name (`lm_head.weight`, `embed_out.weight`,
// `predictions.decoder.weight`) is tied to the first base tensor, in the order of the
// input-embedding suffixes `embed_tokens.weight`, `wte.weight`, `word_embeddings.weight`,
// `embed_in.weight`, `shared.weight` (then shorter name, then bytewise), that has a
// castable dtype, the head's rank 2 and a mergeable shape (equal, or fewer rows), and
// whose delta norm against the head is at most options.max_relative_delta x its norm
// (when that check is on). Returns finetuned name -> base name; adds a warning per tie
// and per candidate refused by its delta norm. Empty unless options.tie_embeddings.
std::map<std::string, std::string> FindTies(const ModelReader& base, const ModelReader& finetuned,
                                            const CompressOptions& options, CompressStats* stats);

// Compares the name sets; a finetuned tensor in `ties` counts as in the base. Fills
// stats->base_only / finetune_only (sorted) and adds one warning per one-sided tensor;
// a finetune-only tensor with the shape of a base embedding is named as a probable tied
// embedding. InvalidArgument (listing the names, at most 20, with a common-prefix hint
// when every one-sided name differs by one prefix) if base-only tensors exist without
// options.allow_missing, or finetune-only ones without options.allow_extra.
absl::Status CheckNameSets(const ModelReader& base, const ModelReader& finetuned,
                           const std::map<std::string, std::string>& ties,
                           const CompressOptions& options, CompressStats* stats);

// Every tensor in both models must have mergeable shapes (equal, or more rows in the
// finetune). InvalidArgument naming every tensor that does not, with "transposed?" for
// a rank-2 finetuned shape that is the base's reversed.
absl::Status CheckShapes(const ModelReader& base, const ModelReader& finetuned);

// Non-finite (NaN, +-Inf) values of a castable tensor: how many, and the row-major
// coordinates of the first as text ("[3, 17]"); count 0 for other dtypes.
struct NonFinite {
  int64_t count = 0;
  std::string first;
};
NonFinite FindNonFinite(const TensorView& t);

// sqrt(sum delta^2) / sqrt(sum base^2) over the base-shaped part; 0 if the base is
// all zeros and so is the delta, +inf if only the base is. REQUIRES: castable dtypes,
// mergeable shapes.
double RelativeDeltaNorm(const TensorView& ft, const TensorView& base);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_COMPRESS_CHECKS_H_

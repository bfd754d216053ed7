#include "codec/ecq_alloc.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/internal/ordered_parallel.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

struct Totals {
  double bytes = 0.0, distortion = 0.0;
};

// Sampling of the search's estimates (EcqTensor::Evaluate); the coded sizes correct them.
constexpr int kSearchSample = 5;

// Rounds of correction in which the tensors choose their transform and rank again at the
// corrected step when the coded size overshot the target by more than kRechooseMiss
// (relative): a choice made at a step far from the final one can be wrong for it (at
// 0.25 bits per weight, factors chosen at a first step too fine can alone exceed the
// budget). An undershoot keeps the choices (a finer step fills the budget with them);
// later rounds keep them too, so that sizes vary smoothly with the step.
constexpr int kRechooseRounds = 3;
constexpr double kRechooseMiss = 0.02;

// Sums of the estimates at `step`; with `fixed` (one per tensor, or empty) the tensors
// keep those choices of transform and rounding. Summed in tensor order whatever the
// number of threads.
Totals Estimate(absl::Span<const EcqTensor* const> tensors, float step,
                const std::vector<EcqTrial>& fixed, int threads) {
  std::vector<EcqTrial> trials(tensors.size());
  internal::ParallelFor(tensors.size(), threads, [&](size_t i) {
    const float s = static_cast<float>(step * tensors[i]->step_scale());
    // Before the choices are made, a tensor estimates what it will code: its choice at
    // this step (the choice of rank can change its size by the factor bytes).
    trials[i] = fixed.empty() ? tensors[i]->Choose(s, kSearchSample)
                              : tensors[i]->Evaluate(s, kSearchSample, &fixed[i]);
  });
  Totals t;
  for (const EcqTrial& trial : trials) {
    t.bytes += trial.bytes;
    t.distortion += trial.distortion;
  }
  return t;
}

// Largest step in [lo, hi] (log-bisection) for which `ok(step)` holds, assuming ok is
// monotone (true for small steps). Returns lo if none does; with `above`, the end of
// the final interval where ok fails instead (hi if it never fails).
template <typename Ok>
float Bisect(float lo, float hi, const Ok& ok, int iterations, bool above = false) {
  double a = std::log(lo), b = std::log(hi);
  for (int i = 0; i < iterations; ++i) {
    const double m = 0.5 * (a + b);
    if (ok(static_cast<float>(std::exp(m)))) {
      a = m;
    } else {
      b = m;
    }
  }
  return static_cast<float>(std::exp(above ? b : a));
}

// Codes every tensor at `step` (EcqTensor::Encode). The first call (empty `fixed`)
// makes the choices (EcqTensor::Choose) and fills `fixed` with them; later calls keep
// them.
absl::Status EncodeAll(absl::Span<const EcqTensor* const> tensors, int threads, float step,
                       std::vector<EcqTrial>* fixed, EcqPlan* plan) {
  const bool freeze = fixed->empty();
  if (freeze) fixed->resize(tensors.size());
  std::vector<absl::StatusOr<std::vector<uint8_t>>> coded(tensors.size());
  std::vector<EcqTrial> trials(tensors.size());
  internal::ParallelFor(tensors.size(), threads, [&](size_t i) {
    const float s = static_cast<float>(step * tensors[i]->step_scale());
    // The choice from the search's own estimates (Choose at its sampling): the search
    // placed the step against them, and a choice of rank made from other estimates can
    // land on the other side of a jump in size (by the factor bytes).
    const EcqTrial choice = freeze ? tensors[i]->Choose(s, kSearchSample) : (*fixed)[i];
    coded[i] = tensors[i]->Encode(s, &trials[i], &choice);
  });
  plan->payloads.clear();
  plan->payload_bytes = 0;
  plan->distortion = 0.0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!coded[i].ok()) return coded[i].status();
    if (freeze) (*fixed)[i] = trials[i];
    plan->payload_bytes += coded[i]->size();
    plan->distortion += trials[i].distortion;
    plan->payloads.push_back(*std::move(coded[i]));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EcqPlan> PlanEcq(absl::Span<const EcqTensor* const> tensors, uint64_t weights,
                                double overhead_bytes, const EcqTarget& target, int threads,
                                const EcqEncodeAllFn& encode_all,
                                const EcqEncodeAllFn& probe_all) {
  if (tensors.empty() || weights == 0) {
    return absl::InvalidArgumentError("ecq plan: no tensors to code");
  }
  const bool by_error = target.max_error > 0.0;
  if (!by_error && !(target.bits_per_weight > 0.0 && std::isfinite(target.bits_per_weight))) {
    return absl::InvalidArgumentError(
        absl::StrCat("ecq plan: bits per weight ", target.bits_per_weight, " must be > 0"));
  }
  if (by_error && !std::isfinite(target.max_error)) {
    return absl::InvalidArgumentError("ecq plan: max_error must be finite");
  }
  threads = std::max(threads, 1);
  const EcqEncodeAllFn code_all =
      encode_all ? encode_all
                 : EcqEncodeAllFn([&](float step, std::vector<EcqTrial>* fixed, EcqPlan* plan) {
                     return EncodeAll(tensors, threads, step, fixed, plan);
                   });
  auto code_at = [&](float step, std::vector<EcqTrial>* fixed, EcqPlan* plan) {
    plan->step = step;
    return code_all(step, fixed, plan);
  };
  EcqPlan plan;
  double max_abs = 0.0;
  for (const EcqTensor* x : tensors) {
    plan.energy += x->energy();
    if (!(x->step_scale() > 0.0) || !std::isfinite(x->step_scale())) {
      return absl::InvalidArgumentError("ecq plan: a tensor's step scale is not > 0");
    }
    max_abs = std::max(max_abs, x->max_abs() / x->step_scale());
  }
  // Steps between "every code escapes at most 2^29" and "every code is 0".
  const float hi = static_cast<float>(std::max(2.0 * max_abs, 1e-30));
  const float lo = static_cast<float>(std::max(max_abs / double{1 << 29}, 1e-37));
  std::vector<EcqTrial> fixed;  // choices frozen after the first coding
  auto bits_of = [&](double payload_bytes) {
    return (payload_bytes + overhead_bytes) * 8.0 / static_cast<double>(weights);
  };
  if (by_error) {
    const double limit = target.max_error * target.max_error * plan.energy;
    // As for bits: estimate, code, correct the estimate's target by the measured error.
    double want = limit;
    float a = lo, b = hi;
    EcqPlan best;
    bool have_best = false;
    for (int round = 0; round < 6; ++round) {
      const float step = Bisect(
          a, b, [&](float s) { return Estimate(tensors, s, fixed, threads).distortion <= want; },
          round == 0 ? 24 : 12);
      a = std::max(lo, step / 2);
      b = std::min(hi, step * 2);
      DS_RETURN_IF_ERROR(code_at(step, &fixed, &plan));
      if (plan.distortion <= limit && (!have_best || step > best.step)) {
        best = plan;
        have_best = true;
      }
      if (plan.distortion <= limit && plan.distortion >= 0.98 * limit) break;
      if (!(plan.distortion > 0.0)) break;
      want = want * limit / plan.distortion;
    }
    // Still over (estimates far off): shrink the step until the coded error is within.
    float step = plan.step;
    for (int i = 0; i < 60 && !have_best && step > lo; ++i) {
      step *= 0.97f;
      DS_RETURN_IF_ERROR(code_at(step, &fixed, &plan));
      if (plan.distortion <= limit) {
        best = plan;
        have_best = true;
      }
    }
    if (have_best) plan = std::move(best);
  } else {
    const double budget = target.bits_per_weight * static_cast<double>(weights) / 8.0 -
                          overhead_bytes;
    // Estimates differ from the coded sizes (rANS tables, order-1 gains): calibrate the
    // estimate's target by the measured ratio until the coded size is within 0.5%.
    double want = budget;
    float step = hi, a = lo, b = hi;
    // Summaries code the whole model again per correction: 1% (a coding of the
    // stream_bench model's 0.5 G weights is most of its compress time).
    const bool summaries = tensors.front()->summary();
    const double tolerance = summaries ? 0.01 : 0.005;
    constexpr int kRounds = 6;
    if (budget <= 0.0) {  // the framing alone is over the target: code all-zero payloads
      DS_RETURN_IF_ERROR(code_at(hi, &fixed, &plan));
      plan.floor_reached = true;
    }
    for (int round = 0; round < kRounds && budget > 0.0; ++round) {
      // The first search spans all steps; corrections search near the last step.
      // Bisect returns the largest step still over `want`; one ulp-scale step up is under.
      // An estimate with the choices still to make (always a summary's) jumps where a
      // choice of rank changes (by the factor bytes): it takes the end of the last
      // interval, under `want`.
      step = Bisect(a, b, [&](float s) { return Estimate(tensors, s, fixed, threads).bytes > want; },
                    round == 0 ? 24 : 12, summaries || fixed.empty());
      a = std::max(lo, step / 2);
      b = std::min(hi, step * 2);
      if (!summaries) step = std::min(hi, step * 1.0000001f);
      if (probe_all && round + 1 < kRounds) {
        // A probe that misses corrects the step as a coding would; one within the
        // tolerance is followed by the coding. The steps coded, and so the bytes, are
        // those of coding every round, unless a size lies within the probe's own error
        // (~0.03% on the stream_bench models) of the tolerance's edge.
        EcqPlan probe;
        DS_RETURN_IF_ERROR(probe_all(step, &fixed, &probe));
        const double guess = static_cast<double>(probe.payload_bytes);
        if (std::fabs(bits_of(guess) - target.bits_per_weight) >
                tolerance * target.bits_per_weight &&
            !(guess > budget && step >= hi) && guess > 0.0) {
          want = budget * Estimate(tensors, step, fixed, threads).bytes / guess;
          if (round < kRechooseRounds && guess > (1.0 + kRechooseMiss) * budget) fixed.clear();
          continue;
        }
      }
      DS_RETURN_IF_ERROR(code_at(step, &fixed, &plan));
      const double got = static_cast<double>(plan.payload_bytes);
      if (std::fabs(bits_of(got) - target.bits_per_weight) <= tolerance * target.bits_per_weight) {
        break;
      }
      if (got > budget && step >= hi) {
        plan.floor_reached = true;
        break;
      }
      if (!(got > 0.0)) break;
      // The next search's estimates, of the choices now made, against the coded size.
      want = budget * Estimate(tensors, step, fixed, threads).bytes / got;
      if (round < kRechooseRounds && got > (1.0 + kRechooseMiss) * budget) fixed.clear();
    }
  }
  plan.bits_per_weight = bits_of(static_cast<double>(plan.payload_bytes));
  return plan;
}

}  // namespace deltaserve::codec

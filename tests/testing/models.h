// Small models for codec tests: tensors from float values, written as safetensors.
#ifndef DELTASERVE_TESTS_TESTING_MODELS_H_
#define DELTASERVE_TESTS_TESTING_MODELS_H_

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/delta_codec.h"
#include "codec/safetensors.h"
#include "codec/tensor.h"

namespace deltaserve::testing {

// A castable tensor holding `values` converted to `dtype`.
inline codec::OwnedTensor MakeTensor(const std::string& name, codec::DType dtype,
                                     std::vector<int64_t> shape, const std::vector<float>& values) {
  codec::OwnedTensor t;
  t.info = {name, dtype, std::move(shape)};
  t.data.resize(t.info.num_bytes());
  codec::FromFloat32(values.data(), t.info.num_elements(), dtype, t.data.data());
  return t;
}

// n values drawn from N(0, sigma^2), deterministic for a seed.
inline std::vector<float> Gaussian(int64_t n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// ||a - b|| / ||a|| (Frobenius), the relative error of `b` as an approximation of `a`
// (same sizes); ||a - b|| when `a` is all zeros.
inline double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// `values` each moved by N(0, 0.01^2) times its magnitude: a plausible finetune of them
// (a delta ~1% of the weights). Deterministic for a seed.
inline std::vector<float> Nudged(std::vector<float> values, uint32_t seed) {
  const std::vector<float> d = Gaussian(static_cast<int64_t>(values.size()), 0.01f, seed);
  for (size_t i = 0; i < values.size(); ++i) values[i] += d[i] * std::abs(values[i]);
  return values;
}

// One .safetensors file holding `tensors`, no metadata.
inline absl::Status Write(const std::string& path, const std::vector<codec::OwnedTensor>& tensors) {
  std::vector<codec::TensorView> views;
  for (const auto& t : tensors) views.push_back(t.view());
  return codec::WriteSafetensors(path, views, {});
}

// Writes `base` and `ft` as `dir`/b.safetensors and `dir`/f.safetensors, opens the base
// into *base_out (kept for decoding) and compresses the pair into `out`: the stats, or
// the first error.
inline absl::StatusOr<codec::CompressStats> CompressPair(
    const std::string& dir, const std::vector<codec::OwnedTensor>& base,
    const std::vector<codec::OwnedTensor>& ft, const codec::CompressOptions& options,
    const std::string& out, std::unique_ptr<codec::ModelReader>* base_out) {
  const std::string b_path = dir + "/b.safetensors", f_path = dir + "/f.safetensors";
  if (absl::Status s = Write(b_path, base); !s.ok()) return s;
  if (absl::Status s = Write(f_path, ft); !s.ok()) return s;
  auto b = codec::ModelReader::Open(b_path);
  auto f = codec::ModelReader::Open(f_path);
  if (!b.ok()) return b.status();
  if (!f.ok()) return f.status();
  *base_out = *std::move(b);
  return codec::CompressModel(**base_out, **f, options, out);
}

}  // namespace deltaserve::testing

#endif  // DELTASERVE_TESTS_TESTING_MODELS_H_

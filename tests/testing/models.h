// Small models for codec tests: tensors from float values, written as safetensors.
#ifndef DELTASERVE_TESTS_TESTING_MODELS_H_
#define DELTASERVE_TESTS_TESTING_MODELS_H_

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
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

// One .safetensors file holding `tensors`, no metadata.
inline absl::Status Write(const std::string& path, const std::vector<codec::OwnedTensor>& tensors) {
  std::vector<codec::TensorView> views;
  for (const auto& t : tensors) views.push_back(t.view());
  return codec::WriteSafetensors(path, views, {});
}

}  // namespace deltaserve::testing

#endif  // DELTASERVE_TESTS_TESTING_MODELS_H_

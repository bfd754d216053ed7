// Delta-DCT parameter study: relative delta error vs payload bits per weight on a real
// base -> finetuned pair, for patch sizes, schedules and quantizer options.
//
// Input: a file of float32 deltas written by tests/bench/dump_tfjs_delta.py:
//   repeated { u32 name_len, name, u32 ndim, i64 dims[ndim], f32 data[prod(dims)] }.
// Usage: dct_study DELTA.bin [p,...] [schedule;schedule;...]
// Each tensor is coded on its MatrixView at each p.
// Prints one markdown row per configuration: bits per weight of the Delta-DCT payloads
// (every payload byte / weights), aggregate relative error sqrt(sum ||d - d_hat||^2 /
// sum ||d||^2), and the largest per-tensor relative error.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "codec/delta_dct.h"

namespace {

using deltaserve::codec::BitSchedule;
using deltaserve::codec::DctParams;
using deltaserve::codec::Quantizer;

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major; any 2-D view of it is the same bytes
};

bool Load(const char* path, std::vector<Tensor>* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  uint32_t len;
  while (in.read(reinterpret_cast<char*>(&len), 4)) {
    Tensor t;
    t.name.resize(len);
    in.read(t.name.data(), len);
    uint32_t ndim;
    in.read(reinterpret_cast<char*>(&ndim), 4);
    t.shape.resize(ndim);
    in.read(reinterpret_cast<char*>(t.shape.data()), 8 * ndim);
    auto n = deltaserve::codec::CheckedNumElements(t.shape);
    if (!n.ok() || ndim < 2) return false;
    t.data.resize(*n);
    in.read(reinterpret_cast<char*>(t.data.data()), 4 * t.data.size());
    if (!in) return false;
    out->push_back(std::move(t));
  }
  return !out->empty();
}

const char* QName(Quantizer q) {
  return q == Quantizer::kMinMax ? "minmax" : q == Quantizer::kSymmetric ? "symmetric" : "clipped";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DELTA.bin [p,...] [sched;sched;...]\n", argv[0]);
    return 2;
  }
  std::vector<Tensor> tensors;
  if (!Load(argv[1], &tensors)) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  std::vector<int> patch_sizes = {8, 16, 32};
  if (argc > 2) {
    patch_sizes.clear();
    for (absl::string_view s : absl::StrSplit(argv[2], ',')) {
      int p;
      if (absl::SimpleAtoi(s, &p)) patch_sizes.push_back(p);
    }
  }
  std::vector<std::string> schedules = {"1:1", "2:0.5,0:0.5", "3:0.333333,0:0.666667",
                                        "4:0.25,0:0.75", "3:0.2,1:0.4,0:0.4",
                                        "2:0.25,1:0.5,0:0.25", "2:0.4,1:0.2,0:0.4",
                                        "4:0.1,2:0.2,1:0.2,0:0.5"};
  if (argc > 3) schedules = absl::StrSplit(argv[3], ';');
  int64_t weights = 0;
  for (const auto& t : tensors) weights += static_cast<int64_t>(t.data.size());
  std::printf("%zu tensors, %lld weights\n\n", tensors.size(), static_cast<long long>(weights));
  std::printf("| p | schedule | quantizer | DC apart | bits/weight | rel. error | worst tensor |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (int p : patch_sizes) {
    for (const auto& sched : schedules) {
      auto s = BitSchedule::Parse(sched);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
        return 2;
      }
      for (Quantizer q : {Quantizer::kMinMax, Quantizer::kSymmetric, Quantizer::kClipped}) {
        for (bool dc : {false, true}) {
          DctParams params;
          params.patch_size = p;
          params.schedule = *s;
          params.quantizer = q;
          params.separate_dc = dc;
          double err2 = 0, norm2 = 0, worst = 0;
          uint64_t bytes = 0;
          for (const auto& t : tensors) {
            const auto [rows, cols] = deltaserve::codec::MatrixView(t.shape, p).value();
            auto enc = deltaserve::codec::EncodeDctMatrix(t.data.data(), rows, cols, params);
            if (!enc.ok()) {
              std::fprintf(stderr, "%s: %s\n", t.name.c_str(), enc.status().ToString().c_str());
              return 1;
            }
            bytes += enc->size();
            std::vector<float> out(t.data.size());
            auto st = deltaserve::codec::DecodeDctMatrix(*enc, rows, cols, out.data());
            if (!st.ok()) {
              std::fprintf(stderr, "%s: %s\n", t.name.c_str(), st.ToString().c_str());
              return 1;
            }
            double e = 0, n = 0;
            for (size_t i = 0; i < out.size(); ++i) {
              const double diff = double(t.data[i]) - out[i];
              e += diff * diff;
              n += double(t.data[i]) * t.data[i];
            }
            err2 += e;
            norm2 += n;
            worst = std::max(worst, std::sqrt(e / n));
          }
          std::printf("| %d | %s | %s | %s | %.4f | %.4f | %.4f |\n", p, sched.c_str(), QName(q),
                      dc ? "yes" : "no", 8.0 * bytes / weights, std::sqrt(err2 / norm2), worst);
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

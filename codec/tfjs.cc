#include "codec/tfjs.h"

#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codec/internal/json_shape.h"
#include "common/json.h"
#include "common/file.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

static_assert(std::endian::native == std::endian::little,
              "TF.js weights are little-endian; big-endian hosts need byte swaps");

namespace fs = std::filesystem;

using nlohmann::json;

// A weight group's bytes: its files, concatenated in `paths` order, read in place.
class GroupBytes {
 public:
  // Maps every file of the group. `dir` is the model.json's directory.
  static absl::StatusOr<GroupBytes> Open(const std::string& json_path, const fs::path& dir,
                                         const json& paths, size_t group) {
    GroupBytes g;
    if (!paths.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(json_path, ": weightsManifest[", group, "].paths is not an array"));
    }
    for (const json& p : paths) {
      DS_ASSIGN_OR_RETURN(
          std::string rel,
          common::JsonToString(p, absl::StrCat(json_path, ": weightsManifest[", group,
                                                 "].paths entry")));
      absl::StatusOr<std::string> file = common::ResolveContainedPath(dir.string(), rel);
      if (!file.ok()) {
        return common::Annotate(
            file.status(), absl::StrCat(json_path, ": weightsManifest[", group, "].paths"));
      }
      DS_ASSIGN_OR_RETURN(std::unique_ptr<common::MappedFile> f, common::MappedFile::Open(*file));
      g.size_ += f->size();
      g.files_.push_back(std::move(f));
    }
    return g;
  }

  uint64_t size() const { return size_; }

  // Names of the group's files, for messages.
  std::string Describe() const {
    std::vector<std::string> names;
    for (const auto& f : files_) names.push_back(f->path());
    return absl::StrJoin(names, " + ");
  }

  // Copies bytes [offset, offset + n) of the concatenation to `dst`.
  // REQUIRES: offset + n <= size().
  void Copy(uint64_t offset, uint64_t n, uint8_t* dst) const {
    for (const auto& f : files_) {
      if (n == 0) return;
      if (offset >= f->size()) {
        offset -= f->size();
        continue;
      }
      const uint64_t take = std::min<uint64_t>(n, f->size() - offset);
      std::memcpy(dst, f->bytes().data() + offset, take);
      dst += take;
      n -= take;
      offset = 0;
    }
  }

 private:
  std::vector<std::unique_ptr<common::MappedFile>> files_;
  uint64_t size_ = 0;
};

// Bytes per stored element of a TF.js dtype without quantization; 0 for "string",
// whose elements are variable-length; -1 if unknown.
int StoredElementSize(std::string_view dtype) {
  if (dtype == "float32" || dtype == "int32") return 4;
  if (dtype == "bool") return 1;
  if (dtype == "complex64") return 8;
  if (dtype == "string") return 0;
  return -1;
}

// How one manifest weight is stored and what becomes of it.
struct WeightPlan {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;       // manifest dtype
  std::string quant;       // "" or quantization.dtype
  double scale = 0, min = 0;  // affine uint8/uint16 quantization
  int stored_size = 0;     // bytes per stored element; 0: TF.js strings
  bool imported = false;   // float32 weights become tensors; the rest are skipped
};

absl::StatusOr<WeightPlan> PlanWeight(const std::string& json_path, const json& w,
                                      size_t group, size_t index) {
  std::string where = absl::StrCat(json_path, ": weightsManifest[", group, "].weights[", index,
                                   "]");
  if (!w.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " is not an object"));
  WeightPlan plan;
  auto name_it = w.find("name");
  if (name_it == w.end()) return absl::InvalidArgumentError(absl::StrCat(where, ": no 'name'"));
  DS_ASSIGN_OR_RETURN(plan.name, common::JsonToString(*name_it, where));
  const std::string what = absl::StrCat(json_path, ": weight '", plan.name, "'");
  if (plan.name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty name"));
  auto shape_it = w.find("shape");
  auto dtype_it = w.find("dtype");
  if (shape_it == w.end() || dtype_it == w.end()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": needs 'shape' and 'dtype'"));
  }
  DS_ASSIGN_OR_RETURN(plan.shape, internal::JsonToShape(*shape_it, absl::StrCat(what, " shape")));
  DS_ASSIGN_OR_RETURN(plan.dtype, common::JsonToString(*dtype_it, absl::StrCat(what, " dtype")));
  plan.stored_size = StoredElementSize(plan.dtype);
  if (plan.stored_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": unknown dtype '", plan.dtype, "'"));
  }
  plan.imported = plan.dtype == "float32";

  if (auto q = w.find("quantization"); q != w.end() && !q->is_null()) {
    if (!q->is_object() || !q->contains("dtype")) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": quantization has no dtype"));
    }
    DS_ASSIGN_OR_RETURN(plan.quant,
                        common::JsonToString((*q)["dtype"], absl::StrCat(what, " quantization")));
    if (plan.quant == "float16") {
      plan.stored_size = 2;
    } else if (plan.quant == "uint8" || plan.quant == "uint16") {
      plan.stored_size = plan.quant == "uint8" ? 1 : 2;
      if (!q->contains("scale") || !q->contains("min")) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": ", plan.quant, " quantization needs 'scale' and 'min'"));
      }
      DS_ASSIGN_OR_RETURN(plan.scale, common::JsonToDouble((*q)["scale"],
                                                              absl::StrCat(what, " scale")));
      DS_ASSIGN_OR_RETURN(plan.min, common::JsonToDouble((*q)["min"],
                                                            absl::StrCat(what, " min")));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unsupported quantization dtype '", plan.quant, "'"));
    }
    if (plan.dtype == "string") {
      return absl::InvalidArgumentError(absl::StrCat(what, ": quantized string weight"));
    }
  }
  return plan;
}

// Number of stored bytes of `plan` at `offset` of `bytes`; for strings, walks the
// 4-byte little-endian length prefix of each element.
absl::StatusOr<uint64_t> StoredBytes(const std::string& json_path, const WeightPlan& plan,
                                     const GroupBytes& bytes, uint64_t offset) {
  const uint64_t n = static_cast<uint64_t>(NumElements(plan.shape));
  auto too_short = [&](uint64_t need) {
    return absl::InvalidArgumentError(absl::StrCat(
        json_path, ": weight '", plan.name, "' needs bytes [", offset, ", ", need,
        ") but its weight files (", bytes.Describe(), ") hold ", bytes.size(), " bytes"));
  };
  if (plan.stored_size > 0) {
    if (n > std::numeric_limits<uint64_t>::max() / 8) return too_short(std::numeric_limits<uint64_t>::max());
    const uint64_t len = n * static_cast<uint64_t>(plan.stored_size);
    if (offset > bytes.size() || len > bytes.size() - offset) return too_short(offset + len);
    return len;
  }
  uint64_t pos = offset;
  for (uint64_t i = 0; i < n; ++i) {
    if (pos > bytes.size() || bytes.size() - pos < 4) return too_short(pos + 4);
    uint32_t len;
    bytes.Copy(pos, 4, reinterpret_cast<uint8_t*>(&len));
    pos += 4;
    if (bytes.size() - pos < len) return too_short(pos + len);
    pos += len;
  }
  return pos - offset;
}

// Builds the tensor of an imported (float32) weight from its stored bytes.
OwnedTensor MakeTensor(const WeightPlan& plan, const GroupBytes& bytes, uint64_t offset,
                       uint64_t len) {
  OwnedTensor t;
  t.info.name = plan.name;
  t.info.shape = plan.shape;
  const int64_t n = NumElements(plan.shape);
  if (plan.quant.empty() || plan.quant == "float16") {
    // float32 as it is; float16 keeps the stored halves (no rounding twice).
    t.info.dtype = plan.quant.empty() ? DType::kF32 : DType::kF16;
    t.data.resize(len);
    bytes.Copy(offset, len, t.data.data());
    return t;
  }
  // Affine quantization (TF.js io/types.ts): value = min + scale * q.
  t.info.dtype = DType::kF32;
  std::vector<uint8_t> q(len);
  bytes.Copy(offset, len, q.data());
  t.data.resize(static_cast<size_t>(n) * 4);
  float* out = reinterpret_cast<float*>(t.data.data());
  for (int64_t i = 0; i < n; ++i) {
    uint32_t v = q[i];
    if (plan.quant == "uint16") {
      uint16_t h;
      std::memcpy(&h, q.data() + 2 * i, 2);
      v = h;
    }
    const float f = static_cast<float>(plan.min + plan.scale * v);
    std::memcpy(out + i, &f, 4);
  }
  return t;
}

void AddStringField(const json& j, const char* key, std::map<std::string, std::string>* md) {
  if (auto it = j.find(key); it != j.end() && it->is_string()) (*md)[key] = it->get<std::string>();
}

}  // namespace

absl::StatusOr<TfjsModel> ImportTfjsGraphModel(const std::string& model_json_path) {
  DS_ASSIGN_OR_RETURN(std::string text, common::ReadFileToString(model_json_path));
  DS_ASSIGN_OR_RETURN(json model, common::ParseJson(text, model_json_path));
  if (!model.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(model_json_path, ": not a JSON object"));
  }
  auto manifest = model.find("weightsManifest");
  if (manifest == model.end() || !manifest->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_json_path, ": missing 'weightsManifest' array"));
  }
  TfjsModel out;
  AddStringField(model, "format", &out.metadata);
  AddStringField(model, "generatedBy", &out.metadata);
  AddStringField(model, "convertedBy", &out.metadata);

  const fs::path dir = fs::path(model_json_path).parent_path();
  std::vector<std::string> skipped;
  std::set<std::string> names;
  for (size_t g = 0; g < manifest->size(); ++g) {
    const json& group = (*manifest)[g];
    if (!group.is_object() || !group.contains("paths") || !group.contains("weights") ||
        !group["weights"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          model_json_path, ": weightsManifest[", g, "] needs 'paths' and a 'weights' array"));
    }
    DS_ASSIGN_OR_RETURN(GroupBytes bytes,
                        GroupBytes::Open(model_json_path, dir, group["paths"], g));
    uint64_t offset = 0;
    const json& weights = group["weights"];
    for (size_t i = 0; i < weights.size(); ++i) {
      DS_ASSIGN_OR_RETURN(WeightPlan plan, PlanWeight(model_json_path, weights[i], g, i));
      DS_ASSIGN_OR_RETURN(uint64_t len, StoredBytes(model_json_path, plan, bytes, offset));
      if (!names.insert(plan.name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(model_json_path, ": weight '", plan.name, "' appears twice"));
      }
      if (plan.imported) {
        out.tensors.push_back(MakeTensor(plan, bytes, offset, len));
      } else {
        skipped.push_back(plan.name);
      }
      offset += len;
    }
  }
  if (!skipped.empty()) out.metadata["skipped"] = absl::StrJoin(skipped, ",");
  return out;
}

}  // namespace deltaserve::codec

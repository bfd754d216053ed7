#include "codec/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <unordered_map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "codec/container.h"
#include "codec/internal/input_hints.h"
#include "codec/internal/json_shape.h"
#include "common/file.h"
#include "common/json.h"
#include "common/plural.h"
#include "common/status_macros.h"
#include "common/tmp_files.h"
#include "common/usage_error.h"

namespace deltaserve::codec {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts need byte swaps");

namespace fs = std::filesystem;

using nlohmann::json;

// The upstream reference implementation refuses headers above 100 MB; so do we, before
// allocating anything for them.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr char kMetadataKey[] = "__metadata__";
constexpr char kIndexSuffix[] = ".safetensors.index.json";
constexpr char kDefaultIndexName[] = "model.safetensors.index.json";
constexpr char kDefaultSingleName[] = "model.safetensors";
constexpr char kIndexTotalSizeKey[] = "total_size";

// One tensor of one file, its bytes inside that file's mapping.
struct FileTensor {
  TensorInfo info;
  absl::Span<const uint8_t> data;
  uint64_t begin = 0;  // data_offsets, relative to the data buffer
  uint64_t end = 0;
};

// A validated .safetensors file: its mapping and what its header describes.
struct ParsedFile {
  std::unique_ptr<common::MappedFile> file;
  std::vector<FileTensor> tensors;
  std::map<std::string, std::string> metadata;
};

absl::Status Invalid(const std::string& path, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", msg));
}

// Invalid(path, msg) followed by NotSafetensorsHint's hint: when that names the format
// (a PyTorch checkpoint, GGUF, ...), the user gave a file of another kind, a usage error
// (common/usage_error.h); without it the file may be a damaged safetensors file.
absl::Status NotSafetensors(const std::string& path, absl::string_view msg,
                            absl::Span<const uint8_t> bytes) {
  const std::string hint = internal::NotSafetensorsHint(path, bytes);
  const absl::Status status = Invalid(path, absl::StrCat(msg, hint));
  return hint.empty() ? status : common::MarkUsageError(status);
}

// DTypeName as an absl::string_view (Debian's Abseil does not alias std::string_view).
absl::string_view Name(DType dtype) {
  std::string_view n = DTypeName(dtype);
  return absl::string_view(n.data(), n.size());
}

std::string TensorWhat(const std::string& path, absl::string_view name) {
  return absl::StrCat(path, ": tensor '", name, "'");
}

// Validates one header entry {dtype, shape, data_offsets} against a data buffer of
// `buffer.size()` bytes.
absl::StatusOr<FileTensor> ParseEntry(const std::string& path, const std::string& name,
                                      const json& entry, absl::Span<const uint8_t> buffer) {
  const std::string what = TensorWhat(path, name);
  if (name.empty()) return Invalid(path, "a tensor has an empty name");
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": entry is not a JSON object"));
  }
  auto field = [&](const char* key) -> absl::StatusOr<const json*> {
    auto it = entry.find(key);
    if (it == entry.end()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": missing '", key, "'"));
    }
    return &*it;
  };
  FileTensor t;
  t.info.name = name;

  DS_ASSIGN_OR_RETURN(const json* dtype_json, field("dtype"));
  DS_ASSIGN_OR_RETURN(std::string dtype_name,
                      common::JsonToString(*dtype_json, absl::StrCat(what, " dtype")));
  absl::StatusOr<DType> dtype = ParseDType(dtype_name);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", dtype.status().message()));
  }
  t.info.dtype = *dtype;

  DS_ASSIGN_OR_RETURN(const json* shape_json, field("shape"));
  DS_ASSIGN_OR_RETURN(t.info.shape,
                      internal::JsonToShape(*shape_json, absl::StrCat(what, " shape")));

  DS_ASSIGN_OR_RETURN(const json* offsets, field("data_offsets"));
  if (!offsets->is_array() || offsets->size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": data_offsets must be an array [begin, end]"));
  }
  const std::string offsets_what = absl::StrCat(what, " data_offsets");
  DS_ASSIGN_OR_RETURN(int64_t begin, common::JsonToNonNegativeInt((*offsets)[0], offsets_what));
  DS_ASSIGN_OR_RETURN(int64_t end, common::JsonToNonNegativeInt((*offsets)[1], offsets_what));
  if (begin > end) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": data_offsets [", begin, ", ", end, "] has begin > end"));
  }
  if (static_cast<uint64_t>(end) > buffer.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": data_offsets [", begin, ", ", end,
                     "] outside the data buffer of ", buffer.size(), " bytes"));
  }
  // JsonToShape checked that the element count fits int64; the byte count may not.
  const int64_t n = NumElements(t.info.shape);
  const int64_t elem = static_cast<int64_t>(DTypeSize(t.info.dtype));
  if (n > std::numeric_limits<int64_t>::max() / elem || n * elem != end - begin) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": data_offsets span ", end - begin, " bytes but shape ",
        ShapeString(t.info.shape), " x ", Name(t.info.dtype), " needs ",
        n > std::numeric_limits<int64_t>::max() / elem ? std::string("more than 2^63")
                                                        : absl::StrCat(n * elem)));
  }
  t.begin = static_cast<uint64_t>(begin);
  t.end = static_cast<uint64_t>(end);
  t.data = buffer.subspan(t.begin, t.end - t.begin);
  return t;
}

absl::StatusOr<std::map<std::string, std::string>> ParseFileMetadata(const std::string& path,
                                                                     const json& j) {
  if (!j.is_object()) return Invalid(path, "__metadata__ is not a JSON object");
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return Invalid(path, absl::StrCat("__metadata__ value of '", key, "' is not a string"));
    }
    out[key] = value.get<std::string>();
  }
  return out;
}

// Maps `path` and validates everything its header claims before any byte is used.
absl::StatusOr<ParsedFile> ParseSafetensorsFile(const std::string& path,
                                             common::MappedFile::Residency residency) {
  ParsedFile parsed;
  DS_ASSIGN_OR_RETURN(parsed.file, common::MappedFile::Open(path, residency));
  absl::Span<const uint8_t> bytes = parsed.file->bytes();
  if (bytes.size() < 8) {
    return Invalid(path, absl::StrCat("file of ", common::Counted(bytes.size(), "byte"),
                                      " is too short for the 8-byte header length"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes) {
    return NotSafetensors(
        path,
        absl::StrCat("header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes,
                     " bytes (the file is ", bytes.size(), " bytes)"),
        bytes);
  }
  if (header_len > bytes.size() - 8) {
    return NotSafetensors(path,
                          absl::StrCat("header length ", header_len, " runs past the end of the ",
                                       bytes.size(), "-byte file"),
                          bytes);
  }
  std::string_view header_text(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  DS_ASSIGN_OR_RETURN(json header, common::ParseJson(header_text, absl::StrCat(path, ": header"),
                                                     "tensor name"));
  if (!header.is_object()) return Invalid(path, "header is not a JSON object");
  absl::Span<const uint8_t> buffer = bytes.subspan(8 + header_len);

  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      DS_ASSIGN_OR_RETURN(parsed.metadata, ParseFileMetadata(path, entry));
      continue;
    }
    DS_ASSIGN_OR_RETURN(FileTensor t, ParseEntry(path, name, entry, buffer));
    parsed.tensors.push_back(std::move(t));
  }

  // Overlaps: sort the non-empty ranges by start; each must begin at or after the end
  // of the previous one. (Gaps are tolerated; empty tensors overlap nothing.)
  std::vector<const FileTensor*> ranges;
  for (const FileTensor& t : parsed.tensors) {
    if (t.end > t.begin) ranges.push_back(&t);
  }
  std::sort(ranges.begin(), ranges.end(), [](const FileTensor* a, const FileTensor* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i]->begin < ranges[i - 1]->end) {
      return Invalid(path, absl::StrCat("tensor '", ranges[i]->info.name, "' [", ranges[i]->begin,
                                        ", ", ranges[i]->end, ") overlaps tensor '",
                                        ranges[i - 1]->info.name, "' [", ranges[i - 1]->begin,
                                        ", ", ranges[i - 1]->end, ")"));
    }
  }
  return parsed;
}

class SafetensorsModel final : public ModelReader {
 public:
  const std::vector<TensorInfo>& tensors() const override { return infos_; }

  absl::StatusOr<TensorView> Get(const std::string& name) const override {
    auto it = index_.find(name);
    if (it == index_.end()) {
      return absl::NotFoundError(absl::StrCat(source_, ": no tensor named '", name, "'"));
    }
    return TensorView{infos_[it->second], data_[it->second]};
  }

  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  uint64_t total_bytes() const override { return total_bytes_; }
  std::vector<const common::MappedFile*> files() const override {
    std::vector<const common::MappedFile*> out;
    for (const auto& f : files_) out.push_back(f.get());
    return out;
  }

  // Takes ownership of a parsed file's mapping and tensors. InvalidArgument if a tensor
  // name was already added from another file.
  absl::Status AddFile(ParsedFile parsed) {
    for (FileTensor& t : parsed.tensors) {
      auto [it, inserted] = owner_.emplace(t.info.name, parsed.file->path());
      if (!inserted) {
        return Invalid(parsed.file->path(),
                       absl::StrCat("tensor '", t.info.name, "' is also in ", it->second));
      }
      pending_.push_back(std::move(t));
    }
    files_.push_back(std::move(parsed.file));
    return absl::OkStatus();
  }

  // Sorts the tensors by name and builds the lookup index.
  void Finish(std::string source, std::map<std::string, std::string> metadata) {
    source_ = std::move(source);
    metadata_ = std::move(metadata);
    std::sort(pending_.begin(), pending_.end(), [](const FileTensor& a, const FileTensor& b) {
      return a.info.name < b.info.name;
    });
    for (FileTensor& t : pending_) {
      index_.emplace(t.info.name, infos_.size());
      total_bytes_ += t.data.size();
      data_.push_back(t.data);
      infos_.push_back(std::move(t.info));
    }
    pending_.clear();
    owner_.clear();
  }

 private:
  std::string source_;  // path given to Open, for messages
  std::vector<std::unique_ptr<common::MappedFile>> files_;
  std::vector<FileTensor> pending_;                     // until Finish
  std::unordered_map<std::string, std::string> owner_;  // name -> file, until Finish
  std::vector<TensorInfo> infos_;                       // sorted by name
  std::vector<absl::Span<const uint8_t>> data_;         // parallel to infos_
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  uint64_t total_bytes_ = 0;
};

absl::StatusOr<std::unique_ptr<ModelReader>> OpenSingle(const std::string& path,
                                                        common::MappedFile::Residency residency) {
  DS_ASSIGN_OR_RETURN(ParsedFile parsed, ParseSafetensorsFile(path, residency));
  std::map<std::string, std::string> metadata = parsed.metadata;
  auto model = std::make_unique<SafetensorsModel>();
  DS_RETURN_IF_ERROR(model->AddFile(std::move(parsed)));
  model->Finish(path, std::move(metadata));
  return model;
}

// Shard names in an index are relative to its directory and may not climb out of it
// (ResolveContainedPath's policy: no "..", no NUL, symlinks only within the directory).
// Returns the path to open.
absl::StatusOr<std::string> ResolveShard(const std::string& index_path, const std::string& tensor,
                                         const std::string& shard) {
  absl::StatusOr<std::string> resolved =
      common::ResolveContainedPath(fs::path(index_path).parent_path().string(), shard);
  if (absl::IsNotFound(resolved.status())) {
    return absl::NotFoundError(absl::StrCat(index_path, ": shard '", shard, "' (holding tensor '",
                                            tensor,
                                            "') is missing: ", resolved.status().message()));
  }
  if (!resolved.ok()) {
    return common::Annotate(resolved.status(),
                            absl::StrCat(index_path, ": weight_map entry for tensor '", tensor,
                                         "' has a bad shard path"));
  }
  return resolved;
}

absl::StatusOr<std::unique_ptr<ModelReader>> OpenIndex(const std::string& index_path,
                                                       common::MappedFile::Residency residency) {
  DS_ASSIGN_OR_RETURN(std::string text, common::ReadFileToString(index_path));
  DS_ASSIGN_OR_RETURN(json index, common::ParseJson(text, index_path));
  if (!index.is_object()) return Invalid(index_path, "index is not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) {
    // A TF.js graph model's model.json is JSON too: say how to read it.
    const bool tfjs = index.contains("modelTopology") || index.contains("weightsManifest");
    return Invalid(index_path, tfjs ? "a TF.js model (modelTopology/weightsManifest), not a "
                                      "safetensors index: convert it first with deltactl "
                                      "convert --in MODEL.json --out MODEL.safetensors"
                                    : "missing 'weight_map' object");
  }
  // Index metadata: strings as they are, other scalars as their JSON text; nested
  // objects and arrays are dropped. "total_size" is the index's own figure of the
  // shards' tensor bytes (Hugging Face writes it; so does WriteShardedSafetensors), not
  // model metadata: it is dropped, so that a written directory reads back the metadata
  // it was written with.
  std::map<std::string, std::string> metadata;
  if (auto md = index.find("metadata"); md != index.end() && md->is_object()) {
    for (const auto& [key, value] : md->items()) {
      if (key == kIndexTotalSizeKey) continue;
      if (value.is_string()) {
        metadata[key] = value.get<std::string>();
      } else if (value.is_primitive() && !value.is_null()) {
        metadata[key] = value.dump();
      }
    }
  }
  std::map<std::string, std::string> shard_of;              // tensor -> shard
  std::map<std::string, std::set<std::string>> by_shard;    // shard -> tensors
  for (const auto& [tensor, shard_json] : wm->items()) {
    DS_ASSIGN_OR_RETURN(std::string shard,
                        common::JsonToString(shard_json, TensorWhat(index_path, tensor)));
    if (!common::IsContainedRelativePath(shard) || shard.find('\0') != std::string::npos) {
      DS_RETURN_IF_ERROR(ResolveShard(index_path, tensor, shard).status());
    }
    shard_of[tensor] = shard;
    by_shard[shard].insert(tensor);
  }

  const fs::path dir = fs::path(index_path).parent_path();
  auto model = std::make_unique<SafetensorsModel>();
  bool first = true;
  for (const auto& [shard, listed] : by_shard) {
    const std::string shard_path = (dir / shard).string();
    DS_ASSIGN_OR_RETURN(const std::string resolved,
                        ResolveShard(index_path, *listed.begin(), shard));
    absl::StatusOr<ParsedFile> parsed = ParseSafetensorsFile(resolved, residency);
    if (!parsed.ok()) {
      if (absl::IsNotFound(parsed.status())) {
        return absl::NotFoundError(absl::StrCat(index_path, ": shard '", shard,
                                                "' (holding tensor '", *listed.begin(),
                                                "') is missing: ", parsed.status().message()));
      }
      return parsed.status();
    }
    std::set<std::string> present;
    for (const FileTensor& t : parsed->tensors) {
      auto it = shard_of.find(t.info.name);
      if (it == shard_of.end()) {
        return Invalid(shard_path, absl::StrCat("tensor '", t.info.name,
                                                "' is not in the weight_map of ", index_path));
      }
      if (it->second != shard) {
        return Invalid(shard_path, absl::StrCat("tensor '", t.info.name, "' is also in shard '",
                                                it->second, "' (", index_path, " maps it there)"));
      }
      present.insert(t.info.name);
    }
    for (const std::string& tensor : listed) {
      if (!present.count(tensor)) {
        return Invalid(shard_path, absl::StrCat("tensor '", tensor, "' listed in ", index_path,
                                                " is missing from this shard"));
      }
    }
    if (first) {
      // The index's own metadata wins over the first shard's.
      for (const auto& [k, v] : parsed->metadata) metadata.emplace(k, v);
      first = false;
    }
    DS_RETURN_IF_ERROR(model->AddFile(*std::move(parsed)));
  }
  model->Finish(index_path, std::move(metadata));
  return model;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

absl::StatusOr<std::unique_ptr<ModelReader>> OpenDirectory(const std::string& dir,
                                                           common::MappedFile::Residency residency) {
  // error_code overloads throughout: std::filesystem throws otherwise.
  std::error_code ec;
  if (fs::path p = fs::path(dir) / kDefaultIndexName; fs::is_regular_file(p, ec)) {
    return OpenIndex(p.string(), residency);
  }
  std::vector<std::string> files, indexes;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (EndsWith(name, kIndexSuffix)) indexes.push_back(it->path().string());
    if (EndsWith(name, ".safetensors")) files.push_back(it->path().string());
  }
  if (ec) return common::ErrnoStatus(ec.value(), absl::StrCat("cannot list ", dir));
  std::sort(indexes.begin(), indexes.end());
  std::sort(files.begin(), files.end());
  if (indexes.size() == 1) return OpenIndex(indexes[0], residency);
  if (indexes.empty() && files.size() == 1) return OpenSingle(files[0], residency);
  if (indexes.empty() && files.empty()) {
    std::vector<std::string> names;
    for (fs::directory_iterator i(dir, ec); !ec && i != end; i.increment(ec)) {
      names.push_back(i->path().filename().string());
    }
    std::sort(names.begin(), names.end());
    // The directory given holds no model: a usage error (common/usage_error.h).
    return common::MarkUsageError(absl::NotFoundError(absl::StrCat(
        dir, ": no .safetensors file or index", internal::NoSafetensorsInDirHint(dir, names))));
  }
  return common::MarkUsageError(
      Invalid(dir, absl::StrCat("ambiguous: ", indexes.size(), " index files and ", files.size(),
                                " .safetensors files; pass one of them")));
}

// ---------------------------------------------------------------------------- writer

// Checks names (non-empty, unique, not "__metadata__") and shapes.
absl::Status ValidateInfos(const std::string& path, const std::vector<TensorInfo>& infos) {
  std::set<std::string_view> names;
  for (const TensorInfo& info : infos) {
    const std::string what = TensorWhat(path, info.name);
    if (info.name.empty() || info.name == kMetadataKey) {
      return Invalid(path, absl::StrCat("bad tensor name '", info.name, "'"));
    }
    if (!names.insert(info.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": duplicate tensor name"));
    }
    absl::StatusOr<int64_t> n = CheckedNumElements(info.shape);
    if (!n.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", n.status().message()));
    }
    if (*n > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(DTypeSize(info.dtype))) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": more than 2^63 bytes"));
    }
  }
  return absl::OkStatus();
}

// REQUIRES: `info` passed ValidateInfos.
absl::Status CheckDataSize(const std::string& path, const TensorInfo& info, size_t size) {
  if (size != info.num_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat(TensorWhat(path, info.name), ": has ", size, " bytes but shape ",
                     ShapeString(info.shape), " x ", Name(info.dtype), " needs ",
                     info.num_bytes()));
  }
  return absl::OkStatus();
}

absl::Status ValidateForWrite(const std::string& path, const std::vector<TensorView>& tensors) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const TensorView& t : tensors) infos.push_back(t.info);
  DS_RETURN_IF_ERROR(ValidateInfos(path, infos));
  for (const TensorView& t : tensors) DS_RETURN_IF_ERROR(CheckDataSize(path, t.info, t.data.size()));
  return absl::OkStatus();
}

// The 8-byte length and the JSON header of a file holding `infos` back to back.
absl::StatusOr<std::string> BuildHeader(const std::string& path,
                                        const std::vector<TensorInfo>& infos,
                                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) {
    json md = json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header[kMetadataKey] = std::move(md);
  }
  uint64_t offset = 0;
  for (const TensorInfo& info : infos) {
    const uint64_t end = offset + info.num_bytes();
    header[info.name] = {{"dtype", std::string(Name(info.dtype))},
                         {"shape", info.shape},
                         {"data_offsets", {offset, end}}};
    offset = end;
  }
  DS_ASSIGN_OR_RETURN(std::string text, common::DumpJson(header, path));
  // Pad with spaces so the data buffer starts 8-byte aligned (the spec's recommendation).
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &header_len, 8);
  return out + text;
}

class StreamingWriter final : public SafetensorsWriter {
 public:
  StreamingWriter(std::unique_ptr<common::AtomicFileWriter> file, std::vector<TensorInfo> infos)
      : file_(std::move(file)), infos_(std::move(infos)) {}

  absl::Status Append(absl::Span<const uint8_t> data) override {
    if (next_ == infos_.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(file_->path(), ": all ", infos_.size(), " tensors already written"));
    }
    DS_RETURN_IF_ERROR(CheckDataSize(file_->path(), infos_[next_], data.size()));
    DS_RETURN_IF_ERROR(file_->Append(data));
    ++next_;
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (next_ != infos_.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(TensorWhat(file_->path(), infos_[next_].name), ": not written (", next_,
                       " of ", infos_.size(), " tensors appended)"));
    }
    return file_->Commit();
  }

 private:
  std::unique_ptr<common::AtomicFileWriter> file_;
  std::vector<TensorInfo> infos_;
  size_t next_ = 0;  // index of the next tensor to append
};

class DirectWriter final : public DirectSafetensorsWriter {
 public:
  DirectWriter(std::unique_ptr<common::DirectFileWriter> file, std::vector<TensorInfo> infos)
      : file_(std::move(file)), infos_(std::move(infos)) {}

  absl::StatusOr<absl::Span<uint8_t>> Next() override {
    if (next_ == infos_.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(file_->path(), ": all ", infos_.size(), " tensors already handed out"));
    }
    return file_->Reserve(infos_[next_++].num_bytes());
  }

  absl::Status Commit() override {
    if (next_ != infos_.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(TensorWhat(file_->path(), infos_[next_].name), ": not written (", next_,
                       " of ", infos_.size(), " tensors handed out)"));
    }
    return file_->Commit();
  }

 private:
  std::unique_ptr<common::DirectFileWriter> file_;
  std::vector<TensorInfo> infos_;
  size_t next_ = 0;  // index of the next tensor to hand out
};

// Writes one file holding `tensors` (already validated) in the given order.
absl::Status WriteFile(const std::string& path, const std::vector<const TensorView*>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const TensorView* t : tensors) infos.push_back(t->info);
  DS_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                      SafetensorsWriter::Open(path, std::move(infos), metadata));
  for (const TensorView* t : tensors) DS_RETURN_IF_ERROR(writer->Append(t->data));
  return writer->Commit();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelReader>> ModelReader::Open(const std::string& path,
                                                              common::MappedFile::Residency residency) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  }
  if (ec) return common::ErrnoStatus(ec.value(), absl::StrCat("cannot stat ", path));
  if (st.type() == fs::file_type::directory) return OpenDirectory(path, residency);
  if (EndsWith(path, ".json")) return OpenIndex(path, residency);
  return OpenSingle(path, residency);
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Open(
    const std::string& path, std::vector<TensorInfo> infos,
    const std::map<std::string, std::string>& metadata) {
  DS_RETURN_IF_ERROR(ValidateInfos(path, infos));
  DS_ASSIGN_OR_RETURN(std::string header, BuildHeader(path, infos, metadata));
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::AtomicFileWriter> file,
                      common::AtomicFileWriter::Open(path));
  DS_RETURN_IF_ERROR(file->Append(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(header.data()), header.size())));
  return std::make_unique<StreamingWriter>(std::move(file), std::move(infos));
}

absl::StatusOr<std::unique_ptr<DirectSafetensorsWriter>> DirectSafetensorsWriter::Open(
    const std::string& path, std::vector<TensorInfo> infos,
    const std::map<std::string, std::string>& metadata) {
  DS_RETURN_IF_ERROR(ValidateInfos(path, infos));
  DS_ASSIGN_OR_RETURN(std::string header, BuildHeader(path, infos, metadata));
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::DirectFileWriter> file,
                      common::DirectFileWriter::Open(path));
  DS_RETURN_IF_ERROR(file->Append(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(header.data()), header.size())));
  return std::make_unique<DirectWriter>(std::move(file), std::move(infos));
}

absl::StatusOr<std::string> SafetensorsHeader(const std::string& path,
                                              const std::vector<TensorInfo>& infos,
                                              const std::map<std::string, std::string>& metadata) {
  DS_RETURN_IF_ERROR(ValidateInfos(path, infos));
  return BuildHeader(path, infos, metadata);
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  DS_RETURN_IF_ERROR(ValidateForWrite(path, tensors));
  std::vector<const TensorView*> all;
  all.reserve(tensors.size());
  for (const TensorView& t : tensors) all.push_back(&t);
  return WriteFile(path, all, metadata);
}

namespace {

// True for a shard name as WriteShardedSafetensors (and Hugging Face) writes it:
// model-NNNNN-of-NNNNN.safetensors, 5 digits each.
bool IsShardName(const std::string& name) {
  constexpr std::string_view kPrefix = "model-", kMid = "-of-", kSuffix = ".safetensors";
  if (name.size() != kPrefix.size() + 5 + kMid.size() + 5 + kSuffix.size()) return false;
  if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix)) return false;
  if (name.compare(kPrefix.size() + 5, kMid.size(), kMid) != 0) return false;
  for (size_t at : {kPrefix.size(), kPrefix.size() + 5 + kMid.size()}) {
    for (size_t i = at; i < at + 5; ++i) {
      if (name[i] < '0' || name[i] > '9') return false;
    }
  }
  return true;
}

}  // namespace

absl::Status RemoveReplacedWeightFiles(const std::string& dir, const std::set<std::string>& keep) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool replaced = (IsShardName(name) && keep.count(name) == 0) ||
                          (name == kDefaultSingleName && keep.count(name) == 0);
    if (!replaced) continue;
    if (!fs::remove(e.path(), ec) && ec) break;
  }
  if (ec) {
    return common::ErrnoStatus(ec.value(),
                               absl::StrCat("cannot remove the earlier weight files of ", dir));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::set<std::string>> StageShardedSafetensors(
    common::StagedFiles* staged, const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes) {
  const std::string& dir = staged->dir();
  if (max_shard_bytes == 0) return Invalid(dir, "max_shard_bytes must be positive");
  DS_RETURN_IF_ERROR(ValidateForWrite(dir, tensors));
  // Greedy packing in the given order; a tensor larger than the limit gets a shard alone.
  std::vector<std::vector<const TensorView*>> shards(1);
  uint64_t bytes = 0;
  uint64_t total_size = 0;
  for (const TensorView& t : tensors) {
    total_size += t.data.size();
    if (!shards.back().empty() && bytes + t.data.size() > max_shard_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(&t);
    bytes += t.data.size();
  }
  json weight_map = json::object();
  std::set<std::string> written;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    DS_RETURN_IF_ERROR(WriteFile(staged->Add(name), shards[i], metadata));
    for (const TensorView* t : shards[i]) weight_map[t->info.name] = name;
    written.insert(name);
  }
  json md = json::object();
  for (const auto& [k, v] : metadata) md[k] = v;
  md[kIndexTotalSizeKey] = total_size;
  json index = {{"metadata", std::move(md)}, {"weight_map", std::move(weight_map)}};
  const std::string index_path = (fs::path(dir) / kDefaultIndexName).string();
  DS_ASSIGN_OR_RETURN(std::string text, common::DumpJson(index, index_path));
  DS_RETURN_IF_ERROR(common::WriteFileAtomically(
      staged->Add(kDefaultIndexName),
      {absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size())}));
  return written;
}

absl::Status WriteShardedSafetensors(const std::string& dir, const std::vector<TensorView>& tensors,
                                     const std::map<std::string, std::string>& metadata,
                                     uint64_t max_shard_bytes) {
  if (max_shard_bytes == 0) return Invalid(dir, "max_shard_bytes must be positive");
  DS_RETURN_IF_ERROR(ValidateForWrite(dir, tensors));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return common::ErrnoStatus(ec.value(), absl::StrCat("cannot create directory ", dir));
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::StagedFiles> staged, common::StagedFiles::Create(dir));
  DS_ASSIGN_OR_RETURN(std::set<std::string> written,
                      StageShardedSafetensors(staged.get(), tensors, metadata, max_shard_bytes));
  DS_RETURN_IF_ERROR(staged->Publish());
  return RemoveReplacedWeightFiles(dir, written);
}

}  // namespace deltaserve::codec

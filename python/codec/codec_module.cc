// deltaserve._codec: the project's C++ codec (codec/) for Python workers that decode a
// task's delta locally (deltaserve/decode.py) instead of streaming merged weights.
//
//   Base.open(path)            base model from safetensors (mmap, codec::ModelReader)
//   Base.from_buffers(items)   base model copied into memory owned by the Base:
//                              items = [(name, "F32"|"F16"|"BF16", shape, buffer)]
//   Base.hash()                hex XXH3-128 (codec::ComputeBaseHash), computed once
//   Container(data)            parsed delta container (codec::ContainerReader) over a
//                              bytes-like object it keeps alive
//   Container.check_base(base) every record fits the base (codec::CheckContainerFitsBase)
//   merge(base, container, i, out_dtype, out, threads)
//                              record i merged into `out` (a writable, C-contiguous
//                              buffer of exactly MergedBytes bytes) with
//                              codec::MergeTensorPart over `threads` threads: the same
//                              bytes as codec::MergeTensor, hence as StreamWeights
//   merge_all(base, container, jobs, out_dtype, threads)
//                              every job (index, out) of `jobs` merged as merge() does,
//                              all of them over one pool of `threads` threads: small
//                              tensors run side by side, large ones split in parts
//                              (one GIL release for the whole model)
//   merge_records(base, metadata, items, out_dtype, threads)
//                              as merge_all for records of a container still
//                              arriving: items = [(record bytes, expected name, out)],
//                              metadata = the container header's (for ties)
//
// Errors raise _codec.CodecError(code, message): code is the absl/gRPC status number.
// The GIL is released while hashing and merging; Base and Container are immutable
// after construction and may be shared by threads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "codec/container.h"
#include "codec/delta_codec.h"
#include "codec/record_checks.h"
#include "codec/safetensors.h"
#include "codec/tensor.h"
#include "python/codec/status_error.h"

namespace py = pybind11;

namespace deltaserve::python {
namespace {

// A model whose tensors are copies held in memory (the worker's pristine base).
class BufferModel final : public codec::ModelReader {
 public:
  explicit BufferModel(std::vector<codec::OwnedTensor> tensors) : owned_(std::move(tensors)) {
    std::sort(owned_.begin(), owned_.end(),
              [](const auto& a, const auto& b) { return a.info.name < b.info.name; });
    for (const auto& t : owned_) {
      infos_.push_back(t.info);
      total_ += t.data.size();
    }
  }
  const std::vector<codec::TensorInfo>& tensors() const override { return infos_; }
  absl::StatusOr<codec::TensorView> Get(const std::string& name) const override {
    auto it = std::lower_bound(owned_.begin(), owned_.end(), name,
                               [](const auto& t, const std::string& n) { return t.info.name < n; });
    if (it == owned_.end() || it->info.name != name) {
      return absl::NotFoundError(absl::StrCat("base has no tensor '", name, "'"));
    }
    return it->view();
  }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  uint64_t total_bytes() const override { return total_; }

 private:
  std::vector<codec::OwnedTensor> owned_;
  std::vector<codec::TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
  uint64_t total_ = 0;
};

class Base {
 public:
  explicit Base(std::unique_ptr<codec::ModelReader> reader) : reader_(std::move(reader)) {}

  static std::shared_ptr<Base> Open(const std::string& path) {
    return std::make_shared<Base>(ValueOrThrow(codec::ModelReader::Open(path)));
  }

  static std::shared_ptr<Base> FromBuffers(const py::list& items) {
    std::vector<codec::OwnedTensor> tensors;
    for (const py::handle item : items) {
      auto t = item.cast<py::tuple>();
      codec::OwnedTensor owned;
      owned.info.name = t[0].cast<std::string>();
      owned.info.dtype = ValueOrThrow(codec::ParseDType(t[1].cast<std::string>()));
      owned.info.shape = t[2].cast<std::vector<int64_t>>();
      const int64_t n = ValueOrThrow(codec::CheckedNumElements(owned.info.shape));
      py::buffer_info buf = t[3].cast<py::buffer>().request();
      const size_t bytes = static_cast<size_t>(buf.size * buf.itemsize);
      if (n < 0 || bytes != static_cast<size_t>(n) * codec::DTypeSize(owned.info.dtype)) {
        ThrowIfError(absl::InvalidArgumentError(
            absl::StrCat("base tensor '", owned.info.name, "': ", bytes, " bytes for shape ",
                         codec::ShapeString(owned.info.shape), " ", t[1].cast<std::string>())));
      }
      const auto* p = static_cast<const uint8_t*>(buf.ptr);
      owned.data.assign(p, p + bytes);
      tensors.push_back(std::move(owned));
    }
    return std::make_shared<Base>(std::make_unique<BufferModel>(std::move(tensors)));
  }

  // Hashing reads every byte of the base: done once, without the GIL (taken before the
  // mutex, so a thread waiting for the mutex never holds the GIL).
  std::string Hash() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu_);
    if (hash_.empty()) hash_ = codec::BaseHashHex(codec::ComputeBaseHash(*reader_));
    return hash_;
  }

  const codec::ModelReader& reader() const { return *reader_; }

 private:
  std::unique_ptr<codec::ModelReader> reader_;
  std::mutex mu_;
  std::string hash_;  // guarded by mu_
};

class Container {
 public:
  explicit Container(py::buffer data) : owner_(data) {
    py::buffer_info buf = data.request();
    bytes_ = absl::MakeConstSpan(static_cast<const uint8_t*>(buf.ptr),
                                 static_cast<size_t>(buf.size * buf.itemsize));
    reader_ = ValueOrThrow(codec::ContainerReader::Parse(bytes_));
  }

  std::string BaseHash() const { return codec::BaseHashHex(reader_.header().base_hash); }
  size_t size() const { return reader_.num_records(); }
  std::map<std::string, std::string> Metadata() const { return reader_.header().metadata; }

  // [(name, recorded dtype name, shape, index)] in container order (each record verified).
  py::list Records() const {
    py::list out;
    for (size_t i = 0; i < reader_.num_records(); ++i) {
      codec::TensorRecord r = ValueOrThrow(reader_.record(i));
      out.append(py::make_tuple(r.info.name, std::string(codec::DTypeName(r.info.dtype)),
                                r.info.shape, i));
    }
    return out;
  }

  // Raises CodecError unless every record fits `base` (codec::CheckContainerFitsBase:
  // the base tensor each names, its dtype and shape, lossy payload headers).
  void CheckBase(const Base& base) const {
    absl::Status s;
    {
      py::gil_scoped_release release;
      s = codec::CheckContainerFitsBase(reader_, base.reader());
    }
    ThrowIfError(s);
  }

  const codec::ContainerReader& reader() const { return reader_; }

 private:
  py::object owner_;  // keeps the bytes alive
  absl::Span<const uint8_t> bytes_;
  codec::ContainerReader reader_;
};

// Weights per part when a tensor is split across threads (as the server's pool does).
constexpr int64_t kMinPartWeights = int64_t{1} << 22;

// One tensor to merge: its record and the caller's output buffer, checked.
struct MergeJob {
  codec::TensorRecord record;
  codec::DType out_dtype;
  absl::Span<uint8_t> out;
  int parts = 1;
  int64_t saturated = 0;  // values saturated to out_dtype's range (codec::MergeTensor)
};

// Checks `record` and the writable buffer `out` (exactly MergedBytes bytes).
// REQUIRES: the GIL held.
MergeJob MakeJob(codec::TensorRecord record, const std::optional<std::string>& out_dtype_name,
                 py::buffer out) {
  py::buffer_info buf = out.request(/*writable=*/true);
  if (buf.readonly) ThrowIfError(absl::InvalidArgumentError("output buffer is read-only"));
  MergeJob job;
  job.record = std::move(record);
  job.out_dtype = job.record.info.dtype;
  if (out_dtype_name) job.out_dtype = ValueOrThrow(codec::ParseDType(*out_dtype_name));
  const size_t bytes = static_cast<size_t>(buf.size * buf.itemsize);
  if (bytes != codec::MergedBytes(job.record, job.out_dtype)) {
    ThrowIfError(absl::InvalidArgumentError(absl::StrCat(
        "tensor '", job.record.info.name, "': output buffer holds ", bytes,
        " bytes, the merged tensor ", codec::MergedBytes(job.record, job.out_dtype))));
  }
  job.out = absl::Span<uint8_t>(static_cast<uint8_t*>(buf.ptr), bytes);
  return job;
}

// MakeJob of record `index` of `container` (its checksum verified).
MergeJob MakeJob(const Container& container, size_t index,
                 const std::optional<std::string>& out_dtype_name, py::buffer out) {
  if (index >= container.size()) {
    ThrowIfError(absl::OutOfRangeError(
        absl::StrCat("record ", index, " of a container of ", container.size())));
  }
  return MakeJob(ValueOrThrow(container.reader().record(index)), out_dtype_name, out);
}

// Merges every job over `threads` threads (the calling one included): the work items
// are (job, part) pairs taken in order from a shared counter, so that small tensors
// run side by side and a large one is split (codec::MergeTensorParts, as the server's
// pool splits it). Each part writes its own rows of the output: the bytes are those of
// codec::MergeTensor. Returns the error of the first failing job in `jobs` order.
// REQUIRES: the GIL released (the buffers are kept alive by the caller).
absl::Status MergeJobs(const codec::ModelReader* reader, std::vector<MergeJob>& jobs,
                       int threads) {
  threads = std::max(1, threads);
  std::vector<std::pair<size_t, int>> items;  // (job, part)
  for (size_t j = 0; j < jobs.size(); ++j) {
    jobs[j].parts = std::max(1, codec::MergeTensorParts(jobs[j].record, kMinPartWeights,
                                                        4 * threads));
    for (int p = 0; p < jobs[j].parts; ++p) items.emplace_back(j, p);
  }
  std::vector<absl::Status> status(jobs.size());
  std::vector<std::atomic<int64_t>> saturated(jobs.size());
  std::vector<std::mutex> mu(std::min<size_t>(jobs.size(), 64));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < items.size();) {
      auto [j, part] = items[i];
      MergeJob& job = jobs[j];
      int64_t n = 0;
      absl::Status one =
          job.parts == 1
              ? codec::MergeTensor(reader, job.record, job.out_dtype, job.out, &n)
              : codec::MergeTensorPart(reader, job.record, job.out_dtype, part, job.parts,
                                       job.out, nullptr, &n);
      saturated[j] += n;
      if (!one.ok()) {
        std::lock_guard<std::mutex> lock(mu[j % mu.size()]);
        if (status[j].ok()) status[j] = one;
      }
    }
  };
  const size_t n = std::min<size_t>(static_cast<size_t>(threads), items.size());
  std::vector<std::thread> pool;
  for (size_t i = 1; i < n; ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  for (size_t j = 0; j < jobs.size(); ++j) jobs[j].saturated = saturated[j].load();
  for (const absl::Status& s : status) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// Returns the number of values saturated to the output dtype's range.
int64_t Merge(const Base& base, const Container& container, size_t index,
              std::optional<std::string> out_dtype_name, py::buffer out, int threads) {
  std::vector<MergeJob> jobs;
  jobs.push_back(MakeJob(container, index, out_dtype_name, out));
  absl::Status status;
  {
    py::gil_scoped_release release;
    status = MergeJobs(&base.reader(), jobs, threads);
  }
  ThrowIfError(status);
  return jobs[0].saturated;
}

// MergeJobs without the GIL (the caller keeps the buffers referenced); returns
// [(name, values saturated to the output dtype's range)] for the tensors with any.
py::list RunJobs(const Base& base, std::vector<MergeJob>& jobs, int threads) {
  absl::Status status;
  {
    py::gil_scoped_release release;
    status = MergeJobs(&base.reader(), jobs, threads);
  }
  ThrowIfError(status);
  py::list saturated;
  for (const MergeJob& job : jobs) {
    if (job.saturated > 0) saturated.append(py::make_tuple(job.record.info.name, job.saturated));
  }
  return saturated;
}

// jobs: [(index, out buffer)]. Every buffer is checked before any is written. Returns
// [(index, values saturated to the output dtype's range)] for the tensors with any.
py::list MergeAll(const Base& base, const Container& container, const py::list& items,
              std::optional<std::string> out_dtype_name, int threads) {
  std::vector<MergeJob> jobs;
  std::vector<py::buffer> keep;  // the buffers stay referenced while merging
  for (const py::handle item : items) {
    auto t = item.cast<py::tuple>();
    keep.push_back(t[1].cast<py::buffer>());
    jobs.push_back(MakeJob(container, t[0].cast<size_t>(), out_dtype_name, keep.back()));
  }
  return RunJobs(base, jobs, threads);
}

// Records of a container still arriving (deltaserve/decode.py, load_delta_into):
// items = [(record bytes, expected name, out buffer)], each record parsed and verified
// (codec::ParseRecord), tied to its base tensor by the header metadata's
// kBaseAliasKey (codec::ParseBaseAlias), then merged as MergeAll does. DataLoss when a
// record names another tensor than expected. Returns [(name, saturated)] as MergeAll.
py::list MergeRecords(const Base& base, const std::map<std::string, std::string>& metadata,
                      const py::list& items, std::optional<std::string> out_dtype_name,
                      int threads) {
  const std::map<std::string, std::string> alias = ValueOrThrow(codec::ParseBaseAlias(metadata));
  std::vector<MergeJob> jobs;
  std::vector<py::buffer> keep;  // the record and output buffers stay referenced
  for (const py::handle item : items) {
    auto t = item.cast<py::tuple>();
    keep.push_back(t[0].cast<py::buffer>());
    py::buffer_info in = keep.back().request();
    codec::TensorRecord record = ValueOrThrow(codec::ParseRecord(absl::MakeConstSpan(
        static_cast<const uint8_t*>(in.ptr), static_cast<size_t>(in.size * in.itemsize))));
    const std::string expected = t[1].cast<std::string>();
    if (record.info.name != expected) {
      ThrowIfError(absl::DataLossError(absl::StrCat("record of tensor '", record.info.name,
                                                    "' where the task lists '", expected, "'")));
    }
    if (auto it = alias.find(record.info.name); it != alias.end()) record.base_name = it->second;
    keep.push_back(t[2].cast<py::buffer>());
    jobs.push_back(MakeJob(std::move(record), out_dtype_name, keep.back()));
  }
  return RunJobs(base, jobs, threads);
}

}  // namespace
}  // namespace deltaserve::python

PYBIND11_MODULE(_codec, m) {
  using namespace deltaserve::python;
  m.doc() = "deltaserve C++ codec: local decode + merge of task deltas";
  RegisterStatusError(m, "CodecError");
  py::class_<Base, std::shared_ptr<Base>>(m, "Base")
      .def_static("open", &Base::Open, py::arg("path"))
      .def_static("from_buffers", &Base::FromBuffers, py::arg("items"))
      .def("hash", &Base::Hash)
      .def_property_readonly("num_tensors",
                             [](const Base& b) { return b.reader().tensors().size(); })
      .def_property_readonly("total_bytes", [](const Base& b) { return b.reader().total_bytes(); });
  py::class_<Container>(m, "Container")
      .def(py::init<py::buffer>(), py::arg("data"))
      .def_property_readonly("base_hash", &Container::BaseHash)
      .def_property_readonly("metadata", &Container::Metadata)
      .def("__len__", &Container::size)
      .def("records", &Container::Records)
      .def("check_base", &Container::CheckBase, py::arg("base"));
  m.def("merge", &Merge, py::arg("base"), py::arg("container"), py::arg("index"),
        py::arg("out_dtype"), py::arg("out"), py::arg("threads") = 1);
  m.def("merge_records", &MergeRecords, py::arg("base"), py::arg("metadata"), py::arg("items"),
        py::arg("out_dtype"), py::arg("threads") = 1);
  m.def("merge_all", &MergeAll, py::arg("base"), py::arg("container"), py::arg("jobs"),
        py::arg("out_dtype"), py::arg("threads") = 1);
}

// deltaserve._pull: StreamWeights through the project's C++ client (client/client.h:
// TLS, token, tenant, framing and XXH3-64 checks, resume), writing every tensor's bytes
// straight into their final memory with the GIL released for the whole stream. Used by
// deltaserve/_native.py for Client.load_state_dict, load_into, stream_weights and
// pull_dir; the pure grpcio reader (deltaserve/_stream.py) is the fallback when this
// module is missing.
//
//   Puller(target, token, tenant, tls, ca, timeout, keepalive=30, keepalive_timeout=20)
//       one DeltaClient (one gRPC channel); timeout: seconds of unary calls;
//       keepalive, keepalive_timeout: ClientOptions::keepalive_time, keepalive_timeout
//       in seconds (keepalive 0: no pings)
//   Puller.load(task, out_dtype, include, include_regex, chunk_bytes, retries,
//               reconnect_timeout, deadline, targets, on_tensor, figures, each=False,
//               cancel=None, on_begin=None)
//       -> (buffer, tensors, metadata)
//     targets None: the tensors go into one fresh buffer (a uint8 numpy array over an
//       anonymous mapping, unmapped when the last view of it goes), each
//       at a 64-byte aligned offset; tensors = [(name, proto dtype, shape, offset)].
//     each=True (targets None): every tensor gets a fresh buffer of its own, handed
//       over as soon as it is verified: on_tensor(name, proto dtype, shape, uint8 numpy
//       array owning the buffer); buffer is None and tensors [].
//     targets {name: (address, nbytes, proto dtype, shape)}: each tensor is written at
//       the address given for its name (the caller keeps that memory alive and
//       writable); a name missing from targets, or another dtype or shape than given,
//       is INVALID_ARGUMENT naming the tensor. buffer is None.
//     out_dtype: proto DType number (0: the recorded dtypes); include: list of bytes
//       globs; include_regex: bytes; deadline: seconds for the whole download (0: none);
//       reconnect_timeout: seconds per resume; on_tensor: None or a callable(name)
//       called with the GIL after each verified tensor (an exception it raises stops
//       the stream and is re-raised); cancel: None or a Cancel whose set(), from any
//       thread, stops the stream after the message being read (CANCELLED); on_begin:
//       None or a callable(metadata) called with the GIL when the stream begins (the
//       stream's safetensors metadata {str: str}; an exception stops it as on_tensor's).
//     figures: a dict that gets {tensors, bytes, seconds, first_tensor_seconds,
//       resumes, kept_bytes, saturated_values, saturated_tensors, first_saturated_tensor},
//       also when the load fails (how far it got); kept_bytes: of
//       tensors a dropped stream cut midway, kept and not fetched again (the resumed
//       stream starts at the next byte, resume_from_offset); metadata: the stream's
//       safetensors metadata {str: str}. A Puller may run several loads at once.
//
// Errors raise _pull.PullError(code, message): code is the absl/gRPC status number, the
// message the client's (the call, the task, the server's words).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/weights_sink.h"
#include "codec/tensor.h"
#include "common/status_macros.h"
#include "proto/protocol.h"
#include "python/codec/status_error.h"

namespace py = pybind11;

namespace deltaserve::python {
namespace {

constexpr size_t kAlign = 64;  // tensor offsets in a fresh buffer
// Below this a fresh buffer is faulted in by the writer alone (a thread costs more).
constexpr size_t kPrefaultMinBytes = 16 << 20;

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Faults in the pages of a fresh anonymous mapping on a thread of its own, ahead of the
// thread that writes the stream into it, so that the writer's copies find their pages
// present: on the test VM the 4 KiB faults (trap, zeroing, memcg charge) took a third
// of the CPU time of the thread that also receives and hashes the stream (1.0 s per GB
// with them, 0.67 s without: python_load_bench's (a), time.thread_time);
// MADV_POPULATE_WRITE faults a whole step in one call, without the traps (0.29 s of
// system time per GB against 0.43 s by touching, measured by hand). It uses a second
// core: on a loaded machine the gain shrinks to what the traps cost. The prefaulter
// never writes (a page it faults in after the writer filled it
// keeps its bytes) and skips what the writer has passed. It stops at the first madvise
// error (EINVAL before Linux 5.14: the writer then faults the pages itself).
class Prefaulter {
 public:
  static constexpr size_t kStep = 4 << 20;

  Prefaulter(uint8_t* p, size_t n) : p_(p), n_(n), thread_([this] { Run(); }) {}
  ~Prefaulter() { Stop(); }
  Prefaulter(const Prefaulter&) = delete;
  Prefaulter& operator=(const Prefaulter&) = delete;

  // The writer has filled [0, offset) (or passed it).
  void WriterAt(size_t offset) { writer_.store(offset, std::memory_order_relaxed); }
  // Returns once the thread has stopped (at most one step later).
  void Stop() {
    stop_.store(true, std::memory_order_relaxed);
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t at = 0;
    while (at < n_ && !stop_.load(std::memory_order_relaxed)) {
      at = std::max(at, writer_.load(std::memory_order_relaxed) / page * page);
      const size_t len = std::min(kStep, n_ - at);
      if (len == 0 || madvise(p_ + at, len, MADV_POPULATE_WRITE) != 0) return;
      at += len;
    }
  }

  uint8_t* const p_;
  const size_t n_;
  std::atomic<size_t> writer_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts once the members above exist
};

// A fresh anonymous mapping that receives a stream, faulted in beside it by a
// Prefaulter when it is large, then handed to Python as a numpy array that unmaps it
// when its last view goes. Until then this object owns it.
class FreshMapping {
 public:
  // n > 0. ResourceExhausted (naming `what`) when the mapping fails.
  static absl::StatusOr<std::unique_ptr<FreshMapping>> Create(size_t n, const std::string& what) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          absl::StrCat(what, ": cannot map ", n, " bytes: ", std::strerror(errno)));
    }
    return std::unique_ptr<FreshMapping>(new FreshMapping(static_cast<uint8_t*>(p), n));
  }
  ~FreshMapping() {
    prefaulter_.reset();  // before the unmap
    if (p_ != nullptr) munmap(p_, n_);
  }
  FreshMapping(const FreshMapping&) = delete;
  FreshMapping& operator=(const FreshMapping&) = delete;

  uint8_t* data() const { return p_; }
  size_t size() const { return n_; }
  // The stream has filled the mapping up to `offset`.
  void WriterAt(size_t offset) {
    if (prefaulter_ != nullptr) prefaulter_->WriterAt(offset);
  }
  // A uint8 array over the first `used` bytes that owns the mapping. With the GIL.
  py::array_t<uint8_t> TakeArray(size_t used) {
    prefaulter_.reset();  // the memory is Python's from here on
    auto* owned = new std::pair<uint8_t*, size_t>(std::exchange(p_, nullptr), n_);
    py::capsule owner(owned, [](void* q) {
      auto* m = static_cast<std::pair<uint8_t*, size_t>*>(q);
      munmap(m->first, m->second);
      delete m;
    });
    return py::array_t<uint8_t>({static_cast<py::ssize_t>(used)}, {1}, owned->first, owner);
  }

 private:
  FreshMapping(uint8_t* p, size_t n) : p_(p), n_(n) {
    // No MADV_HUGEPAGE: on the test VM (THP "madvise", defrag "madvise") it made the
    // kernel compact memory on fault, 4x the system time of 4 KiB faults (1.8 s per GB).
    // Neither MAP_POPULATE nor one MADV_POPULATE_WRITE of the whole buffer up front
    // pays: the stream waits for it. The Prefaulter does it beside the stream.
    if (n >= kPrefaultMinBytes) prefaulter_ = std::make_unique<Prefaulter>(p, n);
  }

  uint8_t* p_;
  const size_t n_;
  std::unique_ptr<Prefaulter> prefaulter_;  // while the stream fills the mapping
};

// One tensor of a one-buffer load as handed back to Python.
struct Placed {
  codec::TensorInfo info;
  size_t offset = 0;  // in the buffer
};

// Receives the verified stream into its final memory, in one of three ways: the
// caller's target tensors; one fresh buffer sized from the stream's begin message (a
// state dict); or a fresh buffer per tensor, handed to on_tensor as soon as the tensor
// is verified (a stream of separately owned tensors).
class PlacingSink : public client::WeightsSink {
 public:
  struct Target {
    uint8_t* data;
    size_t nbytes;
    int dtype;  // proto DType
    std::vector<int64_t> shape;
  };

  // `each`: a buffer per tensor, on_tensor(name, proto dtype, shape, uint8 array);
  // otherwise on_tensor(name) (may be None) after each tensor, and the tensors go into
  // `targets` or, if there are none, into one buffer.
  // on_begin: None or callable(metadata dict), called once, when the stream begins.
  PlacingSink(std::string label, std::optional<std::map<std::string, Target>> targets, bool each,
              py::object on_tensor, py::object on_begin)
      : label_(std::move(label)),
        targets_(std::move(targets)),
        each_(each),
        on_tensor_(std::move(on_tensor)),
        on_begin_(std::move(on_begin)) {}

  absl::Status Begin(const v1::StreamBegin& begin) override {
    for (const auto& [k, v] : begin.safetensors_metadata()) metadata_[k] = v;
    if (!on_begin_.is_none()) {
      py::gil_scoped_acquire gil;
      try {
        on_begin_(py::cast(metadata_));
      } catch (py::error_already_set& e) {
        callback_error_ = std::move(e);
        return absl::CancelledError(absl::StrCat(label_, ": stopped by on_begin"));
      }
    }
    if (targets_ || each_) return absl::OkStatus();
    capacity_ = begin.total_bytes() + kAlign * static_cast<uint64_t>(begin.num_tensors());
    if (capacity_ == 0) return absl::OkStatus();
    DS_ASSIGN_OR_RETURN(buffer_, FreshMapping::Create(capacity_, label_ + ": the state dict"));
    return absl::OkStatus();
  }

  absl::Status TensorBegin(const codec::TensorInfo& info) override {
    filled_ = 0;
    info_ = info;
    if (targets_) {
      auto it = targets_->find(info.name);
      if (it == targets_->end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", info.name, "' of the task is not in the model"));
      }
      const Target& t = it->second;
      if (t.dtype != proto::ToProtoDType(info.dtype) || t.shape != info.shape ||
          t.nbytes != info.num_bytes()) {
        absl::StatusOr<codec::DType> want = proto::FromProtoDType(static_cast<v1::DType>(t.dtype));
        const std::string want_name(want.ok() ? codec::DTypeName(*want) : "?");
        const std::string got_name(codec::DTypeName(info.dtype));
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", info.name, "': the model has shape ", codec::ShapeString(t.shape),
            " and dtype ", want_name, ", the task sends ", codec::ShapeString(info.shape), " ",
            got_name));
      }
      dest_ = t.data;
      base_ = 0;
    } else if (each_) {
      tensor_.reset();
      dest_ = nullptr;
      if (info.num_bytes() > 0) {
        DS_ASSIGN_OR_RETURN(tensor_, FreshMapping::Create(
                                         info.num_bytes(), absl::StrCat(label_, ": tensor '",
                                                                        info.name, "'")));
        dest_ = tensor_->data();
      }
      base_ = 0;
    } else {
      const size_t offset = AlignUp(used_);
      if (buffer_ == nullptr || offset + info.num_bytes() > capacity_) {
        return absl::DataLossError(absl::StrCat(label_, ": malformed stream: tensor '", info.name,
                                                "' goes beyond the ", capacity_,
                                                " bytes the begin message announced"));
      }
      dest_ = buffer_->data() + offset;
      base_ = offset;
      placed_.push_back({info, offset});
    }
    return absl::OkStatus();
  }

  absl::Status Data(absl::Span<const uint8_t> data) override {
    kept_bytes_ += std::exchange(continued_, 0);  // the resumed stream brings the rest
    std::memcpy(dest_ + filled_, data.data(), data.size());
    filled_ += data.size();
    FreshMapping* fresh = each_ ? tensor_.get() : buffer_.get();
    if (fresh != nullptr) fresh->WriterAt(base_ + filled_);
    return absl::OkStatus();
  }

  absl::Status TensorEnd() override {
    if (!targets_ && !each_) {
      used_ = placed_.back().offset + placed_.back().info.num_bytes();
      finished_ = placed_.size();
    }
    if (on_tensor_.is_none()) return absl::OkStatus();
    py::gil_scoped_acquire gil;
    try {
      if (each_) {
        py::array_t<uint8_t> array = tensor_ != nullptr
                                         ? tensor_->TakeArray(info_.num_bytes())
                                         : py::array_t<uint8_t>(0);
        tensor_.reset();
        on_tensor_(info_.name, static_cast<int>(proto::ToProtoDType(info_.dtype)),
                   py::tuple(py::cast(info_.shape)), std::move(array));
      } else {
        on_tensor_(py::str(info_.name));
      }
    } catch (py::error_already_set& e) {
      callback_error_ = std::move(e);
      return absl::CancelledError(absl::StrCat(label_, ": stopped by on_tensor"));
    }
    return absl::OkStatus();
  }

  void DropUnfinished() override {
    if (!targets_ && !each_) placed_.resize(finished_);
    tensor_.reset();
  }

  // The bytes so far of the tensor cut midway stay (dest_, filled_ unchanged); they count
  // as kept once the resumed stream goes on (a resume that fails first counts none).
  void Continue(uint64_t offset) override { continued_ = offset; }
  uint64_t kept_bytes() const { return kept_bytes_; }

  // One-buffer loads: hands the buffer to Python (a numpy array that unmaps it when it
  // goes); None if no byte came.
  py::object TakeBuffer() {
    if (buffer_ == nullptr) return py::none();
    return buffer_->TakeArray(used_);
  }

  const std::vector<Placed>& placed() const { return placed_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::optional<py::error_already_set>& callback_error() { return callback_error_; }

 private:
  const std::string label_;
  const std::optional<std::map<std::string, Target>> targets_;
  const bool each_;
  py::object on_tensor_, on_begin_;
  std::unique_ptr<FreshMapping> buffer_;  // one-buffer loads
  size_t capacity_ = 0, used_ = 0;
  std::unique_ptr<FreshMapping> tensor_;  // `each`: the tensor being received
  codec::TensorInfo info_;                // the tensor being received
  uint8_t* dest_ = nullptr;
  size_t base_ = 0;  // of dest_ in its FreshMapping
  size_t filled_ = 0, finished_ = 0;
  uint64_t kept_bytes_ = 0;  // of tensors cut midway, not fetched again on resume
  uint64_t continued_ = 0;   // Continue's offset until the next Data
  std::vector<Placed> placed_;
  std::map<std::string, std::string> metadata_;
  std::optional<py::error_already_set> callback_error_;
};

// Stops a load from another thread (PullOptions::cancel: checked after every message).
struct CancelFlag {
  std::atomic<bool> flag{false};
};

class Puller {
 public:
  Puller(const std::string& target, const std::string& token, const std::string& tenant,
         bool tls, const std::string& ca, double timeout, double keepalive,
         double keepalive_timeout) {
    client::ClientOptions options;
    options.target = target;
    options.token = token;
    options.tenant = tenant;
    options.use_tls = tls;
    options.tls_root_cert_path = ca;
    options.deadline = absl::Seconds(timeout);
    options.keepalive_time = absl::Seconds(keepalive);
    options.keepalive_timeout = absl::Seconds(keepalive_timeout);
    absl::StatusOr<std::unique_ptr<client::DeltaClient>> c = client::DeltaClient::Open(options);
    ThrowIfError(c.status());
    client_ = *std::move(c);
    tenant_ = tenant;
  }

  py::tuple Load(const std::string& task, int out_dtype, const std::vector<std::string>& include,
                 const std::string& include_regex, uint32_t chunk_bytes, uint32_t retries,
                 double reconnect_timeout, double deadline, py::object targets,
                 py::object on_tensor, py::dict figures, bool each, py::object cancel,
                 py::object on_begin) {
    client::SinkPullOptions options;
    if (out_dtype != 0) {
      absl::StatusOr<codec::DType> d = proto::FromProtoDType(static_cast<v1::DType>(out_dtype));
      ThrowIfError(d.status());
      options.pull.out_dtype = *d;
    }
    options.pull.include = include;
    options.pull.include_regex = include_regex;
    options.pull.chunk_bytes = chunk_bytes;
    options.retries = retries;
    options.reconnect_timeout = absl::Seconds(reconnect_timeout);
    options.deadline = absl::Seconds(deadline);
    if (!cancel.is_none()) options.pull.cancel = &cancel.cast<CancelFlag&>().flag;
    std::optional<std::map<std::string, PlacingSink::Target>> places;
    if (!targets.is_none()) {
      places.emplace();
      for (auto [name, value] : targets.cast<py::dict>()) {
        auto t = value.cast<py::tuple>();
        (*places)[name.cast<std::string>()] = {
            reinterpret_cast<uint8_t*>(t[0].cast<uintptr_t>()), t[1].cast<size_t>(),
            t[2].cast<int>(), t[3].cast<std::vector<int64_t>>()};
      }
    }
    const std::string label =
        absl::StrCat("StreamWeights '", tenant_.empty() ? "" : tenant_ + "/", task, "'");
    PlacingSink sink(label, std::move(places), each, on_tensor, on_begin);
    absl::Status status;
    client::PullStats stats;
    {
      py::gil_scoped_release nogil;
      status = client_->PullWeightsToSink(task, &sink, options, &stats);
    }
    figures["tensors"] = stats.tensors;
    figures["bytes"] = stats.bytes;
    figures["seconds"] = stats.seconds;
    figures["first_tensor_seconds"] = stats.first_tensor_seconds;
    figures["resumes"] = stats.resumed;
    figures["kept_bytes"] = sink.kept_bytes();
    figures["saturated_values"] = stats.saturated_values;
    figures["saturated_tensors"] = stats.saturated_tensors;
    figures["first_saturated_tensor"] = stats.first_saturated_tensor;
    if (sink.callback_error()) throw *std::move(sink.callback_error());
    ThrowIfError(status);
    py::list tensors;
    for (const Placed& p : sink.placed()) {
      tensors.append(py::make_tuple(p.info.name, static_cast<int>(proto::ToProtoDType(p.info.dtype)),
                                    py::tuple(py::cast(p.info.shape)), p.offset));
    }
    return py::make_tuple(sink.TakeBuffer(), tensors, py::cast(sink.metadata()));
  }

 private:
  std::unique_ptr<client::DeltaClient> client_;
  std::string tenant_;
};

}  // namespace
}  // namespace deltaserve::python

PYBIND11_MODULE(_pull, m) {
  using namespace deltaserve::python;
  m.doc() = "deltaserve C++ client: StreamWeights straight into tensor memory";
  RegisterStatusError(m, "PullError");
  py::class_<Puller>(m, "Puller")
      .def(py::init<const std::string&, const std::string&, const std::string&, bool,
                    const std::string&, double, double, double>(),
           py::arg("target"), py::arg("token"), py::arg("tenant"), py::arg("tls"), py::arg("ca"),
           py::arg("timeout"), py::arg("keepalive") = 30.0, py::arg("keepalive_timeout") = 20.0)
      .def("load", &Puller::Load, py::arg("task"), py::arg("out_dtype"), py::arg("include"),
           py::arg("include_regex"), py::arg("chunk_bytes"), py::arg("retries"),
           py::arg("reconnect_timeout"), py::arg("deadline"), py::arg("targets"),
           py::arg("on_tensor"), py::arg("figures"), py::arg("each") = false,
           py::arg("cancel") = py::none(), py::arg("on_begin") = py::none());
  py::class_<CancelFlag>(m, "Cancel")
      .def(py::init<>())
      .def("set", [](CancelFlag& c) { c.flag = true; });
}

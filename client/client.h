// DeltaClient: C++ client of deltaserve.v1.DeltaService (proto/deltaserve/v1/
// delta_service.proto), used by `deltactl push/list/info/delete/pull/get-base` and by
// inference workers.
//
// Every method returns absl::Status / absl::StatusOr. Server errors keep their gRPC code
// (absl and gRPC codes are the same numbers) with the method named in the message, e.g.
// NOT_FOUND for an unknown (or another tenant's) task, UNAUTHENTICATED for a bad token,
// UNAVAILABLE when the server cannot be reached, DEADLINE_EXCEEDED past the deadline.
// Client-side checks add: DATA_LOSS when a streamed tensor or container fails its
// checksum or the stream is malformed (gaps, overruns, wrong totals), INVALID_ARGUMENT
// for bad options or a local container that does not parse, CANCELLED when the caller's
// cancel flag is raised, and Internal/Unavailable-style errno statuses for local files.
//
// Thread safety: a DeltaClient is thread-safe; any number of calls may run concurrently
// on one client (they share one gRPC channel).
#ifndef DELTASERVE_CLIENT_CLIENT_H_
#define DELTASERVE_CLIENT_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "codec/tensor.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "proto/protocol.h"

namespace deltaserve::v1 {
class DeltaService_Stub;
}  // namespace deltaserve::v1

namespace deltaserve::client {

class WeightsSink;  // client/weights_sink.h

struct ClientOptions {
  // Server address, e.g. "127.0.0.1:50051" or "dns:///deltaserve.internal:443". Required.
  std::string target;
  // Bearer token sent as `authorization: Bearer <token>` on every call. Empty: none
  // (only a server without a config accepts that). Default: empty.
  std::string token;
  // Tenant named in every request. Empty: the token's own tenant (tenant tokens); admin
  // tokens must name one. Default: empty.
  std::string tenant;
  // TLS: use_tls with `tls_root_cert_path` empty trusts the system roots; a non-empty
  // path (PEM) implies TLS and trusts only that certificate. Default: plaintext.
  bool use_tls = false;
  std::string tls_root_cert_path;
  // Deadline of each unary call (list, info, delete, get-base) and of a whole upload.
  // Default: 60 s. Must be positive.
  absl::Duration deadline = absl::Seconds(60);
  // Deadline of a whole download (pull, StreamDelta). Zero: none. Default: none.
  absl::Duration stream_deadline = absl::ZeroDuration();
  // HTTP/2 keepalive while a call is in progress: after `keepalive_time` without
  // receiving anything the client pings the server, and fails the connection's calls
  // UNAVAILABLE ("the server stopped answering ...") when no answer comes within
  // `keepalive_timeout`. A frozen server, or a network partition that drops packets
  // without a reset, then ends a pull (which resumes, PullOptions::range_retries and
  // SinkPullOptions::retries) instead of hanging it; a slow server whose connection
  // answers pings is not cut. No pings while no call is in progress. The server must
  // allow pings this often (deltaserved --min-client-ping-seconds, default 5 s; more
  // often gets GOAWAY too_many_pings). Zero keepalive_time: no pings (a frozen server
  // holds a call until its deadline). keepalive_time: zero or at least 1 ms;
  // keepalive_timeout: positive. Defaults: 30 s, 20 s.
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // Upload chunk size in bytes. Larger: fewer messages. Must be in
  // [proto::kMinChunkBytes, proto::kMaxChunkBytes] = [4 KiB, 4 MiB - 1 KiB].
  // Default: proto::kDefaultChunkBytes (1 MiB).
  uint32_t upload_chunk_bytes = proto::kDefaultChunkBytes;

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// Progress of a long transfer; called after every chunk from the calling thread. An
// upload (PushDelta) reports bytes_done = 0 once the stream is open and then the bytes
// sent; bytes_done reaches bytes_total only after the server has committed the task,
// never for an upload it refused.
struct Progress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;     // 0 until known
  uint32_t tensors_done = 0;    // pulls only
  uint32_t tensors_total = 0;   // pulls only
  std::string current;          // tensor being transferred (pulls only)
};
using ProgressFn = std::function<void(const Progress&)>;

// A side file pushed with a task (config.json, tokenizer files, ...). The server checks
// names and limits (proto "Side files"; storage/side_files.h): INVALID_ARGUMENT for a
// bad name, RESOURCE_EXHAUSTED naming the file and size above the limits.
struct SideFileUpload {
  std::string name;  // a plain file name, UTF-8
  std::string data;
};

struct PushOptions {
  bool overwrite = false;  // replace an existing task; otherwise ALREADY_EXISTS
  // Side files stored with the task (each with its XXH3-64, verified by the server);
  // an overwrite replaces the old task's side files. Default: none.
  std::vector<SideFileUpload> side_files;
  ProgressFn progress;
  // Raised by another thread: the upload is cancelled (nothing is stored).
  const std::atomic<bool>* cancel = nullptr;
  // If not null, set on success to whether the identical container (same bytes, same
  // side files) was already stored under the task, so nothing was written
  // (PutDeltaResponse.unchanged). Default: null.
  bool* unchanged = nullptr;
};

struct PullOptions {
  // Output dtype of every tensor. nullopt: each tensor's recorded dtype (what offline
  // `deltactl decompress` writes by default).
  std::optional<codec::DType> out_dtype;
  // Tensor-name filter (StreamWeightsRequest.include / include_regex): fnmatch globs, any
  // may match; and/or an RE2 regex that must match the whole name. Empty: all tensors.
  std::vector<std::string> include;
  std::string include_regex;
  // Skip tensors before this one in container order ("" = start at the first).
  std::string resume_from;
  // Chunk size asked of the server; 0 = server default.
  uint32_t chunk_bytes = 0;
  // Parallel streams for one pull. 1: one StreamWeights call. N > 1: GetTask
  // (include_tensors) first; the tensors from resume_from on are cut into at most N
  // contiguous ranges of container indices of about equal output bytes, each fetched at
  // the same time over a connection of its own by a StreamWeights call on its range
  // (resume_from_index .. end_index); the ranges are joined in container order, so the
  // tensors, files and bytes are the same as one stream's. Every tensor's XXH3-64 is
  // verified as with one stream. Extra errors: ABORTED if the task is replaced during
  // the pull (a stream serves another version than GetTask saw); a range's error that is
  // not retried (see range_retries) cancels the other ranges. Must be in [1, 64].
  // Default: 1.
  uint32_t streams = 1;
  // How many times a stream (with streams > 1: one range) that fails with UNAVAILABLE
  // (a dropped connection, a restarting or dying server, or a stream reset by a proxy
  // whose server died: behind a load balancer the next attempt may land on another
  // replica) is resumed after its last verified
  // tensor; a tensor cut midway resumes at the byte where it stopped
  // (StreamWeightsRequest.resume_from_offset), its whole XXH3-64 still verified. A
  // replica serving another version of the task is ABORTED. Default: 3.
  uint32_t range_retries = 3;
  // Called after every chunk; with streams > 1 from the streams' threads, one call at a
  // time, with the sum over the ranges.
  ProgressFn progress;
  const std::atomic<bool>* cancel = nullptr;
};

struct PullStats {
  uint32_t tensors = 0;
  uint64_t bytes = 0;              // tensor data bytes received (and verified)
  double seconds = 0;              // wall time of the stream
  double first_tensor_seconds = 0;  // from the call to the first tensor header
  uint32_t streams = 1;             // parallel streams used (PullOptions::streams)
  uint32_t resumed = 0;             // ranges resumed after a transient failure
  // Values the server's cast to out_dtype saturated to the dtype's largest finite value
  // (F16/BF16 only; TensorHeader.saturated_values), summed over the tensors received;
  // the tensors with any; the name of the first such tensor received ("" if none).
  uint64_t saturated_values = 0;
  uint32_t saturated_tensors = 0;
  std::string first_saturated_tensor;
  std::vector<std::string> side_files;  // PullWeightsToDirectory: side files written
};

// A pulled model held in memory: tensors in stream (container) order.
struct PulledModel {
  std::vector<codec::OwnedTensor> tensors;
  std::map<std::string, std::string> metadata;  // StreamBegin.safetensors_metadata
  v1::TaskInfo task;
  PullStats stats;
};

// PullWeightsToSink's resume policy and deadline.
struct SinkPullOptions {
  // out_dtype, include, include_regex, chunk_bytes, progress and cancel as for the other
  // pulls; streams must be 1 and resume_from empty.
  PullOptions pull;
  // Resumes after a stream that has begun fails with UNAVAILABLE (a dropped connection,
  // a restarting server), each at the byte where the stream stopped: within the tensor it
  // cut (resume_from_offset), else from the tensor after the last verified one.
  // Default: 3.
  uint32_t retries = 3;
  // How long each retry waits for the channel to connect again; a wait that ends without
  // the server uses the next retry, so a begun stream survives an outage of up to
  // retries x reconnect_timeout (30 s by default), within `deadline`. Default: 10 s.
  absl::Duration reconnect_timeout = absl::Seconds(10);
  // Deadline of the whole download, resumes included. Zero: ClientOptions::stream_deadline
  // for each call. Default: zero.
  absl::Duration deadline = absl::ZeroDuration();
};

struct DeltaStats {
  uint64_t bytes = 0;
  uint64_t xxh3_64 = 0;
  double seconds = 0;
};

class DeltaClient {
 public:
  // Creates the channel (does not connect yet: an unreachable server shows as
  // UNAVAILABLE on the first call). InvalidArgument for bad options; NotFound /
  // errno statuses if the root certificate cannot be read.
  static absl::StatusOr<std::unique_ptr<DeltaClient>> Open(const ClientOptions& options);
  ~DeltaClient();
  DeltaClient(const DeltaClient&) = delete;
  DeltaClient& operator=(const DeltaClient&) = delete;

  // Uploads a container (parsed locally first: InvalidArgument/DataLoss before any
  // network traffic if it is malformed) with its XXH3-64, so the server verifies it end
  // to end. Returns the committed task (tensors empty).
  absl::StatusOr<v1::TaskInfo> PushDelta(const std::string& task,
                                         absl::Span<const uint8_t> container,
                                         const PushOptions& options = {});
  // Same for a container file (memory-mapped, not read into memory). InvalidArgument
  // if the file is not a container at all (wrong magic, e.g. a safetensors model).
  absl::StatusOr<v1::TaskInfo> PushDeltaFile(const std::string& task, const std::string& path,
                                             const PushOptions& options = {});

  // Tasks of `tenant` (nullopt: ClientOptions::tenant; admin with "": every tenant).
  absl::StatusOr<v1::ListTasksResponse> ListTasks(std::optional<std::string> tenant = {});
  // One task; per-tensor details if include_tensors.
  absl::StatusOr<v1::TaskInfo> GetTask(const std::string& task, bool include_tensors = true);
  // Returns the freed container bytes.
  absl::StatusOr<uint64_t> DeleteTask(const std::string& task);
  absl::StatusOr<v1::BaseInfo> GetBase();
  // Pins / unpins a task's merged tensors in the server cache. Pin returns pinned bytes.
  absl::StatusOr<uint64_t> PinTask(const std::string& task,
                                   std::optional<codec::DType> out_dtype = {});
  absl::Status UnpinTask(const std::string& task);
  // Admin: a consistent copy of the server's whole store in `dir` (an absolute path on
  // the server, not existing yet). Errors: see AdminCheckpointRequest.
  absl::StatusOr<v1::AdminCheckpointResponse> Checkpoint(const std::string& dir);

  // Streams the task's merged weights, verifies every tensor's XXH3-64, offsets and the
  // stream totals, and writes one safetensors file at `out_path` with the tensors in
  // stream order and the server's safetensors metadata: for an unfiltered pull in the
  // recorded dtypes, the same bytes as offline `deltactl decompress` (both are written
  // by codec::WriteSafetensors). Memory stays bounded: without a name filter (include,
  // include_regex) the tensors are known from GetTask first, and each chunk is written
  // (pwrite) straight to its place in `out_path + ".tmp"`, renamed over out_path once
  // every tensor arrived verified; with a filter, tensor data is spilled to
  // `out_path + ".data.tmp"` (removed afterwards) and mapped for the final write.
  // Nothing is left at out_path on error (nor a .tmp file). Before any call: InvalidArgument if out_path
  // is a directory, NotFound if its parent directory does not exist.
  absl::StatusOr<PullStats> PullWeights(const std::string& task, const std::string& out_path,
                                        const PullOptions& options = {});
  // Same, as a Hugging Face checkpoint directory: codec::WriteShardedSafetensors(dir, the
  // tensors in stream order, the server's safetensors metadata, max_shard_bytes), i.e.
  // model-0000i-of-0000N.safetensors shards of at most max_shard_bytes of tensor data
  // (a larger tensor gets a shard of its own) and model.safetensors.index.json, and
  // beside them the task's side files (each checked against GetTask's size and XXH3-64:
  // ABORTED if the task changed during the pull). Every file is staged and fsynced in a
  // private directory inside `dir` (created if needed; common::StagedFiles), where the
  // spill file lies too, and renamed into `dir` only once all are complete, the index
  // last: on error `dir` is left as it was (less a directory this call made). Then the
  // weight files of an earlier checkpoint that this one replaces are removed
  // (codec::RemoveReplacedWeightFiles: other shard counts, a single model.safetensors).
  // InvalidArgument if max_shard_bytes is 0; otherwise PullWeights' and GetSideFile's
  // errors.
  absl::StatusOr<PullStats> PullWeightsToDirectory(const std::string& task, const std::string& dir,
                                                   uint64_t max_shard_bytes,
                                                   const PullOptions& options = {});
  // Same, into memory.
  absl::StatusOr<PulledModel> PullWeightsToMemory(const std::string& task,
                                                  const PullOptions& options = {});

  // Streams the task's merged weights into a caller's sink (client/weights_sink.h) over
  // one StreamWeights call, every tensor verified as for the other pulls, resumed as
  // options.retries says; for in-tree consumers that write
  // tensors straight into memory of their own (the Python binding,
  // python/codec/pull_module.cc). The sink gets Begin once (the first stream's); before
  // each resume Continue(bytes kept) when the stream cut a tensor midway, else
  // DropUnfinished (client/weights_sink.h). Errors: as PullWeights; ABORTED if a resumed
  // stream serves another version of the task; UNAVAILABLE when no stream has begun and
  // the channel does not connect within 2 s (or reconnect_timeout if shorter) of the
  // failure (otherwise the call, which went out on a connection that died since, e.g.
  // to a restarted server, is tried again, within `retries`, without counting as a
  // resume), and when a begun stream's server does not come back within the retries
  // left, each waiting up to reconnect_timeout (the message says the seconds waited and
  // the retries used); InvalidArgument if streams != 1 or resume_from is set.
  // `stats` (not null) gets the verified tensors and bytes, first-tensor time, resumes
  // and seconds, on error too (how far it got).
  absl::Status PullWeightsToSink(const std::string& task, WeightsSink* sink,
                                 const SinkPullOptions& options, PullStats* stats);

  // The stored container exactly as uploaded, written to `out_path` (via a ".tmp" file
  // renamed at the end), total size and XXH3-64 verified.
  absl::StatusOr<DeltaStats> StreamDelta(const std::string& task, const std::string& out_path,
                                         const ProgressFn& progress = nullptr);
  // Same, into memory.
  absl::StatusOr<std::vector<uint8_t>> FetchDelta(const std::string& task,
                                                  const ProgressFn& progress = nullptr);

  // The bytes of the task's side file `name` (GetSideFile, read in slices of at most
  // 4 MiB), whole size and XXH3-64 verified: DATA_LOSS on a mismatch (also when the
  // task was replaced between two slices). NOT_FOUND for an unknown task or file.
  absl::StatusOr<std::string> GetSideFile(const std::string& task, const std::string& name);
  // Writes every side file of `task` (TaskInfo.side_files) into `dir` (created if
  // needed), each verified and replaced atomically; returns their names in order.
  // INVALID_ARGUMENT if the server lists a name that is not a plain file name.
  absl::StatusOr<std::vector<std::string>> WriteSideFiles(const std::string& task,
                                                          const std::string& dir);

  // Opaque state (client/internal/impl.h).
  struct Impl;

 private:
  explicit DeltaClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_CLIENT_H_

// deltaserved: the gRPC daemon serving deltaserve.v1.DeltaService
// (proto/deltaserve/v1/delta_service.proto) over a DeltaStore and one resident base.
//
// Architecture: gRPC callback API; every handler returns at once and hands RocksDB
// reads, container verification, decoding and merging to a worker pool
// (server/internal/thread_pool.h), which finishes or advances the reactor. Merged
// tensors are cached (server/internal/tensor_cache.h). See server/CONFIG.md for flags,
// the config file and the metrics.
//
// Thread safety: Server's methods may be called from any thread; Shutdown() and Wait()
// once each.
#ifndef DELTASERVE_SERVER_SERVER_H_
#define DELTASERVE_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/cluster_store.h"
#include "proto/protocol.h"
#include "server/config.h"
#include "storage/store.h"

namespace deltaserve::server {

struct ServerOptions {
  // Base model: a .safetensors file, a sharded index, or a directory holding either
  // (codec::ModelReader::Open). Read once into process memory at start (a private copy:
  // writing, truncating or replacing the file later changes nothing served; restart to
  // load a new base) and hashed. Required.
  std::string base_path;
  // Map the base files (mmap; the page cache is shared with other processes reading
  // them) instead of copying them. Saves the base's size per extra process on one host,
  // but then the files must not change while the daemon runs. A change is detected
  // (server/internal/base_watch.h: inotify, and a check every health_interval): from then
  // on health is NOT_SERVING, StreamWeights and PinTask fail with FAILED_PRECONDITION
  // naming the file, deltaserve_base_changed is 1, until a restart. What is not
  // prevented: pulls merged between the write and its notice (milliseconds with inotify)
  // carry the new bytes, and a truncation can still kill the daemon (SIGBUS) if a merge
  // reads a lost page first. Replacing a file (rename over it) is safe: the old bytes
  // stay mapped and served. Default: false.
  bool base_mapped = false;
  // RocksDB directory (created if missing). Default: var/deltaserve-db.
  std::string db_path = "var/deltaserve-db";
  // gRPC listen address "host:port"; port 0 picks a free port (Server::port()).
  // Default: 127.0.0.1:50051.
  std::string listen = "127.0.0.1:50051";
  // Prometheus scrape endpoint "host:port" or "[v6]:port" serving GET /metrics
  // (internal/metrics_http.h); "" = none (metrics are still kept,
  // Server::MetricsText()). Port 0 picks a free port. Default: 127.0.0.1:9464.
  std::string metrics_listen = "127.0.0.1:9464";
  // Tenants/tokens config file (server/CONFIG.md). Empty and `auth` unset: a single
  // tenant "default" without authentication (logged loudly at start). Default: "".
  std::string config_path;
  // Parsed config given directly (tests); takes precedence over config_path.
  std::optional<AuthConfig> auth;
  // PEM certificate chain and private key: both set = TLS, both empty = plaintext.
  std::string tls_cert_path, tls_key_path;
  // Budget of the merged-tensor cache in bytes. Larger: more tasks served without
  // decoding; memory. Default: 2 GiB.
  uint64_t cache_bytes = 2ull << 30;
  // Pre-touch (--pretouch-cache, server/internal/pretouch.h): once serving, a background
  // thread at idle priority maps and faults in memory for the merged tensors of a first
  // cold pull (the base's tensors of >= 256 KiB in its dtypes, up to cache_bytes), which
  // that pull then decodes into without page faults. Costs that memory in RSS from start
  // (within the cache budget; given back as the cache fills) and ~0.3 s of otherwise idle
  // CPU per GB (issue 9's VM). Readiness and requests never wait for it. Default: off.
  bool pretouch_cache = false;
  // Worker pool threads (decode, merge, RocksDB reads). 0 = hardware concurrency.
  // Default: 0.
  int workers = 0;
  // Maximum data bytes per StreamWeights/StreamDelta message (a request may ask for
  // less or more within [proto::kMinChunkBytes, proto::kMaxChunkBytes] = [4 KiB, 4 MiB -
  // 1 KiB]: data plus framing must fit a default client's 4 MiB receive limit).
  // Default: proto::kDefaultChunkBytes (1 MiB).
  uint32_t chunk_bytes = proto::kDefaultChunkBytes;
  // Tensors a stream decodes ahead of the one being sent. Memory per stream is
  // (1 + prefetch) merged tensors plus 2 chunks; 0 = no overlap of decode and send.
  // Default: 1.
  int prefetch_tensors = 1;
  // Data bytes a stream also keeps fetched ahead, beyond prefetch_tensors: later tensors
  // start decoding while those ahead of the one being sent hold fewer bytes than this,
  // so that a run of small tensors keeps every worker busy (one tensor below ~8 M
  // weights is one worker's job). Memory per stream grows by at most this plus one
  // tensor. 0 = prefetch_tensors alone. Default: 64 MiB.
  uint64_t prefetch_bytes = 64ull << 20;
  // Largest container PutDelta accepts (RESOURCE_EXHAUSTED beyond). Uploads are held in
  // memory until verified. Default: 8 GiB.
  uint64_t max_upload_bytes = 8ull << 30;
  // Memory of finished uploads kept mapped for the next ones (MADV_FREE: the kernel may
  // take it back under pressure), so that an upload writes over pages that exist rather
  // than having the kernel fault in and zero-fill new ones (about a tenth of PutDelta's
  // CPU; server/internal/upload_buffer.h). Counts in the process's RSS while kept. An
  // upload larger than this is unmapped when done. 0 = every upload maps its own.
  // Default: 512 MiB.
  uint64_t upload_buffer_cache_bytes = 512ull << 20;
  // PutDelta calls running at once; one more is refused with RESOURCE_EXHAUSTED (not
  // queued). Upload memory is bounded by max_uploads x the largest upload. Default: 4.
  int max_uploads = 4;
  // StreamWeights + StreamDelta calls running at once; one more is refused with
  // RESOURCE_EXHAUSTED. Stream memory is bounded by max_streams x (1 + prefetch) merged
  // tensors (shared with the cache when cached). Default: 64.
  int max_streams = 64;
  // Client connections open at once (TCP listen addresses; the daemon accepts them
  // itself, server/internal/listener.h); one more is closed at once. 0 = derived from
  // RLIMIT_NOFILE (server/internal/fd_limit.h); a larger value is lowered to that.
  // Default: 0.
  int max_connections = 0;
  // gRPC's own memory (transport buffers of every connection), bytes: gRPC's
  // ResourceQuota; past it gRPC shrinks windows and refuses new streams. Default: 1 GiB.
  uint64_t grpc_memory_bytes = 1ull << 30;
  // Tasks "tenant/task" decoded and pinned in the cache at start (recorded dtypes).
  // A missing task is logged and skipped. Default: none.
  std::vector<std::string> preload;
  // A stream whose client has not taken a message for this long counts as stalled
  // (deltaserve_streams_stalled). Default: 10 s.
  absl::Duration stall_after = absl::Seconds(10);
  // A stream whose client has not taken a message for this long is cancelled and
  // counted DEADLINE_EXCEEDED ("the client read nothing for ..."); zero = never.
  // Default: 10 min.
  absl::Duration write_timeout = absl::Minutes(10);
  // HTTP/2 keepalive. The server pings an idle connection every `keepalive_time` and
  // closes it if no answer comes within `keepalive_timeout` (dead peers). Clients may
  // ping as often as every `min_client_ping_interval`, also without calls in progress;
  // more often is answered with GOAWAY too_many_pings after 2 strikes.
  // Defaults: 60 s, 20 s, 5 s (a client keepalive_time of 10 s is tolerated).
  absl::Duration keepalive_time = absl::Seconds(60);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  absl::Duration min_client_ping_interval = absl::Seconds(5);
  // On Shutdown(): how long running calls may take before they are cancelled.
  // Default: 30 s.
  absl::Duration drain_timeout = absl::Seconds(30);
  // Store settings other than the path (which is db_path).
  storage::StoreOptions store;
  // Cluster mode (deploy/README.md "Scaling out"): the cluster config file
  // (server/CONFIG.md); `cluster` given directly (tests) takes precedence. Both unset:
  // single-node mode, the local store is the only store. Default: unset.
  std::string cluster_config_path;
  std::optional<cluster::ClusterOptions> cluster;
  // HAProxy agent-check address "host:port" (server/internal/health.h: each connection
  // gets "up ready", "down #reason" or "drain" and is closed); port 0 picks a free port
  // (Server::agent_port()). "" = none. Default: "".
  std::string agent_listen;
  // Cluster mode: etcd and S3 are probed this often; a failed probe turns health
  // NOT_SERVING (agent: down) until one succeeds. With base_mapped, also how often the
  // base files are checked for changes (besides inotify), and the most a detected change
  // takes to turn health NOT_SERVING. Default: 1 s.
  absl::Duration health_interval = absl::Seconds(1);

  // InvalidArgument naming the deltaserved flag that sets the field (server/CONFIG.md:
  // base_path --base, db_path --db, stall_after --stall-seconds, ...) and the value, e.g.
  // "--workers must be in [0, 1024], got 5000"; addresses as common::CheckListenAddress.
  absl::Status Validate() const;
};

class Server {
 public:
  // Loads the base (hashes it), opens the store and the config, starts the worker
  // pool, the gRPC server and the metrics endpoint, and preloads. Errors: those of
  // ModelReader::Open, DeltaStore::Open, LoadAuthConfig; InvalidArgument for bad
  // options; Unavailable if an address cannot be bound; NotFound for missing TLS files.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);

  // Shutdown(absl::ZeroDuration()) if not yet shut down.
  ~Server();

  // Graceful stop: health turns NOT_SERVING, new calls are refused, running calls get
  // up to `drain` to finish (then they are cancelled), the worker pool drains, the
  // metrics endpoint stops and the database is closed. Idempotent.
  void Shutdown(absl::Duration drain);
  // Blocks until Shutdown() has completed.
  void Wait();

  // Bound gRPC port and metrics port (0 if no metrics endpoint).
  int port() const;
  int metrics_port() const;
  // Bound agent-check port (0 if none).
  int agent_port() const;
  // Hex hash of the resident base (codec::BaseHashHex(ComputeBaseHash(base))).
  const std::string& base_hash_hex() const;
  // The Prometheus text exposition of every metric (what /metrics serves).
  std::string MetricsText() const;

  // Memory this server holds now, by owner, in bytes: what accounts for its RSS beside
  // the base mapping (for benchmarks and tests; issue 9's bound is base mapping + cache
  // budget + 256 MiB). Thread-safe.
  struct Memory {
    uint64_t cache_bytes = 0;        // merged tensors in the cache (at most cache_bytes)
    // Merged-tensor mappings (process-wide): live ones (in the cache, or held by streams
    // after the cache evicted them) and freed ones kept for reuse.
    uint64_t merged_live_bytes = 0;
    uint64_t merged_kept_bytes = 0;
    uint64_t upload_kept_bytes = 0;  // upload mappings kept (MADV_FREE, still resident)
    storage::StoreMemory store;      // RocksDB: block cache, memtables, table readers
  };
  Memory MemoryUsage() const;

  // How far --pretouch-cache got (ServerOptions::pretouch_cache), for benchmarks and
  // tests (deltaserved logs the same in its "pretouch" line when it ends).
  struct PretouchStats {
    bool enabled = false;  // pretouch_cache was set
    bool running = false;  // the thread is still pre-touching
    uint64_t planned_bytes = 0, bytes = 0, mappings = 0;
    double seconds = 0, cpu_seconds = 0;  // wall so far; the thread's CPU at the end
    std::string end;  // "" while running; "done", "no room", "stopped" or an error
  };
  PretouchStats pretouch_stats() const;

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The memory of merged tensors in this process (shared by every Server in it): buffers
// of at least 256 KiB are mappings; a cold tensor takes over the buffer of an evicted
// one of its size, and other evicted mappings are kept, up to a cap, for the next cold
// tensor of the same size (no page faults, no zero-fill). Counts since
// the process started. For benchmarks and tests. Thread-safe.
struct MergedMemoryStats {
  uint64_t handed_over = 0;  // buffers taken over whole from an evicted tensor
  uint64_t reused = 0;       // buffers given a kept mapping
  uint64_t mapped = 0;       // buffers given a new mapping
  uint64_t kept_bytes = 0;   // mappings kept for reuse now (pre-touched ones included)
  uint64_t cap_bytes = 0;    // the most kept at once without pre-touch
  // --pretouch-cache: buffers given a pre-touched mapping; pre-touched bytes kept now;
  // the allowance that lets the pool keep more than cap_bytes while the merged buffers
  // alive (handed_out_bytes) hold less than it.
  uint64_t pretouched_taken = 0;
  uint64_t pretouched_bytes = 0;
  uint64_t allowance_bytes = 0;
  uint64_t handed_out_bytes = 0;
};
MergedMemoryStats ProcessMergedMemoryStats();

// The glibc malloc arenas deltaserved allows itself (LimitMallocArenas, first thing in
// main). glibc's default is 8 per core, one per thread that allocates while the others'
// are busy, and each arena keeps the chunks freed into it: at the peak of two cold
// stream_bench pulls through a full 1 GiB cache (2 cores, 16 arenas possible), 117-136 MiB
// of the process's RSS was free memory spread over the arenas of gRPC, worker and client
// threads, beyond issue 9's bound (base mapping + cache budget + 256 MiB); with 1 / 2 / 4
// arenas 11 / 49 / 56 MiB (one run each, load 18). The server's large buffers (merged
// tensors, record blocks, uploads) are mappings of their own, outside the arenas; what
// the arenas serve is small and mostly served lock-free by glibc's per-thread caches.
inline constexpr int kServerMallocArenas = 2;

// Process-wide and permanent: at most `arenas` glibc malloc arenas (mallopt
// M_ARENA_MAX). Call before the process starts threads: arenas made already stay.
// False if `arenas` < 1 or glibc refused. Thread-safe (mallopt locks).
bool LimitMallocArenas(int arenas);

}  // namespace deltaserve::server

#endif  // DELTASERVE_SERVER_SERVER_H_

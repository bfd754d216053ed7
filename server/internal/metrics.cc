#include "server/internal/metrics.h"

#include "cluster/cluster_store.h"
#include "server/internal/process_metrics.h"

// The commit the binary was built from (`git rev-parse --short=12 HEAD` when CMake
// configured the build; server/CMakeLists.txt), "unknown" when not built from git.
#ifndef DELTASERVE_GIT_COMMIT
#define DELTASERVE_GIT_COMMIT "unknown"
#endif

namespace deltaserve::server::internal {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// Seconds, 100 us .. ~100 s: covers a unary call as well as a whole-model stream.
prometheus::Histogram::BucketBoundaries RequestBuckets() {
  return {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 100};
}
// Per-tensor decode/merge: 10 us .. 10 s.
prometheus::Histogram::BucketBoundaries TensorBuckets() {
  return {0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10};
}

}  // namespace

Metrics::Metrics(std::string_view version)
    : registry_(std::make_shared<prometheus::Registry>()),
      collectable_(std::make_shared<CombinedCollectable>(
          std::vector<std::shared_ptr<prometheus::Collectable>>{
              registry_, std::make_shared<ProcessCollector>()})) {
  prometheus::Registry& r = *registry_;
  requests_ = &BuildCounter()
                   .Name("deltaserve_requests_total")
                   .Help("Finished RPCs by method and gRPC status code")
                   .Register(r);
  request_duration_ = &BuildHistogram()
                           .Name("deltaserve_request_duration_seconds")
                           .Help("RPC latency from start to finish, by method")
                           .Register(r);
  streamed_bytes_ = &BuildCounter()
                         .Name("deltaserve_streamed_bytes_total")
                         .Help("Payload bytes sent by StreamWeights / StreamDelta")
                         .Register(r);
  uploaded_bytes_ = &BuildCounter()
                         .Name("deltaserve_uploaded_bytes_total")
                         .Help("Container bytes received by PutDelta")
                         .Register(r)
                         .Add({});
  decode_seconds_ = &BuildHistogram()
                         .Name("deltaserve_decode_seconds")
                         .Help("Per-tensor decode+merge+XXH3 time on the worker pool")
                         .Register(r)
                         .Add({}, TensorBuckets());
  merge_seconds_ = &BuildHistogram()
                        .Name("deltaserve_merge_seconds")
                        .Help("Per-tensor merge/cast time (fused with decode: same as "
                              "deltaserve_decode_seconds)")
                        .Register(r)
                        .Add({}, TensorBuckets());
  cache_hits_ = &BuildCounter()
                     .Name("deltaserve_cache_hits_total")
                     .Help("Merged-tensor cache hits")
                     .Register(r)
                     .Add({});
  cache_misses_ = &BuildCounter()
                       .Name("deltaserve_cache_misses_total")
                       .Help("Merged-tensor cache misses (tensor decoded)")
                       .Register(r)
                       .Add({});
  cache_evictions_ = &BuildCounter()
                          .Name("deltaserve_cache_evictions_total")
                          .Help("Merged tensors evicted from the cache")
                          .Register(r)
                          .Add({});
  cache_bytes_ = &BuildGauge()
                      .Name("deltaserve_cache_bytes")
                      .Help("Bytes of merged tensors held by the cache")
                      .Register(r)
                      .Add({});
  streams_in_flight_ = &BuildGauge()
                            .Name("deltaserve_streams_in_flight")
                            .Help("StreamWeights/StreamDelta calls in progress")
                            .Register(r)
                            .Add({});
  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(r).Add({});
  };
  streams_stalled_ = gauge("deltaserve_streams_stalled",
                           "Streams whose last write has waited for the client longer than "
                           "--stall-seconds");
  store_free_bytes_ = gauge("deltaserve_store_free_bytes",
                            "Free bytes on the database's filesystem");
  store_writes_blocked_ = gauge("deltaserve_store_writes_blocked",
                                "1 while commits are refused for lack of disk space "
                                "(free < --db-min-free-bytes, or the store opened read-only)");
  open_files_limit_ = gauge("deltaserve_open_files_limit",
                            "RLIMIT_NOFILE soft limit of the process (raised at start)");
  connections_ = gauge("deltaserve_connections",
                       "Client connections open (accepted and not yet closed)");
  connections_limit_ = gauge("deltaserve_connections_limit",
                             "Most client connections open at once (--max-connections, or "
                             "derived from RLIMIT_NOFILE)");
  connections_refused_ = &BuildCounter()
                              .Name("deltaserve_connections_refused_total")
                              .Help("Connections closed at once: reason=\"limit\" (the "
                                    "connection limit) or \"descriptors\" (accept failed "
                                    "with EMFILE/ENFILE)")
                              .Register(r);
  admitted_calls_ = &BuildGauge()
                         .Name("deltaserve_admitted_calls")
                         .Help("Calls holding an admission slot (--max-uploads, --max-streams)")
                         .Register(r);
  admission_rejected_ = &BuildCounter()
                             .Name("deltaserve_admission_rejected_total")
                             .Help("Calls refused RESOURCE_EXHAUSTED: admission limit reached")
                             .Register(r);
  merge_saturated_values_ =
      &BuildCounter()
           .Name("deltaserve_merge_saturated_values_total")
           .Help(
               "Merged values that a cast to the output dtype would have made infinite, "
               "saturated to its largest finite value")
           .Register(r);
  // The dtypes a cast can saturate, at 0 from the start: a series that appears only at
  // the first saturation cannot be graphed or alerted on with rate() before it.
  for (const char* dtype : {"F16", "BF16"}) merge_saturated_values_->Add({{"dtype", dtype}});
  tenant_tasks_ = &BuildGauge()
                       .Name("deltaserve_tenant_tasks")
                       .Help("Stored tasks per tenant")
                       .Register(r);
  tenant_stored_bytes_ = &BuildGauge()
                              .Name("deltaserve_tenant_stored_bytes")
                              .Help("Stored container bytes per tenant")
                              .Register(r);
  base_bytes_ = &BuildGauge()
                     .Name("deltaserve_base_bytes")
                     .Help("Bytes of the resident base model")
                     .Register(r)
                     .Add({});
  serving_ = gauge("deltaserve_serving",
                   "1 while health is SERVING (grpc.health.v1 and the agent check); 0 while "
                   "draining or, in cluster mode, while etcd or the object store is unreachable");
  base_tensors_ = &BuildGauge()
                       .Name("deltaserve_base_tensors")
                       .Help("Tensors of the resident base model")
                       .Register(r)
                       .Add({});
  BuildGauge()
      .Name("deltaserve_build_info")
      .Help("Build information; value is always 1")
      .Register(r)
      .Add({{"version", std::string(version)}, {"commit", DELTASERVE_GIT_COMMIT}})
      .Set(1);
}

// The counters advance by the difference of ClusterStats between two publications.
struct Metrics::ClusterMetrics {
  prometheus::Counter *hits, *misses, *fill_bytes, *fill_seconds, *evictions, *watch_drops,
      *store_errors, *gc_deleted, *gc_errors;
  prometheus::Gauge *cached_bytes, *watch_lag;
  cluster::ClusterStats last;
};

Metrics::~Metrics() = default;

void Metrics::RegisterBaseWatch() {
  if (base_changed_ != nullptr) return;
  prometheus::Registry& r = *registry_;
  base_changed_ = &BuildGauge()
                       .Name("deltaserve_base_changed")
                       .Help("--base-mapped: 1 once a mapped base file changed under the "
                             "daemon (health NOT_SERVING, pulls FAILED_PRECONDITION until a "
                             "restart); 0 before")
                       .Register(r)
                       .Add({});
  base_replaced_files_ = &BuildGauge()
                              .Name("deltaserve_base_replaced_files")
                              .Help("--base-mapped: base files whose path names another file, "
                                    "or none, since start (the mapped old bytes are still "
                                    "served; restart to load the new file)")
                              .Register(r)
                              .Add({});
  base_checks_ = &BuildCounter()
                      .Name("deltaserve_base_checks_total")
                      .Help("--base-mapped: checks of the mapped base files for changes "
                            "(periodic and on inotify events)")
                      .Register(r)
                      .Add({});
}

void Metrics::RegisterPretouch() {
  if (pretouch_bytes_ != nullptr) return;
  prometheus::Registry& r = *registry_;
  pretouch_bytes_ = &BuildGauge()
                         .Name("deltaserve_pretouch_bytes")
                         .Help("--pretouch-cache: bytes of merged-tensor memory faulted in "
                               "ahead of the first cold pulls, so far")
                         .Register(r)
                         .Add({});
  pretouch_seconds_ = &BuildGauge()
                           .Name("deltaserve_pretouch_seconds")
                           .Help("--pretouch-cache: wall seconds the pre-touch took (set "
                                 "when it ends; 0 before)")
                           .Register(r)
                           .Add({});
}

void Metrics::PublishCluster(const cluster::ClusterStats& stats) {
  prometheus::Registry& r = *registry_;
  if (!cluster_) {
    auto counter = [&](const char* name, const char* help) {
      return &BuildCounter().Name(name).Help(help).Register(r).Add({});
    };
    auto gauge = [&](const char* name, const char* help) {
      return &BuildGauge().Name(name).Help(help).Register(r).Add({});
    };
    cluster_ = std::make_unique<ClusterMetrics>(ClusterMetrics{
        counter("deltaserve_cluster_cache_hits_total",
                "Cluster mode: task reads served from this replica's container cache"),
        counter("deltaserve_cluster_cache_misses_total",
                "Cluster mode: task reads that fetched the container from the object store"),
        counter("deltaserve_cluster_fill_bytes_total",
                "Cluster mode: bytes fetched from the object store on misses (containers and side "
                "files)"),
        counter("deltaserve_cluster_fill_seconds_total",
                "Cluster mode: seconds spent on misses (fetch, digest check, local commit)"),
        counter("deltaserve_cluster_cache_evictions_total",
                "Cluster mode: tasks dropped from the container cache by its byte budget"),
        counter("deltaserve_cluster_watch_drops_total",
                "Cluster mode: cached tasks dropped because the etcd watch saw a delete or "
                "overwrite"),
        counter("deltaserve_cluster_object_store_errors_total",
                "Cluster mode: failed object-store calls (fetch, upload, probe), NotFound aside"),
        counter("deltaserve_cluster_gc_deleted_blobs_total",
                "Cluster mode: blobs deleted by this replica's garbage collection"),
        counter("deltaserve_cluster_gc_errors_total",
                "Cluster mode: garbage-collection runs that failed"),
        gauge("deltaserve_cluster_cached_bytes",
              "Cluster mode: bytes in this replica's cache (containers and side files)"),
        gauge("deltaserve_cluster_watch_lag_seconds",
              "Cluster mode: delay of the latest task put from its writer to this replica's "
              "etcd watch (writer's clock)"),
        {}});
  }
  ClusterMetrics& m = *cluster_;
  auto advance = [](prometheus::Counter* c, double now, double before) {
    if (now > before) c->Increment(now - before);
  };
  const cluster::ClusterStats& b = m.last;
  advance(m.hits, stats.hits, b.hits);
  advance(m.misses, stats.misses, b.misses);
  advance(m.fill_bytes, stats.fetched_bytes, b.fetched_bytes);
  advance(m.fill_seconds, stats.fill_seconds, b.fill_seconds);
  advance(m.evictions, stats.evictions, b.evictions);
  advance(m.watch_drops, stats.watch_drops, b.watch_drops);
  advance(m.store_errors, stats.object_store_errors, b.object_store_errors);
  advance(m.gc_deleted, stats.gc_deleted, b.gc_deleted);
  advance(m.gc_errors, stats.gc_errors, b.gc_errors);
  m.cached_bytes->Set(static_cast<double>(stats.cached_bytes));
  m.watch_lag->Set(stats.watch_lag_seconds);
  m.last = stats;
}

void Metrics::RecordRequest(std::string_view method, std::string_view code, double seconds) {
  requests_->Add({{"method", std::string(method)}, {"code", std::string(code)}}).Increment();
  request_duration_->Add({{"method", std::string(method)}}, RequestBuckets()).Observe(seconds);
}

void Metrics::AddStreamedBytes(std::string_view method, uint64_t bytes) {
  streamed_bytes_->Add({{"method", std::string(method)}}).Increment(static_cast<double>(bytes));
}

void Metrics::SetTenantUsage(std::string_view tenant, uint64_t tasks, uint64_t bytes) {
  tenant_tasks_->Add({{"tenant", std::string(tenant)}}).Set(static_cast<double>(tasks));
  tenant_stored_bytes_->Add({{"tenant", std::string(tenant)}}).Set(static_cast<double>(bytes));
}

prometheus::Gauge& Metrics::admitted_calls(std::string_view kind) {
  return admitted_calls_->Add({{"kind", std::string(kind)}});
}

prometheus::Counter& Metrics::connections_refused(std::string_view reason) {
  return connections_refused_->Add({{"reason", std::string(reason)}});
}

prometheus::Counter& Metrics::merge_saturated_values(std::string_view dtype) {
  return merge_saturated_values_->Add({{"dtype", std::string(dtype)}});
}

prometheus::Counter& Metrics::admission_rejected(std::string_view kind) {
  return admission_rejected_->Add({{"kind", std::string(kind)}});
}

}  // namespace deltaserve::server::internal

// Prometheus metrics of deltaserved (names fixed by the deployment: see
// server/CONFIG.md "Metrics"; dashboards and alerts depend on them, never rename).
// Thread-safe: prometheus-cpp metrics are atomic; family lookups take a lock.
#ifndef DELTASERVE_SERVER_INTERNAL_METRICS_H_
#define DELTASERVE_SERVER_INTERNAL_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace deltaserve::cluster {
struct ClusterStats;
}  // namespace deltaserve::cluster

namespace deltaserve::server::internal {

class Metrics {
 public:
  explicit Metrics(std::string_view version);
  ~Metrics();

  // The registry of the deltaserve_* metrics.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // What the metrics endpoint serves: the registry, then the process_* metrics
  // (server/internal/process_metrics.h), collected at each call.
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

  // One finished RPC: deltaserve_requests_total{method,code} and
  // deltaserve_request_duration_seconds{method}. `code` is a gRPC code name ("OK").
  void RecordRequest(std::string_view method, std::string_view code, double seconds);
  // deltaserve_streamed_bytes_total{method}.
  void AddStreamedBytes(std::string_view method, uint64_t bytes);
  prometheus::Counter& uploaded_bytes() { return *uploaded_bytes_; }
  prometheus::Histogram& decode_seconds() { return *decode_seconds_; }
  prometheus::Histogram& merge_seconds() { return *merge_seconds_; }
  prometheus::Counter& cache_hits() { return *cache_hits_; }
  prometheus::Counter& cache_misses() { return *cache_misses_; }
  prometheus::Counter& cache_evictions() { return *cache_evictions_; }
  prometheus::Gauge& cache_bytes() { return *cache_bytes_; }
  prometheus::Gauge& streams_in_flight() { return *streams_in_flight_; }
  // deltaserve_admitted_calls{kind} and deltaserve_admission_rejected_total{kind}: calls
  // holding an admission slot, and calls refused for lack of one (kind: "uploads",
  // "streams").
  prometheus::Gauge& admitted_calls(std::string_view kind);
  prometheus::Counter& admission_rejected(std::string_view kind);
  // deltaserve_merge_saturated_values_total{dtype}: merged values a cast to `dtype`
  // ("F16", "BF16") would have made infinite, saturated to its largest finite value.
  prometheus::Counter& merge_saturated_values(std::string_view dtype);
  prometheus::Gauge& base_bytes() { return *base_bytes_; }
  prometheus::Gauge& streams_stalled() { return *streams_stalled_; }
  prometheus::Gauge& store_free_bytes() { return *store_free_bytes_; }
  prometheus::Gauge& store_writes_blocked() { return *store_writes_blocked_; }
  prometheus::Gauge& open_files_limit() { return *open_files_limit_; }
  prometheus::Gauge& connections() { return *connections_; }
  prometheus::Gauge& connections_limit() { return *connections_limit_; }
  // deltaserve_connections_refused_total{reason}: "limit" or "descriptors".
  prometheus::Counter& connections_refused(std::string_view reason);
  prometheus::Gauge& base_tensors() { return *base_tensors_; }
  // deltaserve_serving: 1 while health is SERVING (server/internal/health.h).
  prometheus::Gauge& serving() { return *serving_; }
  // --base-mapped only (server/internal/base_watch.h): registers deltaserve_base_changed
  // (1 once a mapped base file changed: NOT_SERVING until a restart),
  // deltaserve_base_replaced_files (base paths that name another file, or none, since
  // start: still serving the mapped old bytes) and deltaserve_base_checks_total. A server
  // holding a copy of its base exports none of them. Idempotent; call before serving.
  void RegisterBaseWatch();
  prometheus::Gauge& base_changed() { return *base_changed_; }
  prometheus::Gauge& base_replaced_files() { return *base_replaced_files_; }
  prometheus::Counter& base_checks() { return *base_checks_; }
  // --pretouch-cache only (server/internal/pretouch.h): registers deltaserve_pretouch_bytes
  // and deltaserve_pretouch_seconds (a server without the flag exports neither, as single
  // node exports no deltaserve_cluster_*). Idempotent; call before serving.
  void RegisterPretouch();
  // REQUIRES: RegisterPretouch() was called.
  prometheus::Gauge& pretouch_bytes() { return *pretouch_bytes_; }
  prometheus::Gauge& pretouch_seconds() { return *pretouch_seconds_; }
  // Cluster mode: the deltaserve_cluster_* metrics from a ClusterStore's counts (the
  // counters advance by the difference from the previous call). Not thread-safe against
  // itself: one caller (the housekeeping thread).
  void PublishCluster(const cluster::ClusterStats& stats);
  // deltaserve_tenant_tasks{tenant} / deltaserve_tenant_stored_bytes{tenant}.
  void SetTenantUsage(std::string_view tenant, uint64_t tasks, uint64_t bytes);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> collectable_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* request_duration_;
  prometheus::Family<prometheus::Counter>* streamed_bytes_;
  prometheus::Family<prometheus::Gauge>* tenant_tasks_;
  prometheus::Family<prometheus::Gauge>* tenant_stored_bytes_;
  prometheus::Family<prometheus::Gauge>* admitted_calls_;
  prometheus::Family<prometheus::Counter>* admission_rejected_;
  prometheus::Family<prometheus::Counter>* merge_saturated_values_;
  prometheus::Counter* uploaded_bytes_;
  prometheus::Histogram* decode_seconds_;
  prometheus::Histogram* merge_seconds_;
  prometheus::Counter* cache_hits_;
  prometheus::Counter* cache_misses_;
  prometheus::Counter* cache_evictions_;
  prometheus::Gauge* cache_bytes_;
  prometheus::Gauge* streams_in_flight_;
  prometheus::Gauge* base_bytes_;
  prometheus::Gauge* streams_stalled_;
  prometheus::Gauge* store_free_bytes_;
  prometheus::Gauge* store_writes_blocked_;
  prometheus::Gauge* open_files_limit_;
  prometheus::Gauge* connections_;
  prometheus::Gauge* connections_limit_;
  prometheus::Family<prometheus::Counter>* connections_refused_;
  prometheus::Gauge* base_tensors_;
  prometheus::Gauge* serving_;
  prometheus::Gauge* base_changed_ = nullptr;  // RegisterBaseWatch
  prometheus::Gauge* base_replaced_files_ = nullptr;
  prometheus::Counter* base_checks_ = nullptr;
  prometheus::Gauge* pretouch_bytes_ = nullptr;  // RegisterPretouch
  prometheus::Gauge* pretouch_seconds_ = nullptr;
  // deltaserve_cluster_*: registered on the first PublishCluster (single node has none).
  struct ClusterMetrics;
  std::unique_ptr<ClusterMetrics> cluster_;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_METRICS_H_

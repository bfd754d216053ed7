#include "server/server.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "codec/delta_codec.h"
#include "codec/safetensors.h"
#include "common/address.h"
#include "common/file.h"
#include "common/mapping_pool.h"
#include "common/status_macros.h"
#include "common/usage_error.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "prometheus/text_serializer.h"
#include "proto/protocol.h"
#include "server/internal/base_check.h"
#include "server/internal/base_watch.h"
#include "server/internal/context.h"
#include "server/internal/fd_limit.h"
#include "server/internal/health.h"
#include "server/internal/listener.h"
#include "server/internal/log.h"
#include "server/internal/merged_memory.h"
#include "server/internal/merged_tensors.h"
#include "server/internal/metrics_http.h"
#include "server/internal/pretouch.h"
#include "server/internal/service.h"

namespace deltaserve::server {

namespace {

// Threads of the control pool (ServiceContext::control).
constexpr size_t kControlThreads = 2;

constexpr char kVersion[] = DELTASERVE_VERSION;  // project(... VERSION) in CMake

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert_path.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = common::ReadFileToString(o.tls_cert_path);
  if (!cert.ok()) return common::Annotate(cert.status(), "--tls-cert (TLS certificate)");
  absl::StatusOr<std::string> key = common::ReadFileToString(o.tls_key_path);
  if (!key.ok()) return common::Annotate(key.status(), "--tls-key (TLS key)");
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::Status ServerOptions::Validate() const {
  // Messages name deltaserved's flags (each also DELTASERVE_<FLAG>), which is what a user
  // of the daemon set; server/server.h names the flag of each field.
  if (base_path.empty()) return absl::InvalidArgumentError("--base is required");
  if (db_path.empty()) return absl::InvalidArgumentError("--db is required");
  if (absl::Status s = common::CheckListenAddress(listen, /*allow_unix=*/true); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--listen: ", s.message()));
  }
  for (const auto& [flag, value] : {std::pair{"--metrics-listen", &metrics_listen},
                                    std::pair{"--agent-listen", &agent_listen}}) {
    if (value->empty()) continue;  // off
    if (absl::Status s = common::CheckListenAddress(*value, /*allow_unix=*/false); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": ", s.message(), "; \"\" turns it off"));
    }
  }
  if (tls_cert_path.empty() != tls_key_path.empty()) {
    return absl::InvalidArgumentError("set both --tls-cert and --tls-key, or neither");
  }
  if (workers < 0 || workers > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("--workers must be in [0, 1024], got ", workers));
  }
  DS_RETURN_IF_ERROR(proto::ValidateChunkBytes(chunk_bytes, "--chunk-bytes"));
  if (prefetch_tensors < 0 || prefetch_tensors > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prefetch-tensors must be in [0, 64], got ", prefetch_tensors));
  }
  if (prefetch_bytes > (uint64_t{16} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prefetch-bytes must be <= 16 GiB (17179869184), got ", prefetch_bytes));
  }
  if (max_upload_bytes == 0) {
    return absl::InvalidArgumentError("--max-upload-bytes must be > 0");
  }
  if (stall_after <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--stall-seconds must be > 0, got ", absl::ToDoubleSeconds(stall_after)));
  }
  if (write_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--write-timeout-seconds must be >= 0, got ", absl::ToDoubleSeconds(write_timeout)));
  }
  for (const auto& [flag, value] :
       {std::pair{"--keepalive-seconds", keepalive_time},
        std::pair{"--keepalive-timeout-seconds", keepalive_timeout}}) {
    if (value < absl::Seconds(1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " must be >= 1, got ", absl::ToDoubleSeconds(value)));
    }
  }
  if (min_client_ping_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--min-client-ping-seconds must be >= 0, got ",
                     absl::ToDoubleSeconds(min_client_ping_interval)));
  }
  if (max_uploads < 1 || max_uploads > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-uploads must be in [1, 4096], got ", max_uploads));
  }
  if (max_connections < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-connections must be >= 0, got ", max_connections));
  }
  if (max_streams < 1 || max_streams > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-streams must be in [1, 65536], got ", max_streams));
  }
  if (grpc_memory_bytes < (16u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--grpc-memory-bytes must be >= 16 MiB (16777216), got ", grpc_memory_bytes));
  }
  if (health_interval < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--health-interval-seconds must be >= 0.01, got ",
                     absl::ToDoubleSeconds(health_interval)));
  }
  if (drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--drain-seconds must be >= 0, got ", absl::ToDoubleSeconds(drain_timeout)));
  }
  for (const std::string& p : preload) {
    std::vector<std::string> parts = absl::StrSplit(p, '/');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--preload: '", p, "' is not tenant/task"));
    }
  }
  storage::StoreOptions store_options = store;
  store_options.path = db_path;
  return store_options.Validate();
}

struct Server::Impl {
  ServerOptions options;
  std::unique_ptr<codec::ModelReader> base;
  std::unique_ptr<internal::Metrics> metrics;
  // --base-mapped only; uses base and metrics (declared before it).
  std::unique_ptr<internal::BaseWatch> base_watch;
  std::unique_ptr<internal::Authenticator> auth;
  std::unique_ptr<storage::DeltaStore> store;
  std::unique_ptr<internal::TensorCache> cache;
  std::unique_ptr<internal::ThreadPool> pool;
  std::unique_ptr<internal::ThreadPool> control_pool;
  std::unique_ptr<internal::ThreadPool> fill_pool;  // cluster mode only
  internal::TaskVersions versions;
  internal::DrainGate drain;
  internal::StallWatch stalls;
  // Cluster mode only; uses store, cache and versions (declared before it).
  std::unique_ptr<cluster::ClusterStore> cluster;
  // Housekeeping: disk gauges, stalled streams, returning freed memory to the system.
  std::thread housekeeper;
  absl::Notification stop_housekeeping;
  std::unique_ptr<internal::AdmissionLimit> uploads, streams;
  // Before the gRPC server (destroyed after it): outlives every PutDelta call.
  std::unique_ptr<internal::UploadBufferPool> upload_buffers;
  internal::ServiceContext ctx;
  std::unique_ptr<internal::DeltaServiceImpl> service;
  std::unique_ptr<grpc::Server> grpc_server;
  // TCP listen addresses: our accept loop hands connections to gRPC through `acceptor`
  // (null for addresses gRPC listens on itself, e.g. unix:).
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor;
  std::unique_ptr<internal::Listener> listener;
  int max_connections = 0;
  std::unique_ptr<internal::MetricsHttpServer> metrics_http;
  // gRPC health and the agent-check port; after grpc_server (it uses its health service).
  std::unique_ptr<internal::HealthMonitor> health;
  int port = 0;
  int metrics_port = 0;
  // --pretouch-cache; started once serving, stopped first on Shutdown.
  std::unique_ptr<internal::Pretoucher> pretoucher;

  absl::Mutex mu;
  bool shutting_down ABSL_GUARDED_BY(mu) = false;
  absl::Notification stopped;

  absl::Status Init();
  // --base-mapped: starts base_watch and its metrics, sets ctx.base_watch.
  absl::Status WatchBase();
  // Cluster mode: opens the ClusterStore over `store` and sets ctx.cluster.
  absl::Status OpenCluster();
  void Preload();
  void Housekeep();
};

absl::Status Server::Impl::OpenCluster() {
  std::optional<cluster::ClusterOptions> cluster_options = options.cluster;
  if (!cluster_options && !options.cluster_config_path.empty()) {
    DS_ASSIGN_OR_RETURN(cluster_options,
                        common::Annotate(cluster::LoadClusterOptions(options.cluster_config_path),
                                "--cluster-config"));
  }
  if (!cluster_options) return absl::OkStatus();
  DS_ASSIGN_OR_RETURN(
      cluster, cluster::ClusterStore::Open(
                   *cluster_options, store.get(),
                   [this](const cluster::TaskName& name, const std::function<absl::Status()>& fn) {
                     return versions.Mutate(name.tenant, name.task, cache.get(), fn);
                   }));
  ctx.cluster = cluster.get();
  fill_pool = std::make_unique<internal::ThreadPool>(
      static_cast<size_t>(cluster_options->fill_threads), "ds-fill");
  ctx.fills = fill_pool.get();
  internal::LogInfo("cluster mode", {{"s3", cluster_options->s3.endpoint},
                                     {"bucket", cluster_options->s3.bucket},
                                     {"etcd", cluster_options->etcd_endpoint},
                                     {"prefix", cluster_options->etcd_prefix},
                                     {"cache_bytes", std::to_string(cluster_options->cache_bytes)}});
  return absl::OkStatus();
}

absl::Status Server::Impl::WatchBase() {
  metrics->RegisterBaseWatch();
  internal::BaseWatch::Options w;
  w.files = base->files();
  w.interval = options.health_interval;
  // A ctime that moved alone (chmod, a rename over the path, ...): the bytes decide.
  w.verify = [this] { return codec::ComputeBaseHash(*base) == ctx.base_hash; };
  w.on_change = [this](const absl::Status&) { metrics->base_changed().Set(1); };
  w.on_check = [this] { metrics->base_checks().Increment(); };
  w.on_replaced = [this] { metrics->base_replaced_files().Increment(); };
  DS_ASSIGN_OR_RETURN(base_watch, internal::BaseWatch::Start(std::move(w)));
  ctx.base_watch = base_watch.get();
  internal::LogInfo("base watch", {{"files", std::to_string(base->files().size())},
                                   {"inotify", base_watch->inotify() ? "on" : "off"},
                                   {"interval_s", std::to_string(absl::ToDoubleSeconds(
                                                      options.health_interval))}});
  return absl::OkStatus();
}

absl::Status Server::Impl::Init() {
  DS_RETURN_IF_ERROR(options.Validate());
  metrics = std::make_unique<internal::Metrics>(kVersion);

  std::optional<AuthConfig> config = options.auth;
  if (!config && !options.config_path.empty()) {
    DS_ASSIGN_OR_RETURN(config, common::Annotate(LoadAuthConfig(options.config_path), "--config"));
  }
  if (config) {
    if (const std::vector<std::string> owners = config->PlaceholderTokenOwners(); !owners.empty()) {
      internal::LogWarn(absl::StrCat("PLACEHOLDER TOKENS: the tokens of ", absl::StrJoin(owners, ", "),
                                     " still hold CHANGE-ME, as in the example config anyone can "
                                     "read; replace them (deploy/README.md, Quick start)"));
    }
  }
  auth = std::make_unique<internal::Authenticator>(config);
  if (auth->open()) {
    internal::LogWarn("NO AUTHENTICATION: no --config given; every caller is tenant "
                      "'default'. Do not expose this server beyond localhost.");
  }

  absl::Time t0 = absl::Now();
  {
    absl::StatusOr<std::unique_ptr<codec::ModelReader>> opened = codec::ModelReader::Open(
        options.base_path, options.base_mapped ? common::MappedFile::Residency::kMap
                                               : common::MappedFile::Residency::kCopy);
    if (!opened.ok()) {
      // A --base that is not a model stays a usage error (deltaserved exits 2).
      return common::KeepUsageMark(opened.status(), common::Annotate(opened.status(), "--base"));
    }
    base = std::move(*opened);
  }
  ctx.base_hash = codec::ComputeBaseHash(*base);
  ctx.base_hash_hex = codec::BaseHashHex(ctx.base_hash);
  metrics->base_bytes().Set(static_cast<double>(base->total_bytes()));
  metrics->base_tensors().Set(static_cast<double>(base->tensors().size()));
  internal::LogInfo("base loaded",
                    {{"path", options.base_path}, {"hash", ctx.base_hash_hex},
                     {"tensors", std::to_string(base->tensors().size())},
                     {"bytes", std::to_string(base->total_bytes())},
                     {"residency", options.base_mapped ? "mapped" : "copied"},
                     {"ms", std::to_string(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  if (options.base_mapped) DS_RETURN_IF_ERROR(WatchBase());

  // Descriptors: raise the soft limit and give RocksDB a bounded share, so that sockets
  // cannot starve it (an EMFILE inside RocksDB stops its writes).
  const internal::FdBudget fds = internal::RaiseFdLimit();
  metrics->open_files_limit().Set(static_cast<double>(fds.soft));
  storage::StoreOptions store_options = options.store;
  store_options.path = options.db_path;
  if (store_options.max_open_files == -1) {
    store_options.max_open_files = fds.rocksdb_max_open_files;
  }
  max_connections = options.max_connections == 0
                        ? fds.max_connections
                        : std::min(options.max_connections, fds.max_connections);
  metrics->connections_limit().Set(max_connections);
  internal::LogInfo("file descriptors",
                    {{"soft_limit_at_start", std::to_string(fds.soft_before)},
                     {"soft_limit", std::to_string(fds.soft)},
                     {"hard_limit", std::to_string(fds.hard)},
                     {"open", std::to_string(fds.open)},
                     {"reserved", std::to_string(fds.reserve)},
                     {"rocksdb_max_open_files", std::to_string(store_options.max_open_files)},
                     {"max_connections", std::to_string(max_connections)}});
  DS_ASSIGN_OR_RETURN(store, common::Annotate(storage::DeltaStore::Open(store_options), "--db"));
  if (store->read_only()) {
    internal::LogError("store opened READ-ONLY: less than --db-min-free-bytes free on the "
                       "database's filesystem; uploads and deletes are refused until a "
                       "restart with free space",
                       {{"db", options.db_path},
                        {"min_free_bytes", std::to_string(store_options.min_free_bytes)}});
  }
  // A database filled against another base would only answer FAILED_PRECONDITION: say so
  // at start, when the wrong --base is still easy to see.
  DS_ASSIGN_OR_RETURN(internal::OtherBaseTasks other_base,
                      internal::FindTasksOfAnotherBase(*store, ctx.base_hash));
  internal::WarnTasksOfAnotherBase(other_base, options.base_path, ctx.base_hash_hex);

  cache = std::make_unique<internal::TensorCache>(options.cache_bytes, metrics.get());
  size_t workers = options.workers > 0 ? static_cast<size_t>(options.workers)
                                       : std::max(1u, std::thread::hardware_concurrency());
  pool = std::make_unique<internal::ThreadPool>(workers, "ds-worker");
  // Control calls are short metadata work; two threads so that one slow RocksDB read
  // does not hold the others.
  control_pool = std::make_unique<internal::ThreadPool>(kControlThreads, "ds-control");

  ctx.options = &options;
  ctx.store = store.get();
  ctx.base = base.get();
  ctx.cache = cache.get();
  ctx.pool = pool.get();
  ctx.control = control_pool.get();
  ctx.metrics = metrics.get();
  ctx.auth = auth.get();
  ctx.versions = &versions;
  ctx.drain = &drain;
  ctx.stalls = &stalls;
  uploads = std::make_unique<internal::AdmissionLimit>(
      "uploads", "--max-uploads", options.max_uploads, &metrics->admitted_calls("uploads"),
      &metrics->admission_rejected("uploads"));
  streams = std::make_unique<internal::AdmissionLimit>(
      "streams", "--max-streams", options.max_streams, &metrics->admitted_calls("streams"),
      &metrics->admission_rejected("streams"));
  ctx.uploads = uploads.get();
  if (options.upload_buffer_cache_bytes > 0) {
    upload_buffers =
        std::make_unique<internal::UploadBufferPool>(options.upload_buffer_cache_bytes);
    ctx.upload_buffers = upload_buffers.get();
  }
  ctx.streams = streams.get();
  DS_RETURN_IF_ERROR(OpenCluster());

  // Per-tenant gauges for every configured tenant and every tenant with data.
  std::vector<std::string> tenants = auth->TenantNames();
  DS_ASSIGN_OR_RETURN(std::vector<std::string> stored, store->ListTenants());
  tenants.insert(tenants.end(), stored.begin(), stored.end());
  for (const std::string& t : tenants) ctx.PublishTenantUsage(t);

  Preload();

  if (!options.metrics_listen.empty()) {
    DS_ASSIGN_OR_RETURN(metrics_http, internal::MetricsHttpServer::Start(
                                          options.metrics_listen, metrics->collectable()));
    metrics_port = metrics_http->port();
  }

  DS_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds, Credentials(options));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  service = std::make_unique<internal::DeltaServiceImpl>(&ctx);
  grpc::ServerBuilder builder;
  if (internal::IsTcpListenAddress(options.listen)) {
    // Our own accept loop (server/internal/listener.h): gRPC 1.51's listener stops for
    // good after one accept() EMFILE and has no connection limit.
    DS_ASSIGN_OR_RETURN(listener, internal::Listener::Bind(options.listen, "--listen"));
    port = listener->port();
    acceptor = builder.experimental().AddExternalConnectionAcceptor(
        grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD, creds);
  } else {
    builder.AddListeningPort(options.listen, creds, &port);
  }
  // gRPC sets SO_REUSEPORT by default: a second daemon on a busy port would silently
  // share it and clients would reach either one at random.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service.get());
  grpc::ResourceQuota quota("deltaserved");
  quota.Resize(static_cast<size_t>(options.grpc_memory_bytes));
  builder.SetResourceQuota(quota);
  builder.SetMaxReceiveMessageSize(proto::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(proto::kMaxMessageBytes);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> counters;
  counters.push_back(drain.NewInterceptorFactory("/deltaserve.v1.DeltaService/"));
  builder.experimental().SetInterceptorCreators(std::move(counters));
  // Keepalive policy (server/CONFIG.md "Connections"): explicit, so that a client with
  // a 10 s keepalive is not sent GOAWAY too_many_pings (gRPC's default minimum is 5 min).
  auto ms = [](absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); };
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(options.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(options.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             ms(options.min_client_ping_interval));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  grpc_server = builder.BuildAndStart();
  if (!grpc_server || port == 0) {
    // Only gRPC's own listener (unix: addresses) gets here: TCP addresses are bound by
    // Listener::Bind, which names the errno.
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen,
                     ": gRPC could not bind it (a missing directory, no permission, or a "
                     "socket in use?) (set --listen)"));
  }
  if (listener) {
    listener->Start(acceptor.get(), max_connections,
                    {&metrics->connections(), &metrics->connections_refused("limit"),
                     &metrics->connections_refused("descriptors")});
  }
  internal::HealthMonitor::Options health_options;
  health_options.agent_listen = options.agent_listen;
  health_options.interval = options.health_interval;
  health_options.serving = &metrics->serving();
  if (cluster || base_watch) {
    // A changed base is checked first: it holds until a restart, whatever etcd and S3 do.
    health_options.probe = [c = cluster.get(), w = base_watch.get()] {
      if (w != nullptr && w->changed()) return w->status();
      return c != nullptr ? c->Probe() : absl::OkStatus();
    };
  }
  DS_ASSIGN_OR_RETURN(health, internal::HealthMonitor::Start(std::move(health_options),
                                                             grpc_server->GetHealthCheckService()));
  housekeeper = std::thread([this] { Housekeep(); });
  internal::LogInfo("serving", {{"listen", options.listen}, {"port", std::to_string(port)},
                                {"metrics_port", std::to_string(metrics_port)},
                                {"agent_port", std::to_string(health->agent_port())},
                                {"tls", options.tls_cert_path.empty() ? "off" : "on"},
                                {"workers", std::to_string(workers)},
                                {"cache_bytes", std::to_string(options.cache_bytes)},
                                {"upload_buffer_cache_bytes",
                                 std::to_string(options.upload_buffer_cache_bytes)},
                                {"pretouch_cache", options.pretouch_cache ? "on" : "off"}});
  if (options.pretouch_cache) {
    // After "serving": the pre-touch must not delay readiness (server/internal/pretouch.h).
    pretoucher = std::make_unique<internal::Pretoucher>(
        &internal::MergedMemoryPool::Process(),
        internal::PlanPretouch(base->tensors(), options.cache_bytes), options.cache_bytes,
        metrics.get());
  }
  return absl::OkStatus();
}

void Server::Impl::Housekeep() {
  int64_t begun_at_trim = 0;
  do {
    if (absl::StatusOr<storage::DiskSpace> disk = store->GetDiskSpace(); disk.ok()) {
      metrics->store_free_bytes().Set(static_cast<double>(disk->free_bytes));
      metrics->store_writes_blocked().Set(disk->writes_blocked ? 1 : 0);
    }
    metrics->streams_stalled().Set(stalls.Scan(options.stall_after, options.write_timeout));
    if (cluster) metrics->PublishCluster(cluster->stats());
    if (listener) listener->Sweep();
    // After a burst of calls, give the freed heap back: glibc keeps freed chunks of its
    // arenas (measured: RSS stayed at ~270 MiB after 64 concurrent pulls, idle 37 MiB).
    // Once idle after any call since the last trim: a burst that began and ended between
    // two rounds (a fast machine) used to be missed, its memory kept for good.
    const int64_t begun = drain.begun();
    if (begun != begun_at_trim && drain.in_progress() == 0) {
      malloc_trim(0);
      begun_at_trim = begun;
    }
  } while (!stop_housekeeping.WaitForNotificationWithTimeout(absl::Seconds(1)));
}

void Server::Impl::Preload() {
  for (const std::string& spec : options.preload) {
    std::vector<std::string> parts = absl::StrSplit(spec, '/');
    absl::Time t0 = absl::Now();
    absl::StatusOr<uint64_t> bytes =
        internal::PinTask(ctx, parts[0], parts[1], std::nullopt);
    if (!bytes.ok()) {
      internal::LogWarn("preload skipped", {{"task", spec}, {"error", bytes.status().ToString()}});
      continue;
    }
    internal::LogInfo("preloaded", {{"task", spec}, {"bytes", std::to_string(*bytes)},
                                    {"ms", std::to_string(absl::ToInt64Milliseconds(
                                               absl::Now() - t0))}});
  }
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  DS_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

void Server::Shutdown(absl::Duration drain) {
  {
    absl::MutexLock lock(&impl_->mu);
    if (impl_->shutting_down) return;
    impl_->shutting_down = true;
  }
  Impl& s = *impl_;
  const absl::Time t0 = absl::Now();
  // Unmaps the pre-touched memory no tensor took (the pool is the process's).
  if (s.pretoucher) s.pretoucher->Stop();
  internal::LogInfo("draining", {{"deadline_s", std::to_string(absl::ToDoubleSeconds(drain))},
                                 {"calls", std::to_string(s.drain.in_progress())}});
  // New DeltaService calls get UNAVAILABLE; then health answers NOT_SERVING for as long
  // as calls drain (the gRPC server keeps serving health checks until it stops) and the
  // agent answers "drain": HAProxy sends this replica no new calls. In this order, a
  // client that reads NOT_SERVING (or "drain") knows that new calls are refused.
  s.drain.StartDrain();
  if (s.health) s.health->StartDrain();
  const int64_t left = s.drain.WaitIdle(t0 + drain);
  // Closes the connections gracefully (what finished calls wrote but clients have not
  // read yet is still delivered) and cancels whatever still runs at the deadline;
  // returns when every call is done. New connections are refused from here on.
  if (s.listener) s.listener->Stop();
  s.grpc_server->Shutdown(absl::ToChronoTime(t0 + drain));
  s.stop_housekeeping.Notify();
  if (s.housekeeper.joinable()) s.housekeeper.join();
  // Closures still queued (finishing reactors) run first; control work may still queue
  // data work (a stream's first fetches), so the control pool stops first.
  s.control_pool->Shutdown();
  if (s.fill_pool) s.fill_pool->Shutdown();  // queues onto both pools: between them
  s.pool->Shutdown();
  s.metrics_http.reset();
  s.health.reset();   // its probe uses the cluster store
  s.cluster.reset();  // its watch thread writes to the store
  s.store.reset();  // every TaskReader is gone with its reactor
  internal::LogInfo("stopped", {{"cancelled_calls", std::to_string(left)},
                               {"ms", std::to_string(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  s.stopped.Notify();
}

void Server::Wait() { impl_->stopped.WaitForNotification(); }

int Server::port() const { return impl_->port; }
int Server::metrics_port() const { return impl_->metrics_port; }
int Server::agent_port() const { return impl_->health ? impl_->health->agent_port() : 0; }
const std::string& Server::base_hash_hex() const { return impl_->ctx.base_hash_hex; }

std::string Server::MetricsText() const {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(impl_->metrics->collectable()->Collect());
}

Server::Memory Server::MemoryUsage() const {
  Memory m;
  m.cache_bytes = impl_->cache->bytes();
  const common::MappingPool::Stats merged = internal::MergedMemoryPool::Process().stats();
  m.merged_live_bytes = merged.handed_out_bytes;
  m.merged_kept_bytes = merged.kept_bytes;
  if (impl_->upload_buffers) m.upload_kept_bytes = impl_->upload_buffers->cached_bytes();
  m.store = impl_->store->MemoryUsage();
  return m;
}

bool LimitMallocArenas(int arenas) { return arenas >= 1 && mallopt(M_ARENA_MAX, arenas) == 1; }

Server::PretouchStats Server::pretouch_stats() const {
  PretouchStats stats;
  if (!impl_->pretoucher) return stats;
  const internal::PretouchProgress p = impl_->pretoucher->progress();
  stats.enabled = true;
  stats.running = p.running;
  stats.planned_bytes = p.planned_bytes;
  stats.bytes = p.bytes;
  stats.mappings = p.mappings;
  stats.seconds = p.seconds;
  stats.cpu_seconds = p.cpu_seconds;
  stats.end = p.end;
  return stats;
}

MergedMemoryStats ProcessMergedMemoryStats() {
  const internal::MergedMemoryPool& pool = internal::MergedMemoryPool::Process();
  const common::MappingPool::Stats s = pool.stats();  // one snapshot
  MergedMemoryStats m;
  m.handed_over = pool.handed_over();
  m.reused = s.reused;
  m.mapped = s.mapped;
  m.kept_bytes = s.kept_bytes;
  m.cap_bytes = pool.max_kept_bytes();
  m.pretouched_taken = s.pretouched_taken;
  m.pretouched_bytes = s.pretouched_bytes;
  m.allowance_bytes = s.allowance_bytes;
  m.handed_out_bytes = s.handed_out_bytes;
  return m;
}

}  // namespace deltaserve::server

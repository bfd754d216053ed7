#include "cluster/cluster_store.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace deltaserve::cluster {
namespace {

// Pause between watch attempts after an error (etcd restarting, network).
constexpr absl::Duration kWatchRetry = absl::Milliseconds(500);

// Longest wait of a push for a collection deleting its blob (a collector that died
// leaves its tombstone; the push then checks the blob anyway).
constexpr absl::Duration kCollectionWait = absl::Seconds(30);

// Timeouts of Probe(): short, so that a health check sees a hung dependency quickly.
constexpr int kProbeTimeoutS = 2;

S3Options ProbeS3Options(S3Options o) {
  o.connect_timeout_s = kProbeTimeoutS;
  o.request_timeout_s = kProbeTimeoutS;
  return o;
}

// The local copy `info` is the version `ptr` names: same push time, container size and
// side files (the container's digest is not kept locally; an overwrite within the same
// second by a container of the same size with the same side files is not told apart).
bool Matches(const storage::TaskInfo& info, const TaskPointer& ptr) {
  if (info.created_unix != ptr.created_unix || info.total_bytes != ptr.size ||
      info.side_files.size() != ptr.side_files.size()) {
    return false;
  }
  for (size_t i = 0; i < info.side_files.size(); ++i) {
    if (!(info.side_files[i] == ptr.side_files[i].file)) return false;
  }
  return true;
}

TaskName SplitKey(const std::string& joined) {
  size_t slash = joined.find('/');
  return TaskName{joined.substr(0, slash), joined.substr(slash + 1)};
}

}  // namespace

absl::Status ClusterOptions::Validate() const {
  DS_RETURN_IF_ERROR(s3.Validate());
  DS_RETURN_IF_ERROR(blobs.Validate());
  if (etcd_endpoint.rfind("http://", 0) != 0 && etcd_endpoint.rfind("https://", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cluster: etcd endpoint must start with http:// or https:// (got '", etcd_endpoint, "')"));
  }
  if (etcd_prefix.empty() || etcd_prefix.back() != '/') {
    return absl::InvalidArgumentError("cluster: etcd prefix must end with '/'");
  }
  if (gc_grace_s < 0) return absl::InvalidArgumentError("cluster: gc_grace_s must be >= 0");
  if (gc_interval_s < 0) return absl::InvalidArgumentError("cluster: gc_interval_s must be >= 0");
  if (fill_threads < 1 || fill_threads > 256) {
    return absl::InvalidArgumentError("cluster: fill_threads must be 1..256");
  }
  return absl::OkStatus();
}

ClusterStore::ClusterStore(const ClusterOptions& options, storage::DeltaStore* local, Mutate mutate)
    : options_(options),
      local_(local),
      mutate_(std::move(mutate)),
      etcd_(options.etcd_endpoint),
      probe_etcd_(options.etcd_endpoint, kProbeTimeoutS),
      probe_s3_(ProbeS3Options(options.s3)),
      pointers_(&etcd_, options.etcd_prefix),
      blobs_(options.s3, options.blobs),
      lru_(options.cache_bytes) {}

absl::StatusOr<std::unique_ptr<ClusterStore>> ClusterStore::Open(const ClusterOptions& options,
                                                                 storage::DeltaStore* local,
                                                                 Mutate mutate) {
  DS_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<ClusterStore> cs(new ClusterStore(options, local, std::move(mutate)));
  DS_RETURN_IF_ERROR(cs->blobs_.s3().CreateBucket());
  DS_ASSIGN_OR_RETURN(auto pointers, cs->pointers_.List(""));
  {
    absl::MutexLock lock(&cs->mu_);
    for (auto& [name, ptr] : pointers) cs->watched_[name] = ptr;
  }
  // Local copies: keep those that match a pointer (oldest first into the LRU, so that
  // the newest are kept when the budget is smaller than before), drop the rest.
  DS_ASSIGN_OR_RETURN(std::vector<std::string> tenants, local->ListTenants());
  std::vector<std::pair<int64_t, std::pair<TaskName, uint64_t>>> keep;
  for (const std::string& tenant : tenants) {
    DS_ASSIGN_OR_RETURN(std::vector<storage::TaskInfo> tasks, local->ListTasks(tenant));
    for (const storage::TaskInfo& info : tasks) {
      TaskName name{info.tenant, info.task};
      std::optional<TaskPointer> ptr;
      {
        absl::MutexLock lock(&cs->mu_);
        auto it = cs->watched_.find(name);
        if (it != cs->watched_.end()) ptr = it->second;
      }
      if (ptr.has_value() && Matches(info, *ptr)) {
        keep.push_back({info.created_unix, {name, info.StoredBytes()}});
      } else {
        DS_RETURN_IF_ERROR(cs->DropLocal(name));
      }
    }
  }
  std::sort(keep.begin(), keep.end());
  for (const auto& [created, entry] : keep) {
    for (const std::string& evicted : cs->lru_.Touch(entry.first.Join(), entry.second)) {
      DS_RETURN_IF_ERROR(cs->DropLocal(SplitKey(evicted)));
    }
  }
  cs->watcher_ = std::thread([p = cs.get()] { p->WatchLoop(); });
  if (options.gc_interval_s > 0) cs->collector_ = std::thread([p = cs.get()] { p->GcLoop(); });
  return cs;
}

ClusterStore::~ClusterStore() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
  if (collector_.joinable()) collector_.join();
}

void ClusterStore::GcLoop() {
  while (!stop_) {
    absl::Time next = absl::Now() + absl::Seconds(options_.gc_interval_s);
    while (!stop_ && absl::Now() < next) absl::SleepFor(absl::Milliseconds(50));
    if (stop_) return;
    absl::StatusOr<int> deleted = CollectGarbage();
    absl::MutexLock lock(&mu_);
    if (deleted.ok()) {
      stats_.gc_deleted += static_cast<uint64_t>(*deleted);
    } else {
      ++stats_.gc_errors;  // the next run tries again
    }
  }
}

ClusterStore::FillLock::FillLock(ClusterStore* store, const TaskName& name)
    : store_(store), name_(name) {
  {
    absl::MutexLock lock(&store_->mu_);
    std::unique_ptr<FillSlot>& slot = store_->fills_[name_];
    if (slot == nullptr) slot = std::make_unique<FillSlot>();
    ++slot->users;
    slot_ = slot.get();
  }
  slot_->mu.Lock();
}

ClusterStore::FillLock::~FillLock() {
  slot_->mu.Unlock();
  absl::MutexLock lock(&store_->mu_);
  if (--slot_->users == 0) store_->fills_.erase(name_);
}

bool ClusterStore::LocalMatches(const TaskName& name, const TaskPointer& ptr) const {
  absl::StatusOr<storage::TaskInfo> info = local_->GetTask(name.tenant, name.task);
  return info.ok() && Matches(*info, ptr);
}

absl::Status ClusterStore::DropLocal(const TaskName& name) {
  lru_.Remove(name.Join());
  return mutate_(name, [&]() -> absl::Status {
    absl::Status s = local_->DeleteTask(name.tenant, name.task);
    return absl::IsNotFound(s) ? absl::OkStatus() : s;
  });
}

absl::Status ClusterStore::Fill(const TaskName& name, const codec::ContainerReader& container,
                                absl::Span<const storage::SideFile> side_files,
                                const TaskPointer& ptr) {
  // Delete first: an identical container committed again would keep the old copy's
  // creation time (kUnchanged) and never match the pointer.
  DS_RETURN_IF_ERROR(mutate_(name, [&]() -> absl::Status {
    absl::Status s = local_->DeleteTask(name.tenant, name.task);
    if (!s.ok() && !absl::IsNotFound(s)) return s;
    storage::CommitOptions options;
    options.overwrite = true;
    options.created_unix = ptr.created_unix;
    options.side_files = side_files;
    return local_->CommitTask(name.tenant, name.task, container, options).status();
  }));
  std::vector<std::string> evicted = lru_.Touch(name.Join(), ptr.StoredBytes());
  for (const std::string& key : evicted) DS_RETURN_IF_ERROR(DropLocal(SplitKey(key)));
  absl::MutexLock lock(&mu_);
  stats_.evictions += evicted.size();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ClusterStore::PutBlobs(
    absl::Span<const uint8_t> container_bytes, absl::Span<const storage::SideFile> side_files) {
  std::vector<std::string> digests;
  absl::StatusOr<std::string> digest = blobs_.Put(container_bytes);
  if (!digest.ok()) return CountS3Error(digest.status());
  digests.push_back(*std::move(digest));
  for (const storage::SideFile& f : side_files) {
    digest = blobs_.Put(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(f.data.data()), f.data.size()));
    if (!digest.ok()) return CountS3Error(digest.status());
    digests.push_back(*std::move(digest));
  }
  return digests;
}

absl::Status ClusterStore::FetchAndFill(const TaskName& name, const TaskPointer& ptr) {
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::string> fetched = blobs_.Get(ptr.digest, ptr.size);
  if (!fetched.ok()) return CountS3Error(fetched.status());
  const std::string& bytes = *fetched;
  uint64_t total = bytes.size();
  auto span = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  absl::StatusOr<codec::ContainerReader> container = codec::ContainerReader::Parse(span);
  if (!container.ok()) {
    return absl::DataLossError(absl::StrCat("blob ", ptr.digest, " of task '", name.task,
                                            "': ", container.status().message()));
  }
  std::vector<std::string> side_data;
  side_data.reserve(ptr.side_files.size());
  std::vector<storage::SideFile> side_files;
  for (const SideFileRef& f : ptr.side_files) {
    absl::StatusOr<std::string> data = blobs_.Get(f.digest, f.file.bytes);
    if (!data.ok()) return CountS3Error(data.status());
    side_data.push_back(*std::move(data));
    side_files.push_back(storage::SideFile{f.file.name, side_data.back()});
    total += f.file.bytes;
    // The blob matched its SHA-256; the pointer's XXH3 must describe the same bytes.
    if (storage::SideFileChecksum(side_data.back()) != f.file.xxh3_64) {
      return absl::DataLossError(absl::StrCat("side file '", f.file.name, "' of task '", name.task,
                                              "': blob ", f.digest,
                                              " does not match the pointer's XXH3-64"));
    }
  }
  DS_RETURN_IF_ERROR(Fill(name, *container, side_files, ptr));
  absl::MutexLock lock(&mu_);
  ++stats_.misses;
  stats_.fetched_bytes += total;
  stats_.fill_seconds += absl::ToDoubleSeconds(absl::Now() - t0);
  return absl::OkStatus();
}

absl::StatusOr<PointerOutcome> ClusterStore::Publish(const TaskName& name,
                                                     absl::Span<const uint8_t> container_bytes,
                                                     const codec::ContainerReader& container,
                                                     absl::Span<const storage::SideFile> side_files,
                                                     TaskPointer ptr, bool overwrite,
                                                     uint64_t quota_bytes) {
  ptr.size = container_bytes.size();
  ptr.side_files.clear();
  for (storage::SideFileEntry& f : storage::DescribeSideFiles(side_files)) {
    ptr.side_files.push_back(SideFileRef{std::move(f), ""});  // digests: below
  }
  if (quota_bytes > 0) {
    DS_ASSIGN_OR_RETURN(auto tasks, pointers_.List(name.tenant));
    uint64_t used = 0;
    for (const auto& [n, p] : tasks) {
      if (!(n == name)) used += p.StoredBytes();
    }
    if (used + ptr.StoredBytes() > quota_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("tenant '", name.tenant, "': quota of ", quota_bytes, " bytes: ", used,
                       " used in the cluster, task '", name.task, "' needs ", ptr.StoredBytes()));
    }
  }
  DS_ASSIGN_OR_RETURN(std::vector<std::string> digests, PutBlobs(container_bytes, side_files));
  ptr.digest = digests[0];
  for (size_t i = 0; i < ptr.side_files.size(); ++i) ptr.side_files[i].digest = digests[i + 1];
  ptr.written_ms = absl::ToUnixMillis(absl::Now());
  DS_ASSIGN_OR_RETURN(PointerOutcome outcome, pointers_.Create(name, ptr, overwrite));
  // A collection of one of these very blobs (identical content pushed again after its
  // pointer went) may be deleting it right now: wait for it, then make sure the blobs
  // exist.
  for (const std::string& digest : ptr.Digests()) {
    for (absl::Time give_up = absl::Now() + kCollectionWait;;) {
      DS_ASSIGN_OR_RETURN(bool collecting, pointers_.BeingCollected(digest));
      if (!collecting || absl::Now() > give_up) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  DS_RETURN_IF_ERROR(PutBlobs(container_bytes, side_files).status());
  if (outcome == PointerOutcome::kUnchanged) {
    DS_ASSIGN_OR_RETURN(ptr, pointers_.Get(name));  // its creation time is the first push's
  }
  {
    absl::MutexLock lock(&mu_);
    watched_[name] = ptr;
  }
  FillLock fill(this, name);
  if (!LocalMatches(name, ptr)) DS_RETURN_IF_ERROR(Fill(name, container, side_files, ptr));
  return outcome;
}

absl::Status ClusterStore::Ensure(const TaskName& name) {
  std::optional<TaskPointer> ptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = watched_.find(name);
    if (it != watched_.end()) ptr = it->second;
  }
  if (!ptr.has_value()) {
    // Not (yet) seen by the watch: etcd decides (a push elsewhere a moment ago).
    absl::StatusOr<TaskPointer> got = pointers_.Get(name);
    if (absl::IsNotFound(got.status())) {
      DS_RETURN_IF_ERROR(DropLocal(name));
      return got.status();
    }
    if (!got.ok()) return got.status();
    ptr = *got;
  }
  auto hit = [&]() -> absl::Status {
    std::vector<std::string> evicted = lru_.Touch(name.Join(), ptr->StoredBytes());
    for (const std::string& key : evicted) DS_RETURN_IF_ERROR(DropLocal(SplitKey(key)));
    absl::MutexLock lock(&mu_);
    ++stats_.hits;
    stats_.evictions += evicted.size();
    return absl::OkStatus();
  };
  if (LocalMatches(name, *ptr)) return hit();
  FillLock fill(this, name);
  if (LocalMatches(name, *ptr)) return hit();
  return FetchAndFill(name, *ptr);
}

bool ClusterStore::Cached(const TaskName& name) const {
  std::optional<TaskPointer> ptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = watched_.find(name);
    if (it == watched_.end()) return false;
    ptr = it->second;
  }
  return LocalMatches(name, *ptr);
}

absl::StatusOr<std::vector<std::pair<TaskName, TaskPointer>>> ClusterStore::List(
    absl::string_view tenant) const {
  return pointers_.List(tenant);
}

absl::StatusOr<TaskPointer> ClusterStore::Delete(const TaskName& name) {
  DS_ASSIGN_OR_RETURN(TaskPointer ptr, pointers_.Get(name));
  DS_RETURN_IF_ERROR(pointers_.Delete(name));
  Apply(name, std::nullopt);
  return ptr;
}

absl::StatusOr<int> ClusterStore::CollectGarbage() {
  return pointers_.CollectGarbage(absl::ToUnixSeconds(absl::Now()), options_.gc_grace_s,
                                  [&](const std::string& digest) { return blobs_.Delete(digest); });
}

absl::Status ClusterStore::Probe() {
  if (absl::StatusOr<std::optional<KeyValue>> got =
          probe_etcd_.Get(absl::StrCat(options_.etcd_prefix, "health"));
      !got.ok()) {
    return absl::UnavailableError(absl::StrCat("etcd ", etcd_.endpoint(), ": ",
                                               got.status().message()));
  }
  absl::StatusOr<uint64_t> head = probe_s3_.HeadObject("health/probe");
  if (!head.ok() && !absl::IsNotFound(head.status())) {
    CountS3Error(head.status()).IgnoreError();
    return absl::UnavailableError(absl::StrCat("object store ", options_.s3.endpoint, ": ",
                                               head.status().message()));
  }
  return absl::OkStatus();
}

absl::Status ClusterStore::CountS3Error(absl::Status s) {
  if (!s.ok() && !absl::IsNotFound(s)) {
    absl::MutexLock lock(&mu_);
    ++stats_.object_store_errors;
  }
  return s;
}

ClusterStats ClusterStore::stats() const {
  const uint64_t cached = lru_.bytes();
  absl::MutexLock lock(&mu_);
  ClusterStats out = stats_;
  out.cached_bytes = cached;
  return out;
}

void ClusterStore::Apply(const TaskName& name, const std::optional<TaskPointer>& ptr) {
  bool drop = false;
  {
    absl::MutexLock lock(&mu_);
    if (ptr.has_value()) {
      watched_[name] = *ptr;
    } else {
      watched_.erase(name);
    }
  }
  if (!lru_.Contains(name.Join())) return;
  drop = !ptr.has_value() || !LocalMatches(name, *ptr);
  if (!drop) return;
  // A failed local delete leaves a copy that Ensure() will not serve (it no longer
  // matches the pointer) and that Open() drops at the next start.
  DropLocal(name).IgnoreError();
  absl::MutexLock lock(&mu_);
  ++stats_.watch_drops;
}

void ClusterStore::WatchLoop() {
  while (!stop_) {
    int64_t revision = 0;
    absl::StatusOr<std::vector<std::pair<TaskName, TaskPointer>>> all =
        pointers_.List("", &revision);
    if (all.ok()) {
      std::set<TaskName> now;
      for (const auto& [name, ptr] : *all) {
        now.insert(name);
        Apply(name, ptr);
      }
      std::vector<TaskName> gone;
      {
        absl::MutexLock lock(&mu_);
        for (const auto& [name, ptr] : watched_) {
          if (now.count(name) == 0) gone.push_back(name);
        }
      }
      for (const TaskName& name : gone) Apply(name, std::nullopt);
      etcd_
          .Watch(
              pointers_.TasksPrefix(), revision + 1,
              [&](const std::vector<WatchEvent>& events) {
                for (const WatchEvent& e : events) {
                  std::optional<TaskName> name = pointers_.ParseKey(e.kv.key);
                  if (!name.has_value()) continue;
                  if (e.type == WatchEvent::Type::kDelete) {
                    Apply(*name, std::nullopt);
                    continue;
                  }
                  absl::StatusOr<TaskPointer> ptr = DecodePointer(e.kv.value, e.kv.key);
                  if (ptr.ok() && ptr->written_ms > 0) {
                    const int64_t lag_ms = absl::ToUnixMillis(absl::Now()) - ptr->written_ms;
                    absl::MutexLock lock(&mu_);
                    stats_.watch_lag_seconds = static_cast<double>(std::max<int64_t>(lag_ms, 0)) / 1e3;
                  }
                  // A pointer that does not parse: forget it (Ensure asks etcd and
                  // reports the DataLoss to the caller).
                  Apply(*name, ptr.ok() ? std::optional<TaskPointer>(*ptr) : std::nullopt);
                }
                return !stop_;
              },
              stop_)
          .IgnoreError();  // any end of the stream: list again
    }
    for (absl::Time until = absl::Now() + kWatchRetry; !stop_ && absl::Now() < until;) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
}

}  // namespace deltaserve::cluster

// EtcdClient: the etcd v3 calls the cluster mode needs, over etcd's JSON gateway
// (HTTP/1.1 + JSON on the client URL: /v3/kv/range, /v3/kv/put, /v3/kv/txn,
// /v3/kv/deleterange, /v3/watch; etcd 3.4 as in Debian 12's etcd-server) with libcurl
// and nlohmann-json. Keys and values are bytes (base64 on the wire).
//
// Thread safety: thread-safe; every call uses its own curl handle. Calls block.
//
// Errors: Unavailable (etcd unreachable, 5xx, timeouts), InvalidArgument (etcd refused
// the request: 4xx), Internal (an answer that is not the JSON etcd sends).
#ifndef DELTASERVE_CLUSTER_ETCD_CLIENT_H_
#define DELTASERVE_CLUSTER_ETCD_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace deltaserve::cluster {

struct KeyValue {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0;
};

struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;  // the store's revision the answer was read at
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // for kDelete: key and mod_revision only
};

class EtcdClient {
 public:
  // `endpoint`: "http://host:port" (a client URL). `timeout_s`: per unary call.
  explicit EtcdClient(std::string endpoint, int timeout_s = 5)
      : endpoint_(std::move(endpoint)), timeout_s_(timeout_s) {}

  // The key's value, or nullopt if absent (RangeResult::revision in *revision if given).
  absl::StatusOr<std::optional<KeyValue>> Get(absl::string_view key,
                                              int64_t* revision = nullptr) const;
  // Every key starting with `prefix`, sorted by key.
  absl::StatusOr<RangeResult> GetPrefix(absl::string_view prefix) const;
  // Unconditional put. Returns the new revision.
  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) const;
  // One transaction: put only if the key does not exist (create_revision == 0).
  // true: created; false: the key existed, nothing written (its value in *existing).
  absl::StatusOr<bool> PutIfAbsent(absl::string_view key, absl::string_view value,
                                   std::optional<KeyValue>* existing = nullptr) const;
  // One transaction: put only if the key's mod_revision is `mod_revision` (0: absent).
  absl::StatusOr<bool> PutIfRevision(absl::string_view key, absl::string_view value,
                                     int64_t mod_revision) const;
  // Deletes the key; returns how many keys were deleted (0 or 1).
  absl::StatusOr<int64_t> Delete(absl::string_view key) const;

  // Watches every key starting with `prefix` from `start_revision` on, calling
  // `on_events` with each batch etcd sends, in revision order, until `stop` becomes
  // true (checked every 50 ms), the connection drops, or `on_events` returns
  // false. Returns OK when stopped; Unavailable when the stream broke (the caller
  // re-lists and watches again); OutOfRange when start_revision was compacted away.
  absl::Status Watch(absl::string_view prefix, int64_t start_revision,
                     const std::function<bool(const std::vector<WatchEvent>&)>& on_events,
                     const std::atomic<bool>& stop) const;

  const std::string& endpoint() const { return endpoint_; }

 private:
  // POSTs `body` to `path`; the parsed JSON answer as text.
  absl::StatusOr<std::string> Post(absl::string_view path, const std::string& body) const;

  std::string endpoint_;
  int timeout_s_;
};

// The smallest key greater than every key starting with `prefix` (etcd's range_end).
std::string PrefixEnd(absl::string_view prefix);

}  // namespace deltaserve::cluster

#endif  // DELTASERVE_CLUSTER_ETCD_CLIENT_H_

#include "cluster/etcd_client.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace deltaserve::cluster {
namespace {

using json = nlohmann::json;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string B64(absl::string_view s) { return absl::Base64Escape(s); }

absl::StatusOr<std::string> UnB64(const json& j, absl::string_view what) {
  if (j.is_null()) return std::string();  // the gateway leaves out empty fields
  if (!j.is_string()) return absl::InternalError(absl::StrCat("etcd: ", what, " not a string"));
  std::string out;
  if (!absl::Base64Unescape(j.get<std::string>(), &out)) {
    return absl::InternalError(absl::StrCat("etcd: ", what, " is not base64"));
  }
  return out;
}

// etcd's JSON gateway writes int64 as strings ("5"); absent = 0.
int64_t Int(const json& obj, const char* field) {
  if (!obj.is_object() || !obj.contains(field)) return 0;
  const json& j = obj[field];
  int64_t v = 0;
  if (j.is_string()) return absl::SimpleAtoi(j.get<std::string>(), &v) ? v : 0;
  if (j.is_number_integer()) return j.get<int64_t>();
  return 0;
}

absl::StatusOr<KeyValue> ParseKv(const json& j) {
  KeyValue kv;
  DS_ASSIGN_OR_RETURN(kv.key, UnB64(j.value("key", json()), "key"));
  DS_ASSIGN_OR_RETURN(kv.value, UnB64(j.value("value", json()), "value"));
  kv.create_revision = Int(j, "create_revision");
  kv.mod_revision = Int(j, "mod_revision");
  return kv;
}

size_t AppendBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// One etcd answer, parsed: InternalError if it is not JSON, InvalidArgument if etcd
// answered with an error object.
absl::StatusOr<json> ParseAnswer(const std::string& text, absl::string_view path) {
  absl::StatusOr<json> j = common::ParseJson(text, absl::StrCat("etcd ", path));
  if (!j.ok()) return absl::InternalError(j.status().message());
  if (j->is_object() && j->contains("error")) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd ", path, ": ", j->value("error", std::string("?"))));
  }
  return j;
}

json TxnPutIf(absl::string_view key, absl::string_view value, const char* target,
              int64_t revision) {
  std::string k = B64(key);
  json cmp = {{"key", k}, {"target", target}, {"result", "EQUAL"}};
  cmp[target == std::string("CREATE") ? "create_revision" : "mod_revision"] =
      std::to_string(revision);
  return {{"compare", json::array({cmp})},
          {"success", json::array({{{"request_put", {{"key", k}, {"value", B64(value)}}}}})},
          {"failure", json::array({{{"request_range", {{"key", k}}}}})}};
}

struct WatchState {
  std::string buffer;
  const std::function<bool(const std::vector<WatchEvent>&)>* on_events;
  const std::atomic<bool>* stop;
  absl::Status error;
  bool done = false;  // on_events returned false or an error was met
};

// Handles every complete line (one JSON message each) in state->buffer.
void DrainWatchLines(WatchState* st) {
  size_t nl;
  while (!st->done && (nl = st->buffer.find('\n')) != std::string::npos) {
    std::string line = st->buffer.substr(0, nl);
    st->buffer.erase(0, nl + 1);
    if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
    absl::StatusOr<json> msg = ParseAnswer(line, "/v3/watch");
    if (!msg.ok()) {
      st->error = msg.status();
      st->done = true;
      return;
    }
    const json& result = msg->value("result", json::object());
    if (Int(result, "compact_revision") > 0) {
      st->error = absl::OutOfRangeError(absl::StrCat("etcd watch: start revision compacted (now ",
                                                     Int(result, "compact_revision"), ")"));
      st->done = true;
      return;
    }
    if (result.value("canceled", false)) {
      st->error = absl::UnavailableError("etcd watch: cancelled by the server");
      st->done = true;
      return;
    }
    std::vector<WatchEvent> events;
    for (const json& e : result.value("events", json::array())) {
      WatchEvent ev;
      ev.type = e.value("type", std::string("PUT")) == "DELETE" ? WatchEvent::Type::kDelete
                                                                : WatchEvent::Type::kPut;
      absl::StatusOr<KeyValue> kv = ParseKv(e.value("kv", json::object()));
      if (!kv.ok()) {
        st->error = kv.status();
        st->done = true;
        return;
      }
      ev.kv = std::move(*kv);
      events.push_back(std::move(ev));
    }
    if (!events.empty() && !(*st->on_events)(events)) st->done = true;
  }
}

size_t WatchWrite(char* data, size_t size, size_t n, void* user) {
  auto* st = static_cast<WatchState*>(user);
  st->buffer.append(data, size * n);
  DrainWatchLines(st);
  return st->done ? 0 : size * n;  // 0 aborts the transfer
}

int WatchProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* st = static_cast<WatchState*>(user);
  return st->stop->load() ? 1 : 0;
}

}  // namespace

std::string PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::StatusOr<std::string> EtcdClient::Post(absl::string_view path,
                                             const std::string& body) const {
  GlobalInit();
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return absl::ResourceExhaustedError("etcd: curl_easy_init failed");
  std::string url = absl::StrCat(endpoint_, path), answer;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(timeout_s_));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(timeout_s_));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("etcd ", endpoint_, path, ": ", curl_easy_strerror(rc)));
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code >= 500) {
    return absl::UnavailableError(absl::StrCat("etcd ", path, ": HTTP ", code, ": ", answer));
  }
  if (code != 200) {
    return absl::InvalidArgumentError(absl::StrCat("etcd ", path, ": HTTP ", code, ": ", answer));
  }
  return answer;
}

absl::StatusOr<std::optional<KeyValue>> EtcdClient::Get(absl::string_view key,
                                                        int64_t* revision) const {
  DS_ASSIGN_OR_RETURN(std::string text, Post("/v3/kv/range", json{{"key", B64(key)}}.dump()));
  DS_ASSIGN_OR_RETURN(json j, ParseAnswer(text, "/v3/kv/range"));
  if (revision != nullptr) *revision = Int(j.value("header", json::object()), "revision");
  const json& kvs = j.value("kvs", json::array());
  if (kvs.empty()) return std::optional<KeyValue>();
  DS_ASSIGN_OR_RETURN(KeyValue kv, ParseKv(kvs[0]));
  return std::optional<KeyValue>(std::move(kv));
}

absl::StatusOr<RangeResult> EtcdClient::GetPrefix(absl::string_view prefix) const {
  json req = {{"key", B64(prefix)},
              {"range_end", B64(PrefixEnd(prefix))},
              {"sort_order", "ASCEND"},
              {"sort_target", "KEY"}};
  DS_ASSIGN_OR_RETURN(std::string text, Post("/v3/kv/range", req.dump()));
  DS_ASSIGN_OR_RETURN(json j, ParseAnswer(text, "/v3/kv/range"));
  RangeResult out;
  out.revision = Int(j.value("header", json::object()), "revision");
  for (const json& kv : j.value("kvs", json::array())) {
    DS_ASSIGN_OR_RETURN(KeyValue parsed, ParseKv(kv));
    out.kvs.push_back(std::move(parsed));
  }
  return out;
}

absl::StatusOr<int64_t> EtcdClient::Put(absl::string_view key, absl::string_view value) const {
  DS_ASSIGN_OR_RETURN(std::string text,
                      Post("/v3/kv/put", json{{"key", B64(key)}, {"value", B64(value)}}.dump()));
  DS_ASSIGN_OR_RETURN(json j, ParseAnswer(text, "/v3/kv/put"));
  return Int(j.value("header", json::object()), "revision");
}

absl::StatusOr<bool> EtcdClient::PutIfAbsent(absl::string_view key, absl::string_view value,
                                             std::optional<KeyValue>* existing) const {
  DS_ASSIGN_OR_RETURN(std::string text,
                      Post("/v3/kv/txn", TxnPutIf(key, value, "CREATE", 0).dump()));
  DS_ASSIGN_OR_RETURN(json j, ParseAnswer(text, "/v3/kv/txn"));
  bool succeeded = j.value("succeeded", false);
  if (!succeeded && existing != nullptr) {
    existing->reset();
    for (const json& r : j.value("responses", json::array())) {
      const json& kvs = r.value("response_range", json::object()).value("kvs", json::array());
      if (!kvs.empty()) {
        DS_ASSIGN_OR_RETURN(KeyValue kv, ParseKv(kvs[0]));
        *existing = std::move(kv);
      }
    }
  }
  return succeeded;
}

absl::StatusOr<bool> EtcdClient::PutIfRevision(absl::string_view key, absl::string_view value,
                                               int64_t mod_revision) const {
  json txn = mod_revision == 0 ? TxnPutIf(key, value, "CREATE", 0)
                               : TxnPutIf(key, value, "MOD", mod_revision);
  DS_ASSIGN_OR_RETURN(std::string text, Post("/v3/kv/txn", txn.dump()));
  DS_ASSIGN_OR_RETURN(json j, ParseAnswer(text, "/v3/kv/txn"));
  return j.value("succeeded", false);
}

absl::StatusOr<int64_t> EtcdClient::Delete(absl::string_view key) const {
  DS_ASSIGN_OR_RETURN(std::string text, Post("/v3/kv/deleterange", json{{"key", B64(key)}}.dump()));
  DS_ASSIGN_OR_RETURN(json j, ParseAnswer(text, "/v3/kv/deleterange"));
  return Int(j, "deleted");
}

absl::Status EtcdClient::Watch(absl::string_view prefix, int64_t start_revision,
                               const std::function<bool(const std::vector<WatchEvent>&)>& on_events,
                               const std::atomic<bool>& stop) const {
  GlobalInit();
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return absl::ResourceExhaustedError("etcd: curl_easy_init failed");
  json req = {{"create_request",
               {{"key", B64(prefix)},
                {"range_end", B64(PrefixEnd(prefix))},
                {"start_revision", std::to_string(start_revision)}}}};
  std::string body = req.dump(), url = absl::StrCat(endpoint_, "/v3/watch");
  WatchState st;
  st.on_events = &on_events;
  st.stop = &stop;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(timeout_s_));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, WatchWrite);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, WatchProgress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &st);
  // A silent stream is still alive; TCP keepalive finds a dead etcd.
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
  // Not curl_easy_perform: on a silent stream it calls the progress callback (which
  // checks `stop`) only about once a second, so every replica took up to a second to
  // close. A multi handle polled every 50 ms sees `stop` within that.
  std::unique_ptr<CURLM, void (*)(CURLM*)> multi(curl_multi_init(),
                                                 [](CURLM* m) { curl_multi_cleanup(m); });
  if (!multi) return absl::ResourceExhaustedError("etcd: curl_multi_init failed");
  CURLM* m = multi.get();
  curl_multi_add_handle(m, c);
  CURLcode rc = CURLE_OK;
  for (int running = 1; running > 0 && !stop.load();) {
    CURLMcode mc = curl_multi_perform(m, &running);
    if (mc == CURLM_OK && running > 0) mc = curl_multi_poll(m, nullptr, 0, 50, nullptr);
    if (mc != CURLM_OK) {
      curl_multi_remove_handle(m, c);
      return absl::UnavailableError(
          absl::StrCat("etcd watch ", endpoint_, ": ", curl_multi_strerror(mc)));
    }
  }
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(m, &queued)) {
    if (msg->msg == CURLMSG_DONE) rc = msg->data.result;
  }
  curl_multi_remove_handle(m, c);
  if (stop.load()) return absl::OkStatus();
  if (!st.error.ok()) return st.error;
  if (st.done) return absl::OkStatus();  // on_events returned false
  return absl::UnavailableError(
      absl::StrCat("etcd watch ", endpoint_, ": stream ended: ", curl_easy_strerror(rc)));
}

}  // namespace deltaserve::cluster

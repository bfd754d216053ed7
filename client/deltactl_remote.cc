// deltactl's remote subcommands: push, list, info, delete, pull, pull-delta, get-base,
// admin checkpoint.
// They talk to a deltaserved through DeltaClient (client/client.h). Every one takes
//   --server ADDR (env DELTASERVE_SERVER, default 127.0.0.1:50051)
//   --token TOKEN (env DELTASERVE_TOKEN)   --tenant NAME (env DELTASERVE_TENANT; admins)
//   --tls / --tls-ca PEM                   --timeout SECONDS (unary calls and uploads)
//   --json
// after the subcommand or before it (`deltactl --server X list`); one given after the
// subcommand wins over one given before it, which wins over the variable.
// Results go to stdout (--json for machine-readable output); progress goes to stderr.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/internal/deltactl_command.h"
#include "client/internal/pull_memory.h"
#include "codec/delta_codec.h"
#include "common/address.h"
#include "common/cli_validators.h"
#include "common/json.h"
#include "common/names.h"
#include "common/plural.h"
#include "common/status_macros.h"
#include "deltaserve/v1/delta_service.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "proto/protocol.h"

namespace deltaserve::client {
namespace {

struct RemoteFlags {
  std::string server = "127.0.0.1:50051";
  std::string token;
  std::string tenant;
  bool tls = false;
  std::string tls_ca;
  double timeout_seconds = 60;
  // HTTP/2 keepalive during a call (ClientOptions::keepalive_time, keepalive_timeout).
  double keepalive_seconds = 30;
  double keepalive_timeout_seconds = 20;
  bool json = false;
};

struct TaskFlags {
  std::string task;
  std::string in, out;
  bool overwrite = false;
  bool tensors = false;
  std::string dtype;
  std::vector<std::string> include;
  std::string include_regex;
  std::string resume_from;
  std::string out_dir;  // pull: Hugging Face checkpoint directory instead of --out
  uint64_t shard_bytes = kDefaultShardBytes;
  uint32_t streams = 1;  // pull: parallel StreamWeights calls on tensor ranges
  SideFileFlags side_files;  // push
};

// The connection flags and their variables (read by ResolveRemoteFlags, not by CLI11:
// CLI11 2.1 would apply a variable to the options of every subcommand, used or not, and
// could not tell a flag given before the subcommand from a variable).
constexpr char kServerEnv[] = "DELTASERVE_SERVER";
constexpr char kTokenEnv[] = "DELTASERVE_TOKEN";
constexpr char kTenantEnv[] = "DELTASERVE_TENANT";
// Not DELTASERVE_KEEPALIVE_SECONDS: deltaserved's own server-side setting.
constexpr char kKeepaliveEnv[] = "DELTASERVE_CLIENT_KEEPALIVE_SECONDS";
constexpr char kKeepaliveTimeoutEnv[] = "DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS";
// The longest --timeout: a year (gRPC deadlines further out behave as none).
constexpr double kMaxTimeoutSeconds = 365 * 86400;

// The checks of --keepalive-seconds and --keepalive-timeout-seconds (and their variables).
CLI::Validator KeepaliveValidator() {
  return common::NumberInValidator("0 (no pings) or a number of seconds", 0, false,
                                   kMaxTimeoutSeconds, false);
}
CLI::Validator KeepaliveTimeoutValidator() {
  return common::NumberInValidator("a positive number of seconds", 0, true, kMaxTimeoutSeconds,
                                   false);
}

// Adds the remote flags to `app`: a remote subcommand, or deltactl itself (flags before
// the subcommand).
void AddRemoteFlags(CLI::App* app, RemoteFlags* f) {
  const std::string group = "Server options (before or after the subcommand)";
  app->add_option("--server", f->server,
                  absl::StrCat("deltaserved address host[:port] (port ",
                               common::kDefaultServerPort, " if none), [v6]:port or unix:PATH (env ",
                               kServerEnv, ")"))
      ->capture_default_str()
      ->group(group);
  app->add_option("--token", f->token, absl::StrCat("Bearer token (env ", kTokenEnv, ")"))
      ->group(group);
  app->add_option("--tenant", f->tenant,
                  absl::StrCat("Tenant to act on (admin tokens; default: own; env ", kTenantEnv,
                               ")"))
      ->group(group);
  common::AddBooleanFlag(app, "--tls", f->tls, "Use TLS with the system roots")->group(group);
  app->add_option("--tls-ca", f->tls_ca, "Use TLS trusting this PEM root certificate")
      ->group(group);
  app->add_option("--timeout", f->timeout_seconds,
                  "Seconds allowed for each request and for a whole push (a pull has no limit)")
      ->check(common::NumberInValidator("a positive number of seconds", 0, true, kMaxTimeoutSeconds,
                                        false))
      ->capture_default_str()
      ->group(group);
  app->add_option("--keepalive-seconds", f->keepalive_seconds,
                  absl::StrCat("During a call, ping the server after this many seconds without "
                               "data; 0: never (env ", kKeepaliveEnv, ")"))
      ->check(KeepaliveValidator())
      ->capture_default_str()
      ->group(group);
  app->add_option("--keepalive-timeout-seconds", f->keepalive_timeout_seconds,
                  absl::StrCat("A ping unanswered this long fails the call UNAVAILABLE (a pull "
                               "then resumes) (env ", kKeepaliveTimeoutEnv, ")"))
      ->check(KeepaliveTimeoutValidator())
      ->capture_default_str()
      ->group(group);
  common::AddBooleanFlag(app, "--json", f->json, "Print results as JSON")->group(group);
}

bool Given(const CLI::App& app, const char* name) { return app.get_option(name)->count() > 0; }

// Adds the required --task NAME to `sub`, checked by the store's rule while parsing
// (a bad name is a usage error before any file is read or byte sent).
void AddTaskOption(CLI::App* sub, std::string* task) {
  sub->add_option("--task", *task,
                  absl::StrCat("Task name: 1 to ", common::kMaxNameLength,
                               " characters of [A-Za-z0-9._-], not starting with '.'"))
      ->required()
      ->check(common::NameValidator("task"));
}

// The flags a remote subcommand runs with: each one as given after the subcommand
// (`sub`, `after`), else before it (`app`, `before`), else from its variable, else its
// default.
RemoteFlags ResolveRemoteFlags(const CLI::App& sub, const RemoteFlags& after, const CLI::App& app,
                               const RemoteFlags& before) {
  RemoteFlags r = after;
  auto pick = [&](const char* name, auto member, const char* env) {
    if (Given(sub, name)) return;
    if (Given(app, name)) {
      r.*member = before.*member;
    } else if (const char* value = env == nullptr ? nullptr : std::getenv(env);
               value != nullptr && *value != '\0') {
      if constexpr (std::is_same_v<decltype(after.*member), const std::string&>) r.*member = value;
    }
  };
  pick("--server", &RemoteFlags::server, kServerEnv);
  pick("--token", &RemoteFlags::token, kTokenEnv);
  pick("--tenant", &RemoteFlags::tenant, kTenantEnv);
  pick("--tls", &RemoteFlags::tls, nullptr);
  pick("--tls-ca", &RemoteFlags::tls_ca, nullptr);
  pick("--timeout", &RemoteFlags::timeout_seconds, nullptr);
  pick("--keepalive-seconds", &RemoteFlags::keepalive_seconds, nullptr);
  pick("--keepalive-timeout-seconds", &RemoteFlags::keepalive_timeout_seconds, nullptr);
  pick("--json", &RemoteFlags::json, nullptr);
  return r;
}

// `s` with, for the errors a flag or variable fixes, which one to look at.
absl::Status WithFlagHint(absl::Status s, const RemoteFlags& f) {
  std::string hint;
  if (absl::IsUnauthenticated(s)) {
    hint = f.token.empty()
               ? absl::StrCat("no token was given: pass --token TOKEN or set ", kTokenEnv)
               : absl::StrCat("the server at ", f.server, " did not accept the token given by "
                              "--token or ", kTokenEnv);
  } else if (absl::IsPermissionDenied(s)) {
    hint = absl::StrCat("the token (--token or ", kTokenEnv, ") may not do this; admin "
                        "commands need an admin token, and --tenant or ", kTenantEnv,
                        " names the tenant to act on");
  } else if (absl::IsUnavailable(s) && absl::StrContains(s.message(), "andshake failed")) {
    hint = absl::StrCat("TLS on one side only, or a certificate not trusted? --tls / --tls-ca "
                        "must match whether deltaserved at ", f.server, " runs with --tls-cert");
  } else if (absl::IsUnavailable(s) && absl::StrContains(s.message(), "failed to connect")) {
    hint = absl::StrCat("is deltaserved running at ", f.server, "? --server HOST[:PORT] or ",
                        kServerEnv, " sets the address");
  } else if (absl::IsInvalidArgument(s) &&
             absl::StrContains(s.message(), "must name the tenant")) {
    hint = absl::StrCat("pass --tenant NAME or set ", kTenantEnv);
  }
  if (hint.empty()) return s;
  return absl::Status(s.code(), absl::StrCat(s.message(), " (", hint, ")"));
}

// `s` as the user of `command` (e.g. "pull", "admin checkpoint") reads it: the client
// library labels its errors with the RPC it made ("StreamWeights 'chat': ...", the name
// the server logs and the proto use); deltactl says the command the user typed instead
// ("pull 'chat': ..."). Any method of v1::DeltaService at the start of the message.
absl::Status InCommandTerms(absl::Status s, const std::string& command) {
  if (s.ok()) return s;
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::DeltaService::service_full_name());
  for (int i = 0; service != nullptr && i < service->method_count(); ++i) {
    const std::string& rpc = service->method(i)->name();
    const absl::string_view m = s.message();
    if (absl::StartsWith(m, rpc) && m.size() > rpc.size() &&
        (m[rpc.size()] == ' ' || m[rpc.size()] == ':')) {
      return absl::Status(s.code(), absl::StrCat(command, m.substr(rpc.size())));
    }
  }
  return s;
}

absl::StatusOr<std::unique_ptr<DeltaClient>> Connect(const RemoteFlags& f) {
  // The flags were checked while parsing (AddRemoteCommands), in the flags' terms.
  ClientOptions options;
  options.target = f.server;
  options.token = f.token;
  options.tenant = f.tenant;
  options.use_tls = f.tls;
  options.tls_root_cert_path = f.tls_ca;
  options.deadline = absl::Seconds(f.timeout_seconds);
  options.keepalive_time = absl::Seconds(f.keepalive_seconds);
  options.keepalive_timeout = absl::Seconds(f.keepalive_timeout_seconds);
  return DeltaClient::Open(options);
}

// "<done><sep><total> <unit>", in MiB, or KiB below 1 MiB (a small upload read
// "0.0/0.0 MiB").
std::string BytesOf(uint64_t done, uint64_t total, absl::string_view sep) {
  const bool kib = total < (1 << 20);
  const double unit = kib ? 1 << 10 : 1 << 20;
  return absl::StrFormat("%.1f%s%.1f %s", done / unit, sep, total / unit, kib ? "KiB" : "MiB");
}

// Byte progress of a push or pull on `line`.
ProgressFn StderrByteProgress(std::shared_ptr<ProgressLine> line) {
  return [line = std::move(line)](const Progress& p) {
    const int pct =
        p.bytes_total == 0 ? 100 : static_cast<int>(100 * p.bytes_done / p.bytes_total);
    std::string text = absl::StrCat(pct, "% ", BytesOf(p.bytes_done, p.bytes_total, "/"));
    if (p.tensors_total != 0) {
      absl::StrAppendFormat(&text, " tensor %d/%d %s", p.tensors_done, p.tensors_total,
                            p.current);
    }
    line->Update(p.bytes_done, p.bytes_total, text);
  };
}

using json = nlohmann::json;

// Protobuf's JSON mapping prints 64-bit integers as strings; turn the 64-bit integer fields
// of `message` (found through its descriptor, recursively) back into JSON numbers.
void Int64FieldsToNumbers(const google::protobuf::Descriptor& d, json& j) {
  using FD = google::protobuf::FieldDescriptor;
  if (!j.is_object()) return;
  for (int i = 0; i < d.field_count(); ++i) {
    const FD& field = *d.field(i);
    auto it = j.find(field.name());
    if (it == j.end() || field.is_map()) continue;
    auto fix = [&](json& v) {
      if (field.cpp_type() == FD::CPPTYPE_MESSAGE) {
        Int64FieldsToNumbers(*field.message_type(), v);
      } else if (v.is_string() && field.cpp_type() == FD::CPPTYPE_INT64) {
        v = std::stoll(v.get<std::string>());
      } else if (v.is_string() && field.cpp_type() == FD::CPPTYPE_UINT64) {
        v = std::stoull(v.get<std::string>());
      }
    };
    if (it->is_array()) {
      for (json& v : *it) fix(v);
    } else {
      fix(*it);
    }
  }
}

// A response message as JSON (proto field names, 64-bit integers as numbers).
absl::Status PrintMessageJson(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  auto status = google::protobuf::util::MessageToJsonString(message, &text, options);
  if (!status.ok()) return absl::InternalError(std::string(status.message()));
  absl::StatusOr<json> j = common::ParseJson(text, "protobuf's JSON of the response");
  if (!j.ok()) return absl::InternalError(j.status().message());
  Int64FieldsToNumbers(*message.GetDescriptor(), *j);
  return PrintJson(*j);
}

std::string Created(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

std::string DTypeText(v1::DType dtype) {
  absl::StatusOr<codec::DType> d = proto::FromProtoDType(dtype);
  return d.ok() ? std::string(codec::DTypeName(*d)) : "?";
}

// What TaskInfo.other_base means to an operator (deltactl info and list).
constexpr char kOtherBaseNote[] =
    "OTHER than the server's (GetBase): pulls and pins of this task fail with "
    "FAILED_PRECONDITION; pull it from a server started with its base, or push it again "
    "compressed against the server's";

void PrintTaskInfo(const v1::TaskInfo& t) {
  absl::PrintF("tenant:          %s\ntask:            %s\ncreated:         %s\n", t.tenant(),
               t.name(), Created(t.created_unix()));
  absl::PrintF("base hash:       %s%s\ndelta bytes:     %d\ntensors:         %d\n", t.base_hash(),
               t.other_base() ? absl::StrCat("\nbase:            ", kOtherBaseNote) : "",
               t.container_bytes(), t.num_tensors());
  absl::PrintF(
      "weights:         %d\nmerged bytes:    %d\nbits per weight: %.4f\npinned:          %s\n",
      t.total_weights(), t.merged_bytes(), t.bits_per_weight(), t.pinned() ? "yes" : "no");
  // Sorted: a proto map iterates in no fixed order.
  const std::map<std::string, std::string> metadata(t.metadata().begin(), t.metadata().end());
  for (const auto& [k, v] : codec::DisplayedMetadata(metadata)) absl::PrintF("metadata %s = %s\n", k, v);
  for (const v1::SideFileInfo& s : t.side_files()) {
    absl::PrintF("side file %s: %d bytes, XXH3-64 %016x\n", s.name(), s.size_bytes(),
                 s.xxh3_64());
  }
  if (t.tensors_size() == 0) return;
  absl::PrintF("%5s  %-48s %-5s %-18s %-9s %12s %8s\n", "index", "tensor", "dtype", "shape",
               "encoding", "record bytes", "bits/w");
  for (const v1::TensorSummary& s : t.tensors()) {
    absl::PrintF("%5d  %-48s %-5s %-18s %-9s %12d %8.3f\n", s.index(), s.name(),
                 DTypeText(s.dtype()), absl::StrCat("[", absl::StrJoin(s.shape(), ", "), "]"),
                 s.encoding(), s.record_bytes(), s.bits_per_weight());
  }
}

absl::Status RunPush(const RemoteFlags& f, const TaskFlags& t) {
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  PushOptions options;
  options.overwrite = t.overwrite;
  auto line = std::make_shared<ProgressLine>("push " + t.task);
  // The last progress of the upload; none if it never began (a local error).
  auto sent = std::make_shared<std::optional<Progress>>();
  ProgressFn draw = StderrByteProgress(line);
  options.progress = [draw, sent](const Progress& p) {
    *sent = p;
    draw(p);
  };
  DS_ASSIGN_OR_RETURN(options.side_files, ReadSideFileFlags(t.side_files));
  bool unchanged = false;
  options.unchanged = &unchanged;
  absl::StatusOr<v1::TaskInfo> pushed = client->PushDeltaFile(t.task, t.in, options);
  if (!pushed.ok() && sent->has_value()) {
    // The bar stops where the server stopped taking bytes; say why, since bytes sent
    // into gRPC's buffers are not bytes stored.
    const absl::StatusCode code = pushed.status().code();
    const bool refused = code != absl::StatusCode::kUnavailable &&
                         code != absl::StatusCode::kDeadlineExceeded &&
                         code != absl::StatusCode::kCancelled &&
                         code != absl::StatusCode::kUnknown;
    line->End(absl::StrCat(refused ? "refused by the server" : "stopped", " (",
                           absl::StatusCodeToString(code), ") after ",
                           BytesOf((*sent)->bytes_done, (*sent)->bytes_total, " of "), " sent",
                           refused ? "; nothing was stored" : ""));
  }
  if (absl::IsAlreadyExists(pushed.status())) {
    return absl::AlreadyExistsError(
        absl::StrCat(pushed.status().message(), "; use --overwrite to replace it"));
  }
  if (absl::IsDeadlineExceeded(pushed.status())) {
    // The deadline covers the whole upload: a large container over a slow link needs more.
    return absl::DeadlineExceededError(
        absl::StrCat(pushed.status().message(), " (--timeout ", f.timeout_seconds,
                     " s bounds the whole upload; raise it for a large container or a slow link)"));
  }
  DS_ASSIGN_OR_RETURN(v1::TaskInfo info, std::move(pushed));
  if (f.json) return PrintMessageJson(info);
  // A retry of a push that landed (or the same file pushed twice) stores nothing new.
  absl::PrintF(
      "%s %s as %s/%s: %s, %s, %.4f bits/weight, %s (%s)\n",
      unchanged ? "already stored, unchanged (identical container and side files):" : "pushed",
      t.in, info.tenant(), info.name(), common::Counted(info.container_bytes(), "byte"),
      common::Counted(info.num_tensors(), "tensor"), info.bits_per_weight(),
      common::Counted(info.side_files_size(), "side file"),
      common::Counted(info.side_file_bytes(), "byte"));
  return absl::OkStatus();
}

absl::Status RunList(const RemoteFlags& f, bool all) {
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  std::optional<std::string> tenant;
  if (all) tenant = "";
  DS_ASSIGN_OR_RETURN(v1::ListTasksResponse list, client->ListTasks(tenant));
  if (f.json) return PrintMessageJson(list);
  absl::PrintF("%-16s %-32s %8s %14s %12s %8s %-5s  %s\n", "TENANT", "TASK", "TENSORS",
               "WEIGHTS", "BYTES", "BITS/W", "BASE", "CREATED");
  int other_base = 0;
  for (const v1::TaskInfo& t : list.tasks()) {
    other_base += t.other_base() ? 1 : 0;
    // BASE: "ok", or "OTHER" for a task made against another base than the server's.
    absl::PrintF("%-16s %-32s %8d %14d %12d %8.4f %-5s  %s\n", t.tenant(), t.name(),
                 t.num_tensors(), t.total_weights(), t.container_bytes(), t.bits_per_weight(),
                 t.other_base() ? "OTHER" : "ok", Created(t.created_unix()));
  }
  // An all-tenant listing carries no quota (each tenant has its own; the field is 0):
  // "unlimited" there would be wrong for tenants that have one.
  const std::string quota =
      all ? "" : absl::StrCat(", quota ", list.quota_bytes() == 0
                                              ? std::string("unlimited")
                                              : absl::StrCat(list.quota_bytes(), " bytes"));
  absl::PrintF("%d task%s, %d bytes stored%s\n", list.tasks_size(),
               list.tasks_size() == 1 ? "" : "s", list.stored_bytes(), quota);
  if (other_base > 0) {
    absl::PrintF("warning: %d task%s made against another base than the server's (BASE OTHER): "
                 "pulls and pins of %s fail with FAILED_PRECONDITION (deltactl info --task T "
                 "shows its base hash; deltactl get-base the server's)\n",
                 other_base, other_base == 1 ? " was" : "s were", other_base == 1 ? "it" : "them");
  }
  if (all) {
    std::set<std::string> tenants;
    for (const v1::TaskInfo& t : list.tasks()) tenants.insert(t.tenant());
    if (tenants.size() <= 1) {
      // The reply does not say which kind of token listed it: say what either means.
      absl::PrintF("note: the listing holds %s: with an admin token that is every tenant "
                   "that has tasks; a tenant token lists only its own tenant\n",
                   tenants.empty() ? std::string("no task")
                                   : absl::StrCat("tasks of tenant '", *tenants.begin(),
                                                  "' only"));
    }
  }
  return absl::OkStatus();
}

absl::Status RunInfo(const RemoteFlags& f, const TaskFlags& t) {
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  DS_ASSIGN_OR_RETURN(v1::TaskInfo info, client->GetTask(t.task, t.tensors));
  if (f.json) return PrintMessageJson(info);
  PrintTaskInfo(info);
  return absl::OkStatus();
}

absl::Status RunDelete(const RemoteFlags& f, const TaskFlags& t) {
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  DS_ASSIGN_OR_RETURN(uint64_t freed, client->DeleteTask(t.task));
  if (f.json) return PrintJson(json{{"task", t.task}, {"deleted", true}, {"freed_bytes", freed}});
  absl::PrintF("deleted %s (%d bytes freed)\n", t.task, freed);
  return absl::OkStatus();
}

absl::Status RunPull(const RemoteFlags& f, const TaskFlags& t) {
  // This process pulls and exits: keep freed buffers instead of faulting them in again
  // (client/internal/pull_memory.h: fewer and steadier page faults per pull). If glibc
  // refuses, the pull runs as before.
  KeepFreedMemoryForPull();
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  PullOptions options;
  DS_ASSIGN_OR_RETURN(options.out_dtype, ParseDTypeOption(t.dtype));
  options.include = t.include;
  options.include_regex = t.include_regex;
  options.resume_from = t.resume_from;
  options.streams = t.streams;
  options.progress = StderrByteProgress(std::make_shared<ProgressLine>("pull " + t.task));
  const std::string& out = t.out.empty() ? t.out_dir : t.out;
  DS_ASSIGN_OR_RETURN(PullStats stats,
                      t.out.empty()
                          ? client->PullWeightsToDirectory(t.task, t.out_dir, t.shard_bytes, options)
                          : client->PullWeights(t.task, t.out, options));
  if (f.json) {
    return PrintJson(json{{"task", t.task},
                          {"out", out},
                          {"tensors", stats.tensors},
                          {"bytes", stats.bytes},
                          {"seconds", stats.seconds},
                          {"first_tensor_seconds", stats.first_tensor_seconds},
                          {"streams", stats.streams},
                          {"resumed", stats.resumed},
                          {"saturated_values", stats.saturated_values},
                          {"saturated_tensors", stats.saturated_tensors},
                          {"side_files", stats.side_files},
                          {"checksums_verified", true}});
  }
  // The first tensor of a local pull comes in well under a millisecond: in seconds with
  // three decimals it read "0.000 s".
  const std::string first_tensor =
      stats.first_tensor_seconds < 1 ? absl::StrFormat("%.1f ms", stats.first_tensor_seconds * 1e3)
                                     : absl::StrFormat("%.3f s", stats.first_tensor_seconds);
  // Resumes are said for one stream too (a server restarted during the pull).
  std::string streams;
  if (stats.streams > 1) {
    streams = absl::StrFormat(", %d streams, %s resumed", stats.streams,
                              common::Counted(stats.resumed, "range"));
  } else if (stats.resumed > 0) {
    streams = absl::StrFormat(", resumed %d time%s after a dropped stream", stats.resumed,
                              stats.resumed == 1 ? "" : "s");
  }
  absl::PrintF(
      "pulled %s -> %s: %s, %s in %.3f s (%.3f GB/s, first tensor after %s%s), "
      "every tensor checksum verified\n",
      t.task, out, common::Counted(stats.tensors, "tensor"), common::Counted(stats.bytes, "byte"),
      stats.seconds, stats.seconds > 0 ? stats.bytes / stats.seconds / 1e9 : 0.0, first_tensor,
      streams);
  if (!stats.side_files.empty()) {
    absl::PrintF("side files (checksums verified): %s\n", absl::StrJoin(stats.side_files, " "));
  }
  if (stats.saturated_values > 0) {
    // As offline decompress warns; the server's merge_saturated log names every tensor.
    absl::FPrintF(stderr,
                  "warning: %d value%s of %d tensor%s (first: '%s') beyond the output dtype's "
                  "range, saturated to its largest finite value\n",
                  stats.saturated_values, stats.saturated_values == 1 ? "" : "s",
                  stats.saturated_tensors, stats.saturated_tensors == 1 ? "" : "s",
                  stats.first_saturated_tensor);
  }
  return absl::OkStatus();
}

absl::Status RunPullDelta(const RemoteFlags& f, const TaskFlags& t) {
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  DS_ASSIGN_OR_RETURN(DeltaStats stats,
                      client->StreamDelta(t.task, t.out,
                                          StderrByteProgress(std::make_shared<ProgressLine>(
                                              "pull-delta " + t.task))));
  absl::PrintF("pulled delta %s -> %s: %d bytes, XXH3-64 %016x verified\n", t.task, t.out,
               stats.bytes, stats.xxh3_64);
  return absl::OkStatus();
}

absl::Status RunGetBase(const RemoteFlags& f) {
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  DS_ASSIGN_OR_RETURN(v1::BaseInfo base, client->GetBase());
  if (f.json) return PrintMessageJson(base);
  std::vector<std::string> dtypes;
  for (int d : base.dtypes()) dtypes.push_back(DTypeText(static_cast<v1::DType>(d)));
  absl::PrintF("path:    %s\nhash:    %s\ntensors: %d\nweights: %d\nbytes:   %d\ndtypes:  %s\n",
               base.path(), base.hash(), base.num_tensors(), base.total_weights(),
               base.total_bytes(), absl::StrJoin(dtypes, ","));
  return absl::OkStatus();
}

absl::Status RunCheckpoint(const RemoteFlags& f, const std::string& dir) {
  DS_ASSIGN_OR_RETURN(auto client, Connect(f));
  DS_ASSIGN_OR_RETURN(v1::AdminCheckpointResponse r, client->Checkpoint(dir));
  if (f.json) return PrintMessageJson(r);
  absl::PrintF("checkpoint %s: %s, %s in %.3f s (serve it with deltaserved --db %s)\n", r.dir(),
               common::Counted(r.files(), "file"), common::Counted(r.bytes(), "byte"), r.seconds(),
               r.dir());
  return absl::OkStatus();
}
}  // namespace

void AddRemoteCommands(CLI::App& app, CommandAction* action) {
  // One RemoteFlags per subcommand, plus deltactl's own for the flags given before the
  // subcommand; ResolveRemoteFlags picks, per flag, the one the user gave.
  std::map<const CLI::App*, std::shared_ptr<RemoteFlags>> remote;
  auto before = std::make_shared<RemoteFlags>();
  AddRemoteFlags(&app, before.get());
  auto task = std::make_shared<TaskFlags>();
  auto add_to = [&](CLI::App* parent, const char* name, const char* help) {
    CLI::App* sub = parent->add_subcommand(name, help);
    auto flags = std::make_shared<RemoteFlags>();
    AddRemoteFlags(sub, flags.get());
    remote[sub] = std::move(flags);
    return sub;
  };
  auto add = [&](const char* name, const char* help) { return add_to(&app, name, help); };
  // Makes `run` the action of `sub`, with the resolved flags and their hints.
  auto remote_used = std::make_shared<bool>(false);
  auto bind = [&](CLI::App* sub, std::function<absl::Status(const RemoteFlags&)> run) {
    sub->callback([=, &app, after = remote.at(sub)] {
      *remote_used = true;
      RemoteFlags f = ResolveRemoteFlags(*sub, *after, app, *before);
      // Usage errors (exit 2) before any connection, naming the flag or the variable
      // that gave the value.
      auto source = [&](const char* flag, const char* env) {
        return Given(*sub, flag) || Given(app, flag) || env == nullptr ? flag : env;
      };
      // The store's rule, checked now rather than by the server after the work.
      // An empty tenant is the token's own.
      const absl::Status tenant_ok =
          f.tenant.empty() ? absl::OkStatus() : common::ValidateName("tenant", f.tenant);
      if (!tenant_ok.ok()) {
        throw CLI::ValidationError(source("--tenant", kTenantEnv), std::string(tenant_ok.message()));
      }
      // "host" dials deltaserved's default port, not gRPC's 443.
      absl::StatusOr<std::string> target = common::ServerTarget(f.server);
      if (!target.ok()) {
        throw CLI::ValidationError(source("--server", kServerEnv),
                                   std::string(target.status().message()));
      }
      f.server = *std::move(target);
      // The keepalive variables (numbers: ResolveRemoteFlags reads only text ones),
      // checked as their flags are.
      auto number_from_env = [&](const char* flag, const char* env, CLI::Validator check,
                                 double* out) {
        const char* value = std::getenv(env);
        if (Given(*sub, flag) || Given(app, flag) || value == nullptr || *value == '\0') return;
        std::string text = value;
        if (std::string error = check(text); !error.empty()) {
          throw CLI::ValidationError(env, error);
        }
        (void)absl::SimpleAtod(text, out);
      };
      number_from_env("--keepalive-seconds", kKeepaliveEnv, KeepaliveValidator(),
                      &f.keepalive_seconds);
      number_from_env("--keepalive-timeout-seconds", kKeepaliveTimeoutEnv,
                      KeepaliveTimeoutValidator(), &f.keepalive_timeout_seconds);
      if (f.token.find_first_of("\r\n") != std::string::npos) {
        throw CLI::ValidationError(source("--token", kTokenEnv), "contains a line break");
      }
      const std::string command =
          sub->get_parent() == &app ? sub->get_name()
                                    : absl::StrCat(sub->get_parent()->get_name(), " ", sub->get_name());
      *action = [=] { return WithFlagHint(InCommandTerms(run(f), command), f); };
    });
  };
  // A remote flag given before an offline subcommand would be ignored: refuse it.
  app.final_callback([&app, remote_used] {
    if (*remote_used || app.get_subcommands().empty()) return;
    const CLI::App& sub = *app.get_subcommands().front();
    for (const CLI::Option* opt : app.get_options()) {
      const std::string name = opt->get_name();
      if (!absl::StartsWith(name, "--") || name == "--version" || name == "--help" ||
          opt->count() == 0) {
        continue;
      }
      const bool sub_has_it = sub.get_option_no_throw(name) != nullptr;
      throw CLI::ValidationError(
          name, sub_has_it
                    ? absl::StrCat("give it after the subcommand: deltactl ", sub.get_name(), " ",
                                   name, " ...")
                    : absl::StrCat("is a flag of the remote commands (push, pull, list, ...); ",
                                   sub.get_name(), " does not take it"));
    }
  });

  CLI::App* push = add("push", "Upload a delta container (.dds) to a server as a task");
  AddTaskOption(push, &task->task);
  push->add_option("--in", task->in, "Delta container (.dds)")->required();
  common::AddBooleanFlag(push, "--overwrite", task->overwrite, "Replace an existing task");
  AddSideFileOptions(push, &task->side_files);
  bind(push, [task](const RemoteFlags& f) { return RunPush(f, *task); });

  CLI::App* list = add("list", "List the tasks stored on a server");
  auto all = std::make_shared<bool>(false);
  common::AddBooleanFlag(list, "--all-tenants", *all, "Every tenant's tasks (admin token)");
  bind(list, [all](const RemoteFlags& f) { return RunList(f, *all); });

  CLI::App* info = add("info", "Show a stored task (sizes, bits per weight, base hash)");
  AddTaskOption(info, &task->task);
  common::AddBooleanFlag(info, "--tensors", task->tensors, "Also list every tensor");
  bind(info, [task](const RemoteFlags& f) { return RunInfo(f, *task); });

  CLI::App* del = add("delete", "Delete a stored task");
  AddTaskOption(del, &task->task);
  bind(del, [task](const RemoteFlags& f) { return RunDelete(f, *task); });

  CLI::App* pull = add("pull", "Stream a task's merged weights into a .safetensors file "
                               "(every tensor checksum verified; same bytes as decompress)");
  AddTaskOption(pull, &task->task);
  // Exactly one output, checked while parsing (a usage error, exit 2), after --help.
  CLI::Option_group* pull_output =
      pull->add_option_group("output", "exactly one of --out FILE and --out-dir DIR");
  pull_output->require_option(1);
  auto* pull_out = pull_output->add_option("--out", task->out, "Output .safetensors file");
  pull_output->add_option("--out-dir", task->out_dir,
                   "Output Hugging Face checkpoint directory (sharded safetensors + "
                   "model.safetensors.index.json) instead of --out")
      ->excludes(pull_out);
  pull->add_option("--shard-bytes", task->shard_bytes, "Largest shard of --out-dir, bytes")
      ->check(common::ByteCountValidator(/*min=*/1))
      ->capture_default_str();
  AddDTypeOption(pull, &task->dtype);
  pull->add_option("--include", task->include, "Only tensors matching this glob (repeatable)");
  pull->add_option("--include-regex", task->include_regex,
                   "Only tensors whose whole name matches this regular expression (RE2 syntax)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            // The server's own rule: a bad expression is a usage error, not a call.
            const absl::Status s = proto::CheckIncludeRegex(text);
            return s.ok() ? "" : absl::StrCat("'", text, "' is not an RE2 regular expression: ",
                                              s.message());
          },
          "RE2"));
  pull->add_option("--resume-from", task->resume_from,
                   "Write only this tensor and those after it (in the delta's order)");
  pull->add_option("--streams", task->streams,
                   "Parallel streams, each on a tensor range of about equal bytes (1-64)")
      ->capture_default_str()
      ->check(common::WholeNumberValidator("a number of streams", 1, 64));  // PullOptions::streams
  bind(pull, [task](const RemoteFlags& f) { return RunPull(f, *task); });

  CLI::App* pull_delta = add("pull-delta", "Download a task's stored delta container as is");
  AddTaskOption(pull_delta, &task->task);
  pull_delta->add_option("--out", task->out, "Output container (.dds)")->required();
  bind(pull_delta, [task](const RemoteFlags& f) { return RunPullDelta(f, *task); });

  CLI::App* get_base = add("get-base", "Show the base model the server keeps resident");
  bind(get_base, [](const RemoteFlags& f) { return RunGetBase(f); });

  CLI::App* admin = app.add_subcommand("admin", "Server administration (admin token)");
  admin->require_subcommand(1);
  CLI::App* checkpoint = add_to(admin, "checkpoint",
                                "Online backup: a consistent copy of the server's whole store in a "
                                "new directory on the server (servable with deltaserved --db DIR)");
  auto dir = std::make_shared<std::string>();
  checkpoint->add_option("--dir", *dir, "Absolute path on the server; must not exist")
      ->required()
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            // The server's rule (Checkpoint: std::filesystem::path::is_absolute), before
            // the call.
            return absl::StartsWith(text, "/") ? ""
                                               : "want an absolute path on the server, got '" +
                                                     text + "'";
          },
          "ABSPATH"));
  bind(checkpoint, [dir](const RemoteFlags& f) { return RunCheckpoint(f, *dir); });
}

}  // namespace deltaserve::client

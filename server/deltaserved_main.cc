// deltaserved: serves deltaserve.v1.DeltaService. Flags: server/CONFIG.md.
// Every flag may also come from DELTASERVE_<FLAG> in the environment (e.g.
// DELTASERVE_BASE, DELTASERVE_METRICS_LISTEN); a flag on the command line wins.
// SIGTERM/SIGINT/SIGHUP: drain (stop accepting, let calls finish up to --drain-seconds),
// then close the database and exit 0. One that comes during start-up (before "serving")
// is logged as "stopped during start-up" and the daemon exits 0; the handlers are in place
// before any library initialiser runs (InstallStopSignals), so only a signal during the
// dynamic loader's relocations (the first ~10 ms) still finds the default action.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/cli_validators.h"
#include "common/usage_error.h"
#include "grpc/support/log.h"
#include "server/internal/log.h"
#include "server/server.h"
#include "spdlog/spdlog.h"

namespace {

int g_signal_pipe[2] = {-1, -1};
constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGHUP};

void OnStopSignal(int sig) {
  char c = static_cast<char>(sig);
  (void)!write(g_signal_pipe[1], &c, 1);  // async-signal-safe; non-blocking
}

// Stop signals go to a self-pipe that main waits on: whichever thread the kernel picks
// runs the handler, so no thread (gRPC's, RocksDB's) can be killed by it. Idempotent;
// false if the pipe cannot be made (the signals keep their default action).
bool InstallStopSignals() {
  if (g_signal_pipe[0] >= 0) return true;
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return false;
  // A full pipe (thousands of signals unread) must not block the handler.
  fcntl(g_signal_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : kStopSignals) sigaction(sig, &sa, nullptr);
  return true;
}

// Run by the dynamic loader from the executable's DT_PREINIT_ARRAY, after relocation and
// before every shared library's initialisers (gRPC, protobuf, OpenBLAS: 20-40 ms of
// start-up in which a SIGTERM killed the daemon with no log line, exit 143).
void InstallStopSignalsEarly(int, char**, char**) { (void)InstallStopSignals(); }
__attribute__((section(".preinit_array"),
               used)) void (*const kEarlyStopSignals)(int, char**,
                                                      char**) = &InstallStopSignalsEarly;

const char* StopSignalName(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "?";
  }
}

// The stop signal that has come (0: none yet); with `wait`, blocks until one comes.
int StopSignal(bool wait) {
  pollfd p{g_signal_pipe[0], POLLIN, 0};
  while (poll(&p, 1, wait ? -1 : 0) < 0 && errno == EINTR) {
  }
  if ((p.revents & POLLIN) == 0) return 0;
  char sig = 0;
  while (read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
  }
  return sig;
}

using deltaserve::server::Server;
using deltaserve::server::ServerOptions;
namespace internal = deltaserve::server::internal;

// Exit status of a usage error (a bad flag or variable), as deltactl's; 1 is a failure to
// start or serve.
constexpr int kUsageExit = 2;

// The flag "--x" that starts at `at` in `message` (its lower-case letters, digits and
// dashes), or "" if none starts there.
std::string FlagAt(absl::string_view message, size_t at) {
  if (message.substr(at, 2) != "--") return "";
  size_t end = at + 2;
  while (end < message.size() && (absl::ascii_islower(message[end]) ||
                                   absl::ascii_isdigit(message[end]) || message[end] == '-')) {
    ++end;
  }
  return end > at + 2 ? std::string(message.substr(at, end - at)) : "";
}

// "DELTASERVE_X" when `flag` ("--x") is not on the command line but set in the
// environment; else "".
std::string VariableOf(const std::string& flag, int argc, char** argv) {
  if (flag.empty()) return "";
  for (int i = 1; i < argc; ++i) {
    if (argv[i] == flag || absl::StartsWith(argv[i], flag + "=")) return "";
  }
  std::string env = "DELTASERVE_" + absl::AsciiStrToUpper(flag.substr(2));
  std::replace(env.begin(), env.end(), '-', '_');
  return std::getenv(env.c_str()) != nullptr ? env : "";
}

// VariableOf the first flag that `message` names (at its start, as in Validate's
// messages, or inside, as in CLI11's "Could not convert: --workers = abc").
std::string SettingVariable(absl::string_view message, int argc, char** argv) {
  const size_t at = message.find("--");
  return at == absl::string_view::npos ? "" : VariableOf(FlagAt(message, at), argc, argv);
}

// `message` (an error of Server::Start) with every flag it names that a variable set
// replaced by that variable: "cannot listen on :50051: address already in use? (set
// DELTASERVE_LISTEN)", "DELTASERVE_BASE: /m.safetensors: no such file or directory".
std::string InVariableTerms(absl::string_view message, int argc, char** argv) {
  std::string out;
  size_t at = 0;
  for (size_t next; (next = message.find("--", at)) != absl::string_view::npos;) {
    const std::string flag = FlagAt(message, next);
    const std::string env = VariableOf(flag, argc, argv);
    absl::StrAppend(&out, message.substr(at, next - at), env.empty() ? flag : env);
    at = next + std::max<size_t>(flag.size(), 2);
    if (flag.empty()) out += "--";
  }
  absl::StrAppend(&out, message.substr(at));
  return out;
}

// " (set by DELTASERVE_X)" for SettingVariable's variable; else "".
std::string FromEnvironmentHint(absl::string_view message, int argc, char** argv) {
  const std::string env = SettingVariable(message, argc, argv);
  return env.empty() ? "" : " (set by " + env + ")";
}

// gRPC's own log lines (gpr_log: "E1201 13:21:08.65 ... chttp2_server.cc:1045] ...") as
// structured events of ours, so that they read like every other line of the daemon and
// reach log collectors as JSON with --log-format json. GRPC_VERBOSITY (default ERROR)
// still decides which come; the errors that matter also come back as statuses.
void RouteGrpcLog(gpr_log_func_args* args) {
  const internal::LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR
                                       ? internal::LogLevel::kError
                                       : internal::LogLevel::kInfo;
  internal::LogEvent(level, "grpc",
                     {{"where", absl::StrCat(args->file, ":", args->line)},
                      {"message", args->message}});
}

const CLI::Validator kByteCount = deltaserve::common::ByteCountValidator();
const CLI::Validator kSeconds = deltaserve::common::SecondsValidator();
// The int flags (--workers, --max-streams, ...): their ranges are ServerOptions::Validate's.
const CLI::Validator kCount = deltaserve::common::WholeNumberValidator("a whole number", 0, INT_MAX);


int Run(int argc, char** argv) {
  // Before any thread (server.h); without it the server still runs, with more RSS.
  const bool arenas_limited =
      deltaserve::server::LimitMallocArenas(deltaserve::server::kServerMallocArenas);
  ServerOptions o;
  std::string preload, log_format = "text";
  double drain_seconds = 30, stall_seconds = 10, write_timeout_seconds = 600, keepalive_seconds = 60,
         keepalive_timeout_seconds = 20, min_client_ping_seconds = 5, health_interval_seconds = 1;
  CLI::App app{
      "deltaserved: serves finetuned models stored as compressed deltas (codec v2 or "
      "Delta-DCT containers) merged into a resident base"};
  app.set_version_flag("--version", "deltaserved " DELTASERVE_VERSION);
  app.add_option("--base", o.base_path, "base model (.safetensors file, index or directory)")
      ->envname("DELTASERVE_BASE")->required();
  deltaserve::common::AddBooleanFlag(
      &app, "--base-mapped", o.base_mapped,
      "map the base files instead of reading them into memory (shares the page cache "
      "with other processes; the files must then not change while deltaserved runs: "
      "a change turns health NOT_SERVING and fails pulls until a restart)")
      ->envname("DELTASERVE_BASE_MAPPED");
  app.add_option("--db", o.db_path, "RocksDB directory")->envname("DELTASERVE_DB")
      ->capture_default_str();
  app.add_option("--cluster-config", o.cluster_config_path,
                 "cluster mode: S3 + etcd config file (server/CONFIG.md); unset = single node")
      ->envname("DELTASERVE_CLUSTER_CONFIG");
  app.add_option("--agent-listen", o.agent_listen,
                 "HAProxy agent-check address host:port (\"\" = off): up / down / drain")
      ->envname("DELTASERVE_AGENT_LISTEN");
  app.add_option("--health-interval-seconds", health_interval_seconds,
                 "cluster mode: probe etcd and S3 this often (health, agent check); "
                 "--base-mapped: check the base files this often")
      ->envname("DELTASERVE_HEALTH_INTERVAL_SECONDS")->check(kSeconds)->capture_default_str();
  app.add_option("--listen", o.listen, "gRPC address host:port")->envname("DELTASERVE_LISTEN")
      ->capture_default_str();
  app.add_option("--metrics-listen", o.metrics_listen, "Prometheus /metrics address (\"\" = off)")
      ->envname("DELTASERVE_METRICS_LISTEN")->capture_default_str();
  app.add_option("--config", o.config_path, "tenants/tokens JSON (server/CONFIG.md)")
      ->envname("DELTASERVE_CONFIG");
  app.add_option("--tls-cert", o.tls_cert_path, "PEM certificate chain (TLS)")
      ->envname("DELTASERVE_TLS_CERT");
  app.add_option("--tls-key", o.tls_key_path, "PEM private key (TLS)")
      ->envname("DELTASERVE_TLS_KEY");
  app.add_option("--cache-bytes", o.cache_bytes, "merged-tensor cache budget, bytes")
      ->envname("DELTASERVE_CACHE_BYTES")->check(kByteCount)->capture_default_str();
  deltaserve::common::AddBooleanFlag(
      &app, "--pretouch-cache", o.pretouch_cache,
      "once serving, fault in memory for a first cold pull's merged tensors (the "
      "base's shapes, up to --cache-bytes) on an idle-priority thread, so that the "
      "pull decodes without page faults; costs that memory from start")
      ->envname("DELTASERVE_PRETOUCH_CACHE");
  app.add_option("--workers", o.workers, "worker threads (0 = cores)")
      ->envname("DELTASERVE_WORKERS")->check(kCount)->capture_default_str();
  app.add_option("--chunk-bytes", o.chunk_bytes, "StreamWeights chunk size, bytes")
      ->envname("DELTASERVE_CHUNK_BYTES")->check(kByteCount)->capture_default_str();
  app.add_option("--prefetch-tensors", o.prefetch_tensors, "tensors decoded ahead per stream")
      ->envname("DELTASERVE_PREFETCH_TENSORS")->check(kCount)->capture_default_str();
  app.add_option("--prefetch-bytes", o.prefetch_bytes,
                 "data bytes decoded ahead per stream beyond --prefetch-tensors")
      ->envname("DELTASERVE_PREFETCH_BYTES")->check(kByteCount)->capture_default_str();
  app.add_option("--max-upload-bytes", o.max_upload_bytes, "largest accepted container, bytes")
      ->envname("DELTASERVE_MAX_UPLOAD_BYTES")->check(kByteCount)->capture_default_str();
  app.add_option("--max-uploads", o.max_uploads, "PutDelta calls at once (more: RESOURCE_EXHAUSTED)")
      ->envname("DELTASERVE_MAX_UPLOADS")->check(kCount)->capture_default_str();
  app.add_option("--max-streams", o.max_streams,
                 "StreamWeights + StreamDelta calls at once (more: RESOURCE_EXHAUSTED)")
      ->envname("DELTASERVE_MAX_STREAMS")->check(kCount)->capture_default_str();
  app.add_option("--max-connections", o.max_connections,
                 "client connections at once (0 = derived from the descriptor limit)")
      ->envname("DELTASERVE_MAX_CONNECTIONS")->check(kCount)->capture_default_str();
  app.add_option("--grpc-memory-bytes", o.grpc_memory_bytes, "gRPC ResourceQuota, bytes")
      ->envname("DELTASERVE_GRPC_MEMORY_BYTES")->check(kByteCount)->capture_default_str();
  app.add_option("--preload", preload, "tenant/task[,tenant/task...] pinned in the cache")
      ->envname("DELTASERVE_PRELOAD");
  app.add_option("--drain-seconds", drain_seconds, "SIGTERM drain deadline, seconds")
      ->envname("DELTASERVE_DRAIN_SECONDS")->check(kSeconds)->capture_default_str();
  app.add_option("--db-min-free-bytes", o.store.min_free_bytes,
                 "free space kept on the database's filesystem, bytes")
      ->envname("DELTASERVE_DB_MIN_FREE_BYTES")->check(kByteCount)->capture_default_str();
  app.add_option("--ingest-min-bytes", o.store.ingest_min_bytes,
                 "uploads of at least this many bytes are written as table files and "
                 "ingested, not through the write-ahead log (0 = every upload)")
      ->envname("DELTASERVE_INGEST_MIN_BYTES")->check(kByteCount)->capture_default_str();
  app.add_option("--upload-buffer-cache-bytes", o.upload_buffer_cache_bytes,
                 "memory of finished uploads kept mapped for the next ones, so an upload "
                 "does not fault in fresh zeroed pages (0 = every upload maps its own), bytes")
      ->envname("DELTASERVE_UPLOAD_BUFFER_CACHE_BYTES")->check(kByteCount)->capture_default_str();
  app.add_option("--stall-seconds", stall_seconds, "a stream waiting this long is stalled")
      ->envname("DELTASERVE_STALL_SECONDS")->check(kSeconds)->capture_default_str();
  app.add_option("--write-timeout-seconds", write_timeout_seconds,
                 "cancel a stream whose client read nothing this long (0 = never)")
      ->envname("DELTASERVE_WRITE_TIMEOUT_SECONDS")->check(kSeconds)->capture_default_str();
  app.add_option("--keepalive-seconds", keepalive_seconds, "server pings idle connections")
      ->envname("DELTASERVE_KEEPALIVE_SECONDS")->check(kSeconds)->capture_default_str();
  app.add_option("--keepalive-timeout-seconds", keepalive_timeout_seconds,
                 "close a connection whose ping is unanswered this long")
      ->envname("DELTASERVE_KEEPALIVE_TIMEOUT_SECONDS")->check(kSeconds)->capture_default_str();
  app.add_option("--min-client-ping-seconds", min_client_ping_seconds,
                 "clients may ping this often")
      ->envname("DELTASERVE_MIN_CLIENT_PING_SECONDS")->check(kSeconds)->capture_default_str();
  app.add_option("--log-format", log_format, "text|json")->envname("DELTASERVE_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (app.exit(e) == 0) return 0;  // --help, --version
    // A value CLI11 could not convert that came from DELTASERVE_<FLAG>: say so.
    const std::string env = SettingVariable(e.what(), argc, argv);
    if (!env.empty()) std::fprintf(stderr, "deltaserved: that value came from %s\n", env.c_str());
    return kUsageExit;
  }
  internal::SetLogFormat(log_format == "json" ? internal::LogFormat::kJson
                                              : internal::LogFormat::kText);
  gpr_set_log_function(RouteGrpcLog);
  // CLI11 skips an environment variable that is set but empty. For these flags "" means
  // off, so DELTASERVE_METRICS_LISTEN= must turn metrics off as --metrics-listen "" does
  // (before, the default 127.0.0.1:9464 stayed bound).
  for (const auto& [flag, env, value] :
       {std::tuple{"--metrics-listen", "DELTASERVE_METRICS_LISTEN", &o.metrics_listen},
        std::tuple{"--agent-listen", "DELTASERVE_AGENT_LISTEN", &o.agent_listen}}) {
    const char* set = std::getenv(env);
    if (set != nullptr && *set == '\0' && app.get_option(flag)->count() == 0) value->clear();
  }
  if (!preload.empty()) o.preload = absl::StrSplit(preload, ',', absl::SkipEmpty());
  o.drain_timeout = absl::Seconds(drain_seconds);
  o.health_interval = absl::Seconds(health_interval_seconds);
  o.stall_after = absl::Seconds(stall_seconds);
  o.write_timeout = absl::Seconds(write_timeout_seconds);
  o.keepalive_time = absl::Seconds(keepalive_seconds);
  o.keepalive_timeout = absl::Seconds(keepalive_timeout_seconds);
  o.min_client_ping_interval = absl::Seconds(min_client_ping_seconds);
  // Values that parse but are out of range are usage errors too, found before the base
  // is loaded; the message names the flag, and the variable if that is what set it.
  if (const absl::Status valid = o.Validate(); !valid.ok()) {
    std::fprintf(stderr, "deltaserved: %s%s\n", std::string(valid.message()).c_str(),
                 FromEnvironmentHint(valid.message(), argc, argv).c_str());
    return kUsageExit;
  }

  if (!InstallStopSignals()) {  // the loader's preinit call failed, and so did this one
    internal::LogError("start failed", {{"error", "pipe2() failed"}});
    return 1;
  }
  // Past the file size limit (ulimit -f, systemd LimitFSIZE) a write fails with EFBIG,
  // an I/O error the store reports, instead of SIGXFSZ killing the daemon unlogged.
  signal(SIGXFSZ, SIG_IGN);
  if (!arenas_limited) {
    internal::LogWarn("malloc arenas not limited (glibc refused M_ARENA_MAX)",
                      {{"arenas", std::to_string(deltaserve::server::kServerMallocArenas)}});
  }

  // A stop signal before this point (while the libraries initialised, flags were parsed):
  // nothing is started, so there is nothing to drain.
  if (const int sig = StopSignal(/*wait=*/false); sig != 0) {
    internal::LogInfo("stopped during start-up", {{"signal", StopSignalName(sig)}});
    return 0;
  }
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(o);
  if (!server.ok()) {
    // A busy port, a missing file: the error names the flag, or the variable that set it.
    internal::LogError(
        "start failed",
        {{"error",
          InVariableTerms(server.status().ToString(absl::StatusToStringMode::kWithNoExtraData),
                          argc, argv)}});
    // A --base that is not a model (a PyTorch checkpoint) is a usage error, exit 2.
    return deltaserve::common::IsUsageError(server.status()) ? kUsageExit : 1;
  }
  // One that came while the server started (loading the base, opening the database) is
  // answered now that it serves: it drains at once.
  int sig = StopSignal(/*wait=*/false);
  if (sig != 0) {
    internal::LogInfo("stopped during start-up", {{"signal", StopSignalName(sig)}});
  } else {
    sig = StopSignal(/*wait=*/true);
    internal::LogInfo("signal", {{"signal", StopSignalName(sig)}});
  }
  (*server)->Shutdown(o.drain_timeout);
  (*server)->Wait();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }

// deltactl: the deltaserve command line. The subcommands live in deltactl_offline.cc,
// deltactl_report.cc and deltactl_remote.cc (client/internal/deltactl_command.h); this
// file registers them, parses and dispatches, and holds the helpers they share.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "client/internal/deltactl_command.h"
#include "common/json.h"
#include "common/plural.h"
#include "common/status_macros.h"
#include "common/tmp_files.h"
#include "common/usage_error.h"
#include "grpc/support/log.h"

namespace deltaserve::client {

ProgressLine::ProgressLine(std::string label)
    : label_(std::move(label)), tty_(::isatty(STDERR_FILENO) != 0) {}

ProgressLine::~ProgressLine() {
  if (open_) absl::FPrintF(stderr, "\n");
}

void ProgressLine::Update(uint64_t done, uint64_t total, const std::string& text) {
  if (tty_) {
    absl::FPrintF(stderr, "\r\033[K%s: %s", label_, text);
    open_ = done != total;
    if (!open_) absl::FPrintF(stderr, "\n");
    return;
  }
  const int decile = total == 0 ? 10 : static_cast<int>(10 * done / total);
  if (decile != last_decile_) {
    last_decile_ = decile;
    absl::FPrintF(stderr, "%s: %s\n", label_, text);
  }
}

void ProgressLine::End(const std::string& text) {
  absl::FPrintF(stderr, "%s%s: %s\n", tty_ ? "\r\033[K" : "", label_, text);
  open_ = false;
}

codec::ProgressFn StderrProgress(std::string label) {
  auto line = std::make_shared<ProgressLine>(std::move(label));
  return [line](size_t done, size_t total, const std::string& name) {
    line->Update(done, total,
                 absl::StrFormat("%d/%s (%s)", done, common::Counted(total, "tensor"), name));
  };
}

void AddDTypeOption(CLI::App* sub, std::string* dtype) {
  sub->add_option("--dtype", *dtype, "Output dtype f32, f16 or bf16 (default: each tensor's dtype in the finetuned model)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "F32", "F16", "BF16"}));
}

absl::StatusOr<std::optional<codec::DType>> ParseDTypeOption(const std::string& dtype) {
  if (dtype.empty()) return std::optional<codec::DType>();
  DS_ASSIGN_OR_RETURN(codec::DType d, codec::ParseDType(absl::AsciiStrToUpper(dtype)));
  return d;
}

absl::Status PrintJson(const nlohmann::json& j) {
  DS_ASSIGN_OR_RETURN(std::string text, common::DumpJson(j, "--json output", /*indent=*/2));
  absl::PrintF("%s\n", text);
  return absl::OkStatus();
}

}  // namespace deltaserve::client

// OpenBLAS's thread setter, weak: present when libblas.so.3 is OpenBLAS (Debian's
// default alternative), null with another BLAS, which then runs as it is configured.
extern "C" void openblas_set_num_threads(int threads) __attribute__((weak));

int main(int argc, char** argv) {
  namespace client = deltaserve::client;
  // The ecq encoder's low-rank factors (codec/internal/ecq_lowrank.cc) come from BLAS,
  // whose summation order follows its thread count. deltactl parallelises over tensors
  // itself, so BLAS runs on one thread: a container's bytes do not depend on the
  // machine's core count or OPENBLAS_NUM_THREADS (codec/FORMAT.md).
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(1);
  // Ctrl-C during a pull, decompress or compress removes the .tmp output (as large as
  // the model) instead of leaving it; `ulimit -f` gives an error message, not SIGXFSZ.
  deltaserve::common::RemoveTmpFilesOnSignals();
  // gRPC's own log lines ("E1201 13:21:08.65 ... ssl_transport_security.cc:1420] Handshake
  // failed ...") are not written to the user: every failure they describe also comes back
  // as the call's status, which deltactl prints in its terms. GRPC_VERBOSITY set in the
  // environment (e.g. =DEBUG, to debug a connection) brings them back.
  if (std::getenv("GRPC_VERBOSITY") == nullptr) {
    gpr_set_log_function([](gpr_log_func_args*) {});
  }
  CLI::App app{
      "deltactl: compress finetuned models as deltas against their base (codec v2 or Delta-DCT), "
      "inspect and evaluate them, and talk to a deltaserve server."};
  app.set_version_flag("--version", "deltactl " DELTASERVE_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
  client::CommandAction action;
  client::AddOfflineCommands(app, &action);
  client::AddReportCommands(app, &action);
  client::AddRemoteCommands(app, &action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!action) return 2;
  const absl::Status status = action();
  if (!status.ok()) {
    std::fprintf(stderr, "deltactl: %s\n",
                 status.ToString(absl::StatusToStringMode::kWithNoExtraData).c_str());
    // A file that is not what its flag takes is a usage error, as a bad flag value.
    return deltaserve::common::IsUsageError(status) ? 2 : 1;
  }
  return 0;
}

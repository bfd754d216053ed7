// deltactl: the deltaserve command line. Subcommands register themselves
// (client/internal/deltactl_command.h); this file only parses and dispatches.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "client/internal/deltactl_command.h"

namespace deltaserve::client {
namespace {

std::vector<CommandRegistrar>& MutableRegistrars() {
  static auto* registrars = new std::vector<CommandRegistrar>();
  return *registrars;
}

}  // namespace

bool RegisterDeltactlCommands(CommandRegistrar registrar) {
  MutableRegistrars().push_back(registrar);
  return true;
}

const std::vector<CommandRegistrar>& DeltactlRegistrars() { return MutableRegistrars(); }

codec::ProgressFn StderrProgress(std::string label) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto last_decile = std::make_shared<int>(-1);
  return [label = std::move(label), tty, last_decile](size_t done, size_t total,
                                                      const std::string& name) {
    if (tty) {
      absl::FPrintF(stderr, "\r\033[K%s: %d/%d %s", label, done, total, name);
      if (done == total) absl::FPrintF(stderr, "\n");
      return;
    }
    const int decile = total == 0 ? 10 : static_cast<int>(10 * done / total);
    if (decile != *last_decile) {
      *last_decile = decile;
      absl::FPrintF(stderr, "%s: %d/%d tensors (%s)\n", label, done, total, name);
    }
  };
}

}  // namespace deltaserve::client

int main(int argc, char** argv) {
  using deltaserve::client::CommandAction;
  CLI::App app{
      "deltactl: compress finetuned models as Delta-DCT deltas against their base, "
      "inspect and evaluate them, and talk to a deltaserve server."};
  app.set_version_flag("--version", "deltactl " DELTASERVE_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
  CommandAction action;
  for (auto registrar : deltaserve::client::DeltactlRegistrars()) registrar(app, &action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!action) return 2;
  const absl::Status status = action();
  if (!status.ok()) {
    std::fprintf(stderr, "deltactl: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

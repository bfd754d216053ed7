// How deltactl's subcommands plug into its main (client/deltactl_main.cc).
//
// Each group of subcommands lives in its own file (deltactl_offline.cc, deltactl_report.cc,
// deltactl_remote.cc, ...) and registers itself at static-initialization time:
//
//   namespace {
//   void AddMyCommands(CLI::App& app, CommandAction* action) {
//     auto* sub = app.add_subcommand("frob", "Frobnicates a delta");
//     auto opts = std::make_shared<FrobOptions>();
//     sub->add_option("--in", opts->in, "Input")->required();
//     sub->callback([opts, action] { *action = [opts] { return RunFrob(*opts); }; });
//   }
//   const bool kRegistered = RegisterDeltactlCommands(&AddMyCommands);
//   }  // namespace
//
// main parses the command line (CLI11), runs the selected action, prints a non-OK status
// as "deltactl: CODE: message" on stderr and exits 1 (2 for usage errors). Flags are
// parsed only here and in main (STYLE.md, "Options").
#ifndef DELTASERVE_CLIENT_INTERNAL_DELTACTL_COMMAND_H_
#define DELTASERVE_CLIENT_INTERNAL_DELTACTL_COMMAND_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "codec/delta_codec.h"

namespace deltaserve::client {

// The work of the subcommand chosen on the command line; its status is the exit status.
using CommandAction = std::function<absl::Status()>;
// Adds subcommands to `app`; a subcommand's CLI11 callback stores its work in *action.
using CommandRegistrar = void (*)(CLI::App& app, CommandAction* action);

// Default --shard-bytes of `pull --out-dir` and `decompress --out-dir`: the largest shard
// of a Hugging Face checkpoint directory, in bytes of tensor data (save_pretrained's
// default max_shard_size, "5GB").
inline constexpr uint64_t kDefaultShardBytes = 5'000'000'000;

// Adds a registrar; returns true (for a namespace-scope `const bool` initializer).
bool RegisterDeltactlCommands(CommandRegistrar registrar);
// Every registrar added so far.
const std::vector<CommandRegistrar>& DeltactlRegistrars();

// A progress callback that prints "<label>: done/total <name>" on stderr: rewritten in
// place on a terminal, otherwise one line per 10% of the work.
codec::ProgressFn StderrProgress(std::string label);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_DELTACTL_COMMAND_H_

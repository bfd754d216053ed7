// How deltactl's subcommands plug into its main (client/deltactl_main.cc), and the
// helpers every subcommand shares (progress on stderr, --dtype, JSON on stdout).
//
// Each group of subcommands lives in its own file (deltactl_offline.cc,
// deltactl_report.cc, deltactl_remote.cc) behind one Add*Commands function; main calls
// each of them, parses the command line (CLI11), runs the selected action, prints a
// non-OK status as "deltactl: CODE: message" on stderr and exits 1 (2 for usage
// errors). Flags are parsed only in these files and in main (STYLE.md, "Options").
#ifndef DELTASERVE_CLIENT_INTERNAL_DELTACTL_COMMAND_H_
#define DELTASERVE_CLIENT_INTERNAL_DELTACTL_COMMAND_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/client.h"
#include "codec/delta_codec.h"
#include "codec/tensor.h"
#include "nlohmann/json.hpp"

namespace deltaserve::client {

// The work of the subcommand chosen on the command line; its status is the exit status.
using CommandAction = std::function<absl::Status()>;

// Default --shard-bytes of `pull --out-dir` and `decompress --out-dir`: the largest shard
// of a Hugging Face checkpoint directory, in bytes of tensor data (save_pretrained's
// default max_shard_size, "5GB").
inline constexpr uint64_t kDefaultShardBytes = 5'000'000'000;

// Each adds its subcommands to `app`; a subcommand's CLI11 callback stores its work in
// *action. Called once each by main.
void AddOfflineCommands(CLI::App& app, CommandAction* action);  // convert, compress, decompress
void AddReportCommands(CLI::App& app, CommandAction* action);   // inspect, eval
void AddRemoteCommands(CLI::App& app, CommandAction* action);   // push, pull, list, ...

// Progress of one operation on stderr: "<label>: <text>", rewritten in place on a
// terminal, otherwise one line per 10% of the work. The one progress printer of
// deltactl; StderrProgress adapts it to the codec's tensor counts, and remote commands
// to byte counts (client::Progress).
class ProgressLine {
 public:
  explicit ProgressLine(std::string label);
  // Ends a line left open on a terminal (an operation that stopped before its end), so
  // that what is printed next starts on a line of its own.
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  // `done` of `total` units; `text` follows the percentage.
  void Update(uint64_t done, uint64_t total, const std::string& text);
  // The last line, always printed: "<label>: <text>" (an operation's outcome, e.g. a
  // refusal after the bytes were sent).
  void End(const std::string& text);

 private:
  std::string label_;
  bool tty_;
  bool open_ = false;  // a terminal line was drawn and not ended
  int last_decile_ = -1;
};

// A codec progress callback printing "<label>: <done>/<total> tensors (<name>)".
codec::ProgressFn StderrProgress(std::string label);

// Adds the --dtype option (f32, f16 or bf16, either case) to `sub`, stored in `*dtype`.
void AddDTypeOption(CLI::App* sub, std::string* dtype);
// The --dtype value: nullopt when empty (keep each tensor's recorded dtype).
absl::StatusOr<std::optional<codec::DType>> ParseDTypeOption(const std::string& dtype);

// Side files (config.json, tokenizer files, ...) named on the command line: `paths`
// (--side-file, repeatable; each stored under its base name) and, when `from_dir` is
// set (--side-files-from), every file of kCheckpointSideFiles present in it.
// InvalidArgument for a name given twice or a --side-files-from that is not a
// directory; errno statuses naming the path for unreadable files. Names and sizes are
// checked by the server (push) against proto "Side files".
struct SideFileFlags {
  std::vector<std::string> paths;
  std::string from_dir;
};
// What --side-files-from picks: the small files of a Hugging Face checkpoint that make
// it load (model config, generation config, tokenizer and processor files).
inline constexpr const char* kCheckpointSideFiles[] = {
    "config.json",          "generation_config.json",  "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json",           "vocab.txt",               "merges.txt",
    "tokenizer.model",      "spiece.model",            "sentencepiece.bpe.model",
    "chat_template.json",   "chat_template.jinja",     "preprocessor_config.json",
    "processor_config.json"};
// Adds --side-file and --side-files-from to `sub`.
void AddSideFileOptions(CLI::App* sub, SideFileFlags* flags);
absl::StatusOr<std::vector<SideFileUpload>> ReadSideFileFlags(const SideFileFlags& flags);
// Writes `files` into `dir` (each atomically). InvalidArgument for a name that is not a
// plain file name (it would land outside `dir`).
absl::Status WriteSideFilesToDir(const std::vector<SideFileUpload>& files, const std::string& dir);

// Prints `j` on stdout, indented by 2, and a newline: every --json output of deltactl.
// InvalidArgument if `j` holds a string that is not valid UTF-8.
absl::Status PrintJson(const nlohmann::json& j);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_DELTACTL_COMMAND_H_

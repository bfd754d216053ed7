// What a deltactl user reads: flags before or after the subcommand, which flag or
// variable an auth error points at, the push progress of a refused upload, convert's
// summary of skipped weights. Runs the real binary, against the in-process fake
// DeltaService for the remote commands.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/deltactl_test_util.h"
#include "tests/client/fake_delta_service.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::client {
namespace {

using ::deltaserve::client::testing::FakeService;
using ::deltaserve::client::testing::MakeTensor;
using ::deltaserve::testing::DeltactlResult;
using ::deltaserve::testing::RunDeltactl;
using ::testing::HasSubstr;
using ::testing::Not;

class DeltactlCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"DELTASERVE_SERVER", "DELTASERVE_TOKEN", "DELTASERVE_TENANT",
                          "DELTASERVE_CLIENT_KEEPALIVE_SECONDS",
                          "DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS"}) {
      ::unsetenv(v);
    }
    service_.tensors = {MakeTensor("w", codec::DType::kF16, {64, 32}, 1)};
    int port = 0;
    server_ = testing::StartFakeServer(&service_, &port);
    ASSERT_NE(server_, nullptr);
    address_ = "127.0.0.1:" + std::to_string(port);
  }
  void TearDown() override {
    server_->Shutdown();
    for (const char* v : {"DELTASERVE_SERVER", "DELTASERVE_TOKEN", "DELTASERVE_TENANT",
                          "DELTASERVE_CLIENT_KEEPALIVE_SECONDS",
                          "DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS"}) {
      ::unsetenv(v);
    }
  }
  DeltactlResult Run(const std::string& args) { return RunDeltactl(args, tmp_); }
  std::string Authorization() {
    std::lock_guard<std::mutex> lock(service_.mu);
    return service_.last_authorization;
  }

  FakeService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  ::deltaserve::testing::ScopedTempDir tmp_;
};

// A TF.js graph model with one float weight and `ints` int32 scalars.
std::string WriteTfjsModel(const ::deltaserve::testing::ScopedTempDir& dir, int ints) {
  std::string weights = R"({"name": "dense/kernel", "shape": [2], "dtype": "float32"})";
  for (int i = 0; i < ints; ++i) {
    weights += ", {\"name\": \"shape_const_" + std::to_string(100 + i) +
               "\", \"shape\": [], \"dtype\": \"int32\"}";
  }
  {
    std::ofstream bin(dir.File("w.bin"), std::ios::binary);
    const std::string bytes(8 + 4 * ints, '\0');
    bin.write(bytes.data(), bytes.size());
  }
  std::ofstream json(dir.File("model.json"));
  json << R"({"format": "graph-model", "modelTopology": {}, "weightsManifest": [)"
       << R"({"paths": ["w.bin"], "weights": [)" << weights << "]}]}";
  return dir.File("model.json");
}

TEST_F(DeltactlCliTest, RemoteFlagsWorkBeforeAndAfterTheSubcommand) {
  // Before: this was CLI11's "The following arguments were not expected".
  DeltactlResult r = Run("--server " + address_ + " --token tok-before --tenant acme list");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("acme"));
  EXPECT_EQ(Authorization(), "Bearer tok-before");

  r = Run("list --server " + address_ + " --token tok-after --tenant acme");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("acme"));
  EXPECT_EQ(Authorization(), "Bearer tok-after");

  r = Run("--server " + address_ + " --json --timeout 5 info --task chat");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"chat\""));

  // After the subcommand wins over before it, which wins over the variable.
  ::setenv("DELTASERVE_SERVER", "127.0.0.1:1", 1);
  ::setenv("DELTASERVE_TOKEN", "tok-env", 1);
  r = Run("--server 127.0.0.1:1 --token tok-before info --server " + address_ +
          " --token tok-after --task chat --timeout 5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Authorization(), "Bearer tok-after");
  r = Run("--server " + address_ + " --token tok-before info --task chat --timeout 5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Authorization(), "Bearer tok-before");
  ::setenv("DELTASERVE_SERVER", address_.c_str(), 1);
  r = Run("info --task chat --timeout 5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Authorization(), "Bearer tok-env");
}

TEST_F(DeltactlCliTest, ARemoteFlagBeforeAnOfflineSubcommandIsRefused) {
  // It would be ignored: compress and inspect talk to no server.
  DeltactlResult r = Run("--server " + address_ + " inspect x.dds");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--server: is a flag of the remote commands (push, pull, list, "
                               "...); inspect does not take it"));
  r = Run("--json inspect x.dds");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--json: give it after the subcommand: deltactl inspect --json"));
}

// New-user trial (deltaserved --pretouch-cache=2): CLI11 takes any integer, "t", "+" and
// "enable" for a boolean flag. Every boolean flag takes true/false, yes/no, on/off or 1/0.
TEST_F(DeltactlCliTest, ABooleanFlagTakesOnlyTrueOrFalseWords) {
  const std::string list = "list --server " + address_ + " --timeout 5";
  for (const char* bad : {"2", "-1", "t", "+", "enable", "maybe"}) {
    DeltactlResult r = Run(list + " --json=" + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.err;  // a usage error
    EXPECT_THAT(r.err, HasSubstr(std::string("--json: want true/false, yes/no, on/off or 1/0, "
                                             "got '") + bad + "'"));
    r = Run(std::string("compress --base b --finetuned f --out o --allow-missing=") + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr("--allow-missing: want true/false"));
  }
  const DeltactlResult plain = Run(list);
  const DeltactlResult json = Run(list + " --json");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(json.exit_code, 0) << json.err;
  ASSERT_NE(plain.out, json.out);
  for (const char* yes : {"true", "TRUE", "yes", "On", "1"}) {
    EXPECT_EQ(Run(list + " --json=" + yes).out, json.out) << yes;
  }
  for (const char* no : {"false", "No", "off", "0"}) {
    EXPECT_EQ(Run(list + " --json=" + no).out, plain.out) << no;
  }
}

TEST_F(DeltactlCliTest, ANegativeOrNonIntegerShardSizeIsRefusedWhileParsing) {
  // CLI11 alone took "-1" as 2^64 - 1 bytes: one unbounded shard, silently. And 0 was
  // refused only after parsing, exit 1 ("max_shard_bytes must be positive"), a field name.
  const std::string pull = "pull --server " + address_ + " --task chat --out-dir OUT";
  const std::string decompress = "decompress --base b.safetensors --delta d.dds --out-dir OUT";
  for (const std::string& cmd : {pull, decompress}) {
    for (const char* bad : {"-1", "1e9", "12x", "0"}) {
      const std::string args = cmd + " --shard-bytes " + bad;
      DeltactlResult r = Run(args);
      EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.err;  // a usage error
      EXPECT_THAT(r.err, HasSubstr(std::string("--shard-bytes: want a whole number of bytes >= "
                                               "1 (at most 2^64 - 1), got '") + bad + "'"))
          << args;
      EXPECT_FALSE(std::ifstream(tmp_.File("OUT")).good()) << args;
    }
  }
}

// New-user trial: `push --task a/b --in big.dds` read and uploaded the whole container
// before the server refused the name, and `compress`-then-push scripts learnt of a bad
// name only at the end. The store's rule (common/names.h) is now checked while parsing:
// a usage error (exit 2), naming the flag, before any file is read or call made.
TEST_F(DeltactlCliTest, ABadTaskOrTenantNameIsAUsageErrorBeforeAnyWork) {
  const std::string server = " --server " + address_ + " --token tok";
  struct Bad {
    std::string word, shown, rule;
  };
  const std::string long_name(129, 'x');
  const Bad bads[] = {
      {"a/b", "'a/b'", "may only contain [A-Za-z0-9._-]"},
      {"..", "'..'", "must not start with '.'"},
      {"'sp ace'", "'sp ace'", "may only contain [A-Za-z0-9._-]"},
      {"''", "''", "must have 1 to 128 characters (it has 0)"},
      {long_name, "'" + long_name.substr(0, 64) + "...'",
       "must have 1 to 128 characters (it has 129)"},
  };
  // --in names a file that does not exist: reading it would fail NOT_FOUND (exit 1).
  for (const std::string& cmd :
       {"push --in " + tmp_.File("missing.dds"), std::string("info"), std::string("delete"),
        "pull --out " + tmp_.File("m.safetensors"), "pull --out-dir " + tmp_.File("outdir"),
        "pull-delta --out " + tmp_.File("d.dds")}) {
    for (const Bad& bad : bads) {
      const std::string args = cmd + server + " --task " + bad.word;
      DeltactlResult r = Run(args);
      EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.err;
      EXPECT_THAT(r.err, HasSubstr("--task: task name " + bad.shown + " " + bad.rule)) << args;
    }
  }
  for (DeltactlResult r : {Run("list" + server + " --tenant a/b"),
                           Run("--tenant a/b info" + server + " --task chat")}) {
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err,
                HasSubstr("--tenant: tenant name 'a/b' may only contain [A-Za-z0-9._-]"));
  }
  ::setenv("DELTASERVE_TENANT", "../etc", 1);
  DeltactlResult r = Run("list" + server);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("DELTASERVE_TENANT: tenant name '../etc' must not start with '.'"));
  // A pull with no output is a usage error too, found before any call.
  DeltactlResult no_out = Run("pull" + server + " --task chat");
  EXPECT_EQ(no_out.exit_code, 2) << no_out.err;
  EXPECT_THAT(no_out.err, HasSubstr("Exactly 1 option from [--out,--out-dir] is required"));
  EXPECT_EQ(Authorization(), "");  // not one call reached the server
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("outdir")));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("m.safetensors")));
  ::unsetenv("DELTASERVE_TENANT");
  // Good names still work, and an empty --tenant is the token's own.
  r = Run("info" + server + " --task Qwen2.5-0.5B_chat-v1.2 --tenant ''");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Authorization(), "Bearer tok");
}

// --keepalive-seconds / --keepalive-timeout-seconds and their variables are checked
// while parsing (a usage error naming the flag or the variable); good values connect.
TEST_F(DeltactlCliTest, KeepaliveFlagsAndVariablesAreChecked) {
  const std::string info = " info --server " + address_ + " --task chat --timeout 5";
  for (const char* bad : {"-1", "x", "nan"}) {
    DeltactlResult r = Run(info + " --keepalive-seconds " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(std::string("--keepalive-seconds: want 0 (no pings) or a "
                                             "number of seconds")));
    EXPECT_THAT(r.err, HasSubstr(std::string("got '") + bad + "'"));
  }
  DeltactlResult r = Run(info + " --keepalive-timeout-seconds 0");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--keepalive-timeout-seconds: want a positive number of seconds"));
  ::setenv("DELTASERVE_CLIENT_KEEPALIVE_SECONDS", "soon", 1);
  r = Run(info);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("DELTASERVE_CLIENT_KEEPALIVE_SECONDS: want 0 (no pings)"));
  EXPECT_EQ(Run(info + " --keepalive-seconds 2").exit_code, 0);  // the flag wins
  ::setenv("DELTASERVE_CLIENT_KEEPALIVE_SECONDS", "0", 1);  // no pings
  ::setenv("DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS", "-3", 1);
  r = Run(info);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS: want a positive"));
  ::setenv("DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS", "1.5", 1);
  r = Run(info);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run(info + " --keepalive-seconds 0.0001");  // ClientOptions: at least 1 ms
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("keepalive_time must be zero (no keepalive) or at least 1 ms"));
}

TEST_F(DeltactlCliTest, HelpShowsTheServerOptionsAsGlobal) {
  for (const char* args : {"--help", "list --help"}) {
    DeltactlResult r = Run(args);
    ASSERT_EQ(r.exit_code, 0) << args;
    EXPECT_THAT(r.out, HasSubstr("Server options (before or after the subcommand):")) << args;
    EXPECT_THAT(r.out, HasSubstr("Bearer token (env DELTASERVE_TOKEN)")) << args;
  }
}

TEST_F(DeltactlCliTest, AModelGivenAsTheContainerIsInvalidArgumentEverywhere) {
  // inspect, eval and decompress said DATA_LOSS "bad magic", as if a container were
  // damaged; push already said what the file is not and what to do.
  const std::string model = WriteTfjsModel(tmp_, 0);
  ASSERT_EQ(Run("convert --in " + model + " --out " + tmp_.File("m.safetensors")).exit_code, 0);
  const std::string m = tmp_.File("m.safetensors");
  const std::string want = "INVALID_ARGUMENT: " + m +
                           ": not a deltaserve delta container (.dds); make one from the base "
                           "and the finetuned model with deltactl compress";
  for (const std::string& args :
       {"inspect " + m, "eval --base " + m + " --finetuned " + m + " --delta " + m,
        "decompress --base " + m + " --delta " + m + " --out " + tmp_.File("o.safetensors"),
        "push --server " + address_ + " --task t --in " + m}) {
    DeltactlResult r = Run(args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_THAT(r.err, HasSubstr(want)) << args;
  }
}

TEST_F(DeltactlCliTest, AuthErrorsNameTheFlagAndTheVariable) {
  service_.refusal = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                  "missing 'authorization: Bearer <token>' metadata");
  DeltactlResult r = Run("list --server " + address_);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED: list: missing 'authorization: Bearer "
                               "<token>' metadata (no token was given: pass --token TOKEN or "
                               "set DELTASERVE_TOKEN)"));

  service_.refusal = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token");
  r = Run("list --server " + address_ + " --token wrong");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED: list: unknown token (the server at " +
                               address_ +
                               " did not accept the token given by --token or "
                               "DELTASERVE_TOKEN)"));

  service_.refusal =
      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "Checkpoint needs an admin token");
  r = Run("list --server " + address_ + " --token t");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("needs an admin token (the token (--token or DELTASERVE_TOKEN) "
                               "may not do this; admin commands need an admin token, and "
                               "--tenant or DELTASERVE_TENANT names the tenant to act on)"));

  service_.refusal = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "an admin token must name the tenant in the request");
  r = Run("list --server " + address_ + " --token admin");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("must name the tenant in the request (pass --tenant NAME or set "
                               "DELTASERVE_TENANT)"));
}

TEST_F(DeltactlCliTest, APushRefusedAtAdmissionShowsTheRefusalNotAFullBar) {
  const std::vector<uint8_t> container = testing::SmallContainer();
  {
    std::ofstream out(tmp_.File("d.dds"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(container.data()), container.size());
  }
  service_.refusal = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                  "PutDelta: the container was made against base 11, the "
                                  "server's base is 22");
  DeltactlResult r = Run("push --server " + address_ + " --task chat --in " + tmp_.File("d.dds"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, Not(HasSubstr("100%")));
  EXPECT_THAT(r.err, HasSubstr("push chat: 0% 0.0/1.3 KiB\n"));
  EXPECT_THAT(r.err, HasSubstr("push chat: refused by the server (FAILED_PRECONDITION) after "
                               "0.0 of 1.3 KiB sent; nothing was stored\n"));
  // The command the user typed, not the RPC it made (PutDelta).
  EXPECT_THAT(r.err, HasSubstr("deltactl: FAILED_PRECONDITION: push 'chat': the container "
                               "was made against base 11"));

  service_.refusal = grpc::Status::OK;
  r = Run("push --server " + address_ + " --task chat --in " + tmp_.File("d.dds"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("push chat: 100% 1.3/1.3 KiB\n"));
  EXPECT_THAT(r.err, Not(HasSubstr("refused")));
}

// New-user trial: `pull --include-regex '('` reached the server, which refused it (exit 1).
// deltactl checks it by the server's rule (proto::CheckIncludeRegex) while parsing: a
// usage error, no call made.
TEST_F(DeltactlCliTest, AnInvalidIncludeRegexIsAUsageErrorBeforeAnyCall) {
  const std::string pull = "pull --server " + address_ + " --task chat --out " + tmp_.File("o");
  DeltactlResult r = Run(pull + " --include-regex '('");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--include-regex: '(' is not an RE2 regular expression: "
                               "missing ): (\n"));
  r = Run(pull + " --include-regex 'w[' --out-dir " + tmp_.File("d"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--include-regex: 'w[' is not an RE2 regular expression: "
                               "missing ]: ["));
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    EXPECT_EQ(service_.calls, 0);
  }
  // A sibling: admin checkpoint --dir must be absolute on the server.
  r = Run("admin checkpoint --server " + address_ + " --dir backups/today");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--dir: want an absolute path on the server, got 'backups/today'"));
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    EXPECT_EQ(service_.calls, 0);
  }
  r = Run(pull + " --include-regex 'w|x.*'");  // valid: the pull runs
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::lock_guard<std::mutex> lock(service_.mu);
  EXPECT_EQ(service_.last_stream.include_regex(), "w|x.*");
}

// New-user trial: `compress --bits 0x10` was taken as 16 (strtod), `--threads 010` as 8
// (CLI11 reads whole numbers with strtoull(..., 0)), `--streams 0x2` as 2. Numeric flags
// now take plain decimal numerals only: hex, octal-looking leading zeros, exponents,
// signs, spaces and "inf"/"nan" are usage errors naming the flag, before any work.
TEST_F(DeltactlCliTest, NumericFlagsTakeOnlyPlainDecimalNumbers) {
  const std::string compress = "compress --base b.safetensors --finetuned f.safetensors --out o ";
  const std::string pull = "pull --server " + address_ + " --task chat --out o ";
  const std::string bits = "--bits: want bits per weight in (0, 16] (above 16 a lossy code "
                           "costs more than the 16-bit delta; --rule GLOB=raw stores tensors "
                           "exactly), got '";
  const std::pair<std::string, std::string> cases[] = {
      {compress + "--bits 0x10", bits + "0x10'"},
      {compress + "--bits 1e1", bits + "1e1'"},
      {compress + "--bits ' 8'", bits + " 8'"},
      {compress + "--bits 8.", ""},  // parses; fails later on the missing files (exit 1)
      {compress + "--max-error 0x0.1p0", "--max-error: want a relative delta error in (0, 1) "},
      {compress + "--threads 0x10",
       "--threads: want a number of threads in [0, 2147483647], got '0x10'\n"},
      {compress + "--threads 010",
       "--threads: want a number of threads in [0, 2147483647], got '010' (no leading zero: it "
       "would be read as octal)"},
      {compress + "--threads 99999999999", "--threads: want a number of threads in [0, "},
      {compress + "--patch 1e1", "--patch: want a patch edge in [0, 2147483647], got '1e1'"},
      {compress + "--min-dct-elements -5",
       "--min-dct-elements: want a number of elements in [0, 9223372036854775807], got '-5'"},
      {compress + "--ecq-gain-weight 1e3",
       "--ecq-gain-weight: want a plain decimal number (digits and at most one '.'), got '1e3'"},
      {compress + "--max-relative-delta inf",
       "--max-relative-delta: want a plain decimal number (digits and at most one '.'), got "
       "'inf'"},
      {pull + "--streams 0x2", "--streams: want a number of streams in [1, 64], got '0x2'"},
      {pull + "--streams 65", "--streams: want a number of streams in [1, 64], got '65'"},
      {pull + "--timeout 1e3",
       "--timeout: want a positive number of seconds in (0, 31536000], got '1e3'"},
      {"list --server " + address_ + " --timeout 0x10",
       "--timeout: want a positive number of seconds in (0, 31536000], got '0x10'"},
      {"decompress --base b --delta d --out-dir OUT --shard-bytes 0x100",
       "--shard-bytes: want a whole number of bytes >= 1 (at most 2^64 - 1), got '0x100'"},
      {"decompress --base b --delta d --out-dir OUT --shard-bytes 0100",
       "(no leading zero: it would be read as octal)"},
  };
  for (const auto& [args, want] : cases) {
    DeltactlResult r = Run(args);
    if (want.empty()) {
      EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
      EXPECT_THAT(r.err, HasSubstr("b.safetensors")) << args;
      continue;
    }
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(want)) << args;
  }
  std::lock_guard<std::mutex> lock(service_.mu);
  EXPECT_EQ(service_.calls, 0);
}

// New-user trial: `deltactl info` and `list` did not say which tasks were made against
// another base than the server's (only its start-up log and the refused pulls did).
TEST_F(DeltactlCliTest, InfoAndListShowATaskOfAnotherBase) {
  const std::string server = " --server " + address_;
  DeltactlResult r = Run("info --task chat" + server);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("OTHER")));
  r = Run("list" + server);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex("BITS/W BASE   CREATED\n"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex(" ok     [0-9]{4}-"));
  EXPECT_THAT(r.out, Not(HasSubstr("warning")));

  service_.other_base = true;
  r = Run("info --task chat" + server);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\nbase:            OTHER than the server's (GetBase): pulls and "
                               "pins of this task fail with FAILED_PRECONDITION;"));
  r = Run("list" + server);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex(" OTHER  [0-9]{4}-"));
  EXPECT_THAT(r.out, HasSubstr("warning: 1 task was made against another base than the "
                               "server's (BASE OTHER): pulls and pins of it fail with "
                               "FAILED_PRECONDITION"));
  r = Run("info --json --task chat" + server);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"other_base\": true"));
}

TEST_F(DeltactlCliTest, ConvertSummarisesSkippedWeights) {
  // A real model skipped hundreds: their names made one line of ~3000 characters.
  const std::string model = WriteTfjsModel(tmp_, 40);
  DeltactlResult r = Run("convert --in " + model + " --out " + tmp_.File("m.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("converted " + model + " -> " + tmp_.File("m.safetensors") +
                               ": 1 tensor, "));
  EXPECT_THAT(r.out, HasSubstr("\nskipped 40 weights that are not float:\n  shape_const_100\n"
                               "  shape_const_101\n  shape_const_102\n"
                               "  ... and 37 more (--verbose lists them all)\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("shape_const_103")));

  r = Run("convert --verbose --in " + model + " --out " + tmp_.File("m.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("not float:\n  shape_const_100\n  shape_const_101\n"));
  EXPECT_THAT(r.out, HasSubstr("\n  shape_const_138\n  shape_const_139\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("more")));

  // The converted file keeps the list in its metadata; converting it again skips nothing
  // and must not say it did.
  r = Run("convert --in " + tmp_.File("m.safetensors") + " --out " + tmp_.File("n.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("skipped")));

  const std::string one = WriteTfjsModel(tmp_, 1);
  r = Run("convert --in " + one + " --out " + tmp_.File("o.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("skipped 1 weight that is not float:\n  shape_const_100\n"));
}

}  // namespace
}  // namespace deltaserve::client

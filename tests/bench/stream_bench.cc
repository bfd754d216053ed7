// stream_bench: StreamWeights throughput of deltaserved over loopback, beside a plain
// gRPC stream of the same bytes with no decoding, in the same run.
//
//   stream_bench [--workdir DIR] [--layers 24] [--hidden 896] [--ffn 4864]
//                [--vocab 151936] [--workers 2] [--prefetch 1] [--chunk-bytes 1048576]
//                [--cache-mb 3072] [--cold-only] [--legacy-cold] [--pull-streams 1,2,4]
//                [--push-only N] [--ingest-min-bytes N] [--upload-buffer-cache-mb 512]
//                [--second-cold] [--keep-freed-memory] [--malloc-arenas 2] [--pretouch]
//
// Model: synthetic fp16 transformer with the shapes of a 0.5B-class model (Qwen2-0.5B:
// 24 layers, hidden 896, 2 KV heads of 128, FFN 4864, vocab 151936; ~494M weights,
// ~0.99 GB fp16). The finetuned model is base + small Gaussian noise, compressed with
// the default codec options. Models and container are cached in --workdir (made by a
// child process, so that the peak RSS printed is the serving process's own).
//
// Prints, for StreamWeights cold (every tensor decoded; the request sets
// checksum_after_data as DeltaClient does, so rows stream while they decode), cold
// without that opt-in (--legacy-cold: an older client), cached (every tensor from the
// merged-tensor cache) and the plain stream of the same bytes in this run: time to the
// first tensor header and to the first data bytes, total seconds, GB/s (1 GB = 1e9 bytes
// of tensor data) and the process's CPU seconds (both ends; cores = CPU / wall). Then
// the decode workers' CPU time during the cold stream (threads "ds-worker", everything
// they did: RocksDB reads, page faults, hashing) as GB/s per worker CPU-second beside
// the codec's single-core MergeTensor over the same tensors in CPU time; cold / plain;
// the CPU cost of fresh anonymous pages in this run (the cold tensors land in them);
// peak RSS (getrusage) before and after the cold stream beside the bound base mapping +
// cache budget + 256 MiB, and what accounts for the highest RSS sample taken during the
// cold stream(s) (file-backed, merged tensors, kept mappings, RocksDB, malloc; PeakWatch).
// The process limits its malloc arenas as deltaserved does (server::LimitMallocArenas;
// --malloc-arenas 0: glibc's default). Every stream is read to the end and byte-counted,
// not stored.
// Then cached pulls through DeltaClient::PullWeightsToMemory over 1, 2, 4 parallel
// tensor-range streams (PullOptions::streams; checked and copied into memory), each
// beside the first one and the plain stream, with the process's CPU per GB and minor page
// faults during that pull (the first pull's tensors land in pages the process never had).
// --push-only N: N more PutDelta uploads of the container, beside N uploads of the same
// bytes by the same client into a server that only receives them (a plain upload), in
// the same run. --second-cold (e.g. with --cache-mb 1024 --cold-only): a second task cold
// right after the first, through a cache that then evicts, with its decode workers' CPU
// per GB beside the first cold stream's and how many of its merged buffers reused the
// memory of evicted tensors. --pretouch: the server pre-touches the merged memory of a
// first cold pull (ServerOptions::pretouch_cache); the benchmark waits for that to end
// before the cold stream and prints the wait, then how many cold buffers took a
// pre-touched mapping. The cold decode workers' rate is printed beside the codec's
// single-core MergeTensor in every mode (--cold-only too).
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "client/client.h"
#include "codec/container.h"
#include "codec/delta_codec.h"
#include "codec/safetensors.h"
#include "deltaserve/v1/delta_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/server.h"
#include "tests/bench/stream_bench_memory.h"

namespace {

using namespace deltaserve;  // NOLINT: a measurement program
using Clock = std::chrono::steady_clock;
using bench::PeakRssMb;
using bench::PeakWatch;
using bench::ProcessUsage;
using bench::Usage;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Shape {
  int layers = 24, hidden = 896, kv = 256, ffn = 4864, vocab = 151936;
};

std::vector<codec::TensorInfo> Tensors(const Shape& s) {
  std::vector<codec::TensorInfo> t;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    t.push_back({std::move(name), codec::DType::kF16, std::move(shape)});
  };
  add("model.embed_tokens.weight", {s.vocab, s.hidden});
  for (int l = 0; l < s.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj.weight", {s.hidden, s.hidden});
    add(p + "self_attn.k_proj.weight", {s.kv, s.hidden});
    add(p + "self_attn.v_proj.weight", {s.kv, s.hidden});
    add(p + "self_attn.o_proj.weight", {s.hidden, s.hidden});
    add(p + "mlp.gate_proj.weight", {s.ffn, s.hidden});
    add(p + "mlp.up_proj.weight", {s.ffn, s.hidden});
    add(p + "mlp.down_proj.weight", {s.hidden, s.ffn});
    add(p + "input_layernorm.weight", {s.hidden});
    add(p + "post_attention_layernorm.weight", {s.hidden});
  }
  add("model.norm.weight", {s.hidden});
  return t;
}

// Writes base and finetuned safetensors and compresses; in a child process.
int MakeModels(const Shape& shape, const std::string& dir) {
  std::vector<codec::TensorInfo> infos = Tensors(shape);
  std::vector<codec::OwnedTensor> base, ft;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (const codec::TensorInfo& info : infos) {
    int64_t n = info.num_elements();
    std::vector<float> b(n), f(n);
    float scale = info.shape.size() == 1 ? 1.0f : 0.02f;
    for (int64_t i = 0; i < n; ++i) {
      b[i] = (info.shape.size() == 1 ? 1.0f : 0.0f) + scale * dist(rng);
      f[i] = b[i] + 0.1f * scale * dist(rng);
    }
    codec::OwnedTensor tb{info, std::vector<uint8_t>(info.num_bytes())};
    codec::OwnedTensor tf{info, std::vector<uint8_t>(info.num_bytes())};
    codec::FromFloat32(b.data(), n, info.dtype, tb.data.data());
    codec::FromFloat32(f.data(), n, info.dtype, tf.data.data());
    base.push_back(std::move(tb));
    ft.push_back(std::move(tf));
  }
  auto views = [](const std::vector<codec::OwnedTensor>& ts) {
    std::vector<codec::TensorView> v;
    for (const auto& t : ts) v.push_back(t.view());
    return v;
  };
  if (!codec::WriteSafetensors(dir + "/base.safetensors", views(base), {}).ok() ||
      !codec::WriteSafetensors(dir + "/ft.safetensors", views(ft), {}).ok()) {
    std::fprintf(stderr, "cannot write models in %s\n", dir.c_str());
    return 1;
  }
  base.clear();
  ft.clear();
  auto b = codec::ModelReader::Open(dir + "/base.safetensors");
  auto f = codec::ModelReader::Open(dir + "/ft.safetensors");
  if (!b.ok() || !f.ok()) return 1;
  auto t0 = Clock::now();
  auto stats = codec::CompressModel(**b, **f, codec::CompressOptions(), dir + "/task.dds");
  if (!stats.ok()) {
    std::fprintf(stderr, "compress: %s\n", stats.status().ToString().c_str());
    return 1;
  }
  std::printf("compress: %.1f s, container %.1f MB (%.3f bits/weight)\n", Seconds(t0, Clock::now()),
              stats->container_bytes / 1e6, 8.0 * stats->container_bytes / stats->total_weights);
  return 0;
}

// The no-decoding baseline: StreamWeights of pre-merged tensors held in memory, same
// messages (header + chunks of chunk_bytes), same reactor discipline (next write after
// OnWriteDone), no cache, no pool.
class PlainService final : public v1::DeltaService::CallbackService {
 public:
  PlainService(const std::vector<codec::OwnedTensor>* tensors, uint32_t chunk)
      : tensors_(tensors), chunk_(chunk) {}

  grpc::ServerWriteReactor<v1::StreamWeightsResponse>* StreamWeights(
      grpc::CallbackServerContext*, const v1::StreamWeightsRequest*) override {
    class Reactor : public grpc::ServerWriteReactor<v1::StreamWeightsResponse> {
     public:
      Reactor(const std::vector<codec::OwnedTensor>* ts, uint32_t chunk) : ts_(ts), chunk_(chunk) {
        Next();
      }
      void OnWriteDone(bool ok) override {
        if (!ok) return Finish(grpc::Status::CANCELLED);
        Next();
      }
      void OnDone() override { delete this; }

     private:
      void Next() {
        if (i_ == ts_->size()) return Finish(grpc::Status::OK);
        const codec::OwnedTensor& t = (*ts_)[i_];
        if (!header_sent_) {
          auto* h = msg_.mutable_header();
          h->set_name(t.info.name);
          h->set_byte_length(t.data.size());
          header_sent_ = true;
        } else {
          size_t n = std::min<size_t>(chunk_, t.data.size() - off_);
          msg_.mutable_chunk()->set_offset(off_);
          msg_.mutable_chunk()->set_data(t.data.data() + off_, n);
          off_ += n;
        }
        if (header_sent_ && off_ == t.data.size()) {
          ++i_;
          off_ = 0;
          header_sent_ = false;
        }
        StartWrite(&msg_);
      }
      const std::vector<codec::OwnedTensor>* ts_;
      uint32_t chunk_;
      size_t i_ = 0, off_ = 0;
      bool header_sent_ = false;
      v1::StreamWeightsResponse msg_;
    };
    return new Reactor(tensors_, chunk_);
  }

  // The upload baseline: PutDelta that receives every message (gRPC parses each into the
  // request) and counts the container bytes, storing and checking nothing.
  grpc::ServerReadReactor<v1::PutDeltaRequest>* PutDelta(grpc::CallbackServerContext*,
                                                         v1::PutDeltaResponse* response) override {
    class Reactor : public grpc::ServerReadReactor<v1::PutDeltaRequest> {
     public:
      explicit Reactor(v1::PutDeltaResponse* response) : response_(response) {
        StartRead(&request_);
      }
      void OnReadDone(bool ok) override {
        if (!ok) {
          response_->mutable_task()->set_container_bytes(bytes_);
          return Finish(grpc::Status::OK);
        }
        bytes_ += request_.chunk().size();
        StartRead(&request_);
      }
      void OnDone() override { delete this; }

     private:
      v1::PutDeltaResponse* response_;
      v1::PutDeltaRequest request_;
      uint64_t bytes_ = 0;
    };
    return new Reactor(response);
  }

 private:
  const std::vector<codec::OwnedTensor>* tensors_;
  uint32_t chunk_;
};

// CPU seconds (user + system) of this whole process (server, client and benchmark).
double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

struct StreamResult {
  double cpu_s = 0;  // process CPU seconds during the stream (both ends)
  double first_tensor_s = 0, first_bytes_s = 0, total_s = 0;
  uint64_t bytes = 0;
  int tensors = 0;
  bool ok = false;
};

// Reads a StreamWeights stream to its end, counting bytes. `checksum_after_data`: the
// request's opt-in (what DeltaClient sends): a tensor still decoding streams its rows at
// once, its checksum in its last chunk.
StreamResult ReadStream(const std::string& target, const std::string& task,
                        bool checksum_after_data = true) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto stub = v1::DeltaService::NewStub(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  v1::StreamWeightsRequest req;
  req.set_task(task);
  req.set_checksum_after_data(checksum_after_data);
  StreamResult r;
  const double cpu0 = ProcessCpuSeconds();
  auto t0 = Clock::now();
  auto reader = stub->StreamWeights(&ctx, req);
  v1::StreamWeightsResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_header() && r.tensors++ == 0) r.first_tensor_s = Seconds(t0, Clock::now());
    if (msg.has_chunk() && r.bytes == 0) r.first_bytes_s = Seconds(t0, Clock::now());
    if (msg.has_chunk()) r.bytes += msg.chunk().data().size();
  }
  grpc::Status s = reader->Finish();
  r.total_s = Seconds(t0, Clock::now());
  r.cpu_s = ProcessCpuSeconds() - cpu0;
  r.ok = s.ok();
  if (!s.ok()) std::fprintf(stderr, "stream: %s\n", s.error_message().c_str());
  return r;
}

void Print(const char* what, const StreamResult& r) {
  std::printf(
      "%-26s first tensor %8.2f ms (first bytes %8.2f ms)   %6.2f s   %6.3f GB/s   CPU %5.2f s "
      "(%.2f cores)   (%d tensors, %.3f GB)%s\n",
      what, r.first_tensor_s * 1e3, r.first_bytes_s * 1e3, r.total_s, r.bytes / r.total_s / 1e9,
      r.cpu_s, r.cpu_s / r.total_s, r.tensors, r.bytes / 1e9, r.ok ? "" : "  FAILED");
}

// CPU seconds (user + system, /proc/self/task/*/schedstat) of this process's threads
// named `name` (the server names its decode pool "ds-worker").
double ThreadsCpuSeconds(const std::string& name) {
  double ns = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::FILE* f = std::fopen((task.path() / "comm").c_str(), "r");
    if (f == nullptr) continue;
    char comm[64] = {};
    const bool named = std::fgets(comm, sizeof comm, f) != nullptr &&
                       std::string(comm).substr(0, name.size()) == name;
    std::fclose(f);
    if (!named) continue;
    f = std::fopen((task.path() / "schedstat").c_str(), "r");
    if (f == nullptr) continue;
    unsigned long long run = 0;
    if (std::fscanf(f, "%llu", &run) == 1) ns += static_cast<double>(run);
    std::fclose(f);
  }
  return ns / 1e9;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// The codec's own single-core rate on this model's shapes, in this run: MergeTensor of
// every record of the task (the same tensors the cold stream decodes, the 151936 x 896
// embedding included), serially on the calling thread, into one reused buffer whose
// pages are faulted first, hashing nothing. Returns merged bytes per second of this
// thread's CPU time (a busy machine steals wall time, not CPU time).
double SingleCoreMergeRate(const std::string& dir) {
  auto base = codec::ModelReader::Open(dir + "/base.safetensors");
  auto container = codec::MappedContainer::Open(dir + "/task.dds");
  if (!base.ok() || !container.ok()) return 0;
  const codec::ContainerReader& reader = (*container)->reader();
  std::vector<codec::TensorRecord> records;
  size_t largest = 0;
  for (size_t i = 0; i < reader.num_records(); ++i) {
    auto rec = reader.record(i);
    if (!rec.ok()) return 0;
    largest = std::max<size_t>(largest, codec::MergedBytes(*rec, rec->info.dtype));
    records.push_back(*std::move(rec));
  }
  std::vector<uint8_t> out(largest, 1);  // faulted once, outside the timing
  uint64_t bytes = 0;
  const double t0 = ThreadCpuSeconds();
  for (const auto& rec : records) {
    const size_t n = codec::MergedBytes(rec, rec.info.dtype);
    if (!codec::MergeTensor(base->get(), rec, rec.info.dtype, absl::MakeSpan(out.data(), n)).ok())
      return 0;
    bytes += n;
  }
  return bytes / (ThreadCpuSeconds() - t0);
}

// CPU seconds per GB (1e9 bytes) of this thread to get fresh anonymous pages, in this run:
// mmap + madvise(MADV_POPULATE_WRITE) of 256 MiB, then munmap. Every cold merged tensor
// lands in such pages (the server populates them the same way), and on a VM their cost
// depends on the host: the same binary measured 1.4 to 3 s of decode-worker CPU per cold
// GB minutes apart, the difference all in clear_page (perf). 0 if populating is refused.
double FreshPageSecondsPerGb() {
  constexpr size_t kBytes = size_t{256} << 20;
  void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 0;
  const double t0 = ThreadCpuSeconds();
  const int rc = madvise(p, kBytes, 23);  // MADV_POPULATE_WRITE (Linux 5.14+)
  const double cpu = ThreadCpuSeconds() - t0;
  munmap(p, kBytes);
  return rc == 0 ? cpu / (kBytes / 1e9) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Shape shape;
  std::string workdir = "/tmp/deltaserve-stream-bench";
  int workers = 2, prefetch = 1;
  uint32_t chunk = 1u << 20;
  CLI::App app{"StreamWeights throughput vs a plain gRPC stream"};
  app.add_option("--workdir", workdir, "cache of models and container")->capture_default_str();
  app.add_option("--layers", shape.layers)->capture_default_str();
  app.add_option("--hidden", shape.hidden)->capture_default_str();
  app.add_option("--kv", shape.kv, "rows of k_proj/v_proj")->capture_default_str();
  app.add_option("--ffn", shape.ffn)->capture_default_str();
  app.add_option("--vocab", shape.vocab)->capture_default_str();
  app.add_option("--workers", workers)->capture_default_str();
  app.add_option("--prefetch", prefetch)->capture_default_str();
  app.add_option("--chunk-bytes", chunk)->capture_default_str();
  std::vector<uint32_t> pull_streams = {1, 2, 4};
  app.add_option("--pull-streams", pull_streams,
                 "cached client pulls (into memory) over these numbers of parallel streams")
      ->delimiter(',')
      ->capture_default_str();
  int push_only = 0;
  app.add_option("--push-only", push_only,
                 "after the first push, push the container this many more times and stop");
  uint64_t cache_mb = 3072;
  app.add_option("--cache-mb", cache_mb, "merged-tensor cache budget (MiB)")->capture_default_str();
  bool legacy_cold = false;
  app.add_flag("--legacy-cold", legacy_cold,
               "also stream a second copy of the task cold without checksum_after_data (an "
               "older client: each header waits for its whole tensor)");
  uint64_t ingest_min_bytes = storage::StoreOptions().ingest_min_bytes;
  app.add_option("--ingest-min-bytes", ingest_min_bytes,
                 "StoreOptions::ingest_min_bytes of the server's store (commits of at least "
                 "this many bytes are ingested as table files; larger than the container: "
                 "through the write-ahead log)")
      ->capture_default_str();
  uint64_t upload_cache_mb = server::ServerOptions().upload_buffer_cache_bytes >> 20;
  app.add_option("--upload-buffer-cache-mb", upload_cache_mb,
                 "ServerOptions::upload_buffer_cache_bytes in MiB (0: every upload maps, and "
                 "the kernel zero-fills, its own buffer)")
      ->capture_default_str();
  bool second_cold = false;
  app.add_flag("--second-cold", second_cold,
               "after the cold stream, stream a second task (the same container under another "
               "name) cold; with --cache-mb below twice the merged model its tensors evict the "
               "first task's and reuse their memory (MergedMemoryPool): a server whose cache "
               "is full");
  bool keep_freed = false;
  app.add_flag("--keep-freed-memory", keep_freed,
               "keep freed heap memory as deltactl pull does (client/internal/pull_memory.h: "
               "mallopt M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 1 GiB; the server in this "
               "process too)");
  int malloc_arenas = server::kServerMallocArenas;
  app.add_option("--malloc-arenas", malloc_arenas,
                 "glibc malloc arenas of this process (server::LimitMallocArenas, as deltaserved "
                 "sets at start; 0: glibc's default, 8 per core)")
      ->capture_default_str();
  bool pretouch = false;
  app.add_flag("--pretouch", pretouch,
               "start the server with pretouch_cache (deltaserved --pretouch-cache) and wait "
               "until the pre-touch has ended before the cold stream");
  bool cold_only = false;
  app.add_flag("--cold-only", cold_only,
               "stop after the cold stream (to profile it alone, e.g. under perf record)");
  CLI11_PARSE(app, argc, argv);
  if (malloc_arenas > 0 && !server::LimitMallocArenas(malloc_arenas)) {
    std::fprintf(stderr, "glibc refused M_ARENA_MAX %d\n", malloc_arenas);
    return 1;
  }
  if (keep_freed && (mallopt(M_MMAP_THRESHOLD, 32 << 20) != 1 ||
                     mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1)) {
    std::fprintf(stderr, "glibc refused mallopt\n");
    return 1;
  }

  std::string tag = std::to_string(shape.layers) + "x" + std::to_string(shape.hidden) + "x" +
                    std::to_string(shape.ffn) + "x" + std::to_string(shape.vocab);
  std::string dir = workdir + "/" + tag;
  std::filesystem::create_directories(dir);
  if (!std::filesystem::exists(dir + "/task.dds")) {
    std::printf("generating models in %s (child process)\n", dir.c_str());
    std::fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      int rc = MakeModels(shape, dir);
      std::fflush(stdout);
      _exit(rc);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
  }

  server::ServerOptions o;
  o.base_path = dir + "/base.safetensors";
  o.db_path = dir + "/db";
  std::filesystem::remove_all(o.db_path);
  o.listen = "127.0.0.1:0";
  o.metrics_listen = "";
  o.workers = workers;
  o.prefetch_tensors = prefetch;
  o.chunk_bytes = chunk;
  o.cache_bytes = cache_mb << 20;
  const double rss_bound_mb = std::filesystem::file_size(o.base_path) / 1048576.0 + cache_mb + 256;
  o.store.sync_writes = false;
  o.store.ingest_min_bytes = ingest_min_bytes;
  o.upload_buffer_cache_bytes = upload_cache_mb << 20;
  o.pretouch_cache = pretouch;
  auto t0 = Clock::now();
  auto srv = server::Server::Start(o);
  if (!srv.ok()) {
    std::fprintf(stderr, "server: %s\n", srv.status().ToString().c_str());
    return 1;
  }
  std::printf("server start (mmap + hash base): %.2f s\n", Seconds(t0, Clock::now()));
  std::string target = "127.0.0.1:" + std::to_string((*srv)->port());
  client::ClientOptions co;
  co.target = target;
  auto cl = client::DeltaClient::Open(co);
  if (!cl.ok()) return 1;
  t0 = Clock::now();
  auto pushed = (*cl)->PushDeltaFile("bench", dir + "/task.dds");
  if (!pushed.ok()) {
    std::fprintf(stderr, "push: %s\n", pushed.status().ToString().c_str());
    return 1;
  }
  std::printf("push: %.2f s (%.1f MB), merged model %.3f GB, %u tensors\n",
              Seconds(t0, Clock::now()), pushed->container_bytes() / 1e6,
              pushed->merged_bytes() / 1e9, pushed->num_tensors());

  if (push_only > 0) {
    // PutDelta ingest alone (e.g. under perf record): more uploads of the same container
    // under new names (a re-push of an identical task is answered "unchanged" unwritten).
    double seconds = 0;
    const double cpu0 = ProcessCpuSeconds();
    for (int i = 0; i < push_only; ++i) {
      t0 = Clock::now();
      auto p = (*cl)->PushDeltaFile("push" + std::to_string(i), dir + "/task.dds");
      if (!p.ok()) {
        std::fprintf(stderr, "push: %s\n", p.status().ToString().c_str());
        return 1;
      }
      seconds += Seconds(t0, Clock::now());
    }
    const double cpu = ProcessCpuSeconds() - cpu0;
    // Same run, same client code and bytes: a plain gRPC upload into a server that only
    // receives them.
    (*srv)->Shutdown(absl::Seconds(5));
    (*srv)->Wait();
    srv->reset();
    PlainService plain(nullptr, chunk);
    grpc::ServerBuilder builder;
    int plain_port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &plain_port);
    builder.RegisterService(&plain);
    auto plain_server = builder.BuildAndStart();
    client::ClientOptions plain_options = co;
    plain_options.target = "127.0.0.1:" + std::to_string(plain_port);
    auto plain_client = client::DeltaClient::Open(plain_options);
    if (!plain_client.ok()) return 1;
    double plain_seconds = 0;
    const double plain_cpu0 = ProcessCpuSeconds();
    for (int i = 0; i < push_only; ++i) {
      t0 = Clock::now();
      auto p = (*plain_client)->PushDeltaFile("plain" + std::to_string(i), dir + "/task.dds");
      if (!p.ok()) {
        std::fprintf(stderr, "plain upload: %s\n", p.status().ToString().c_str());
        return 1;
      }
      plain_seconds += Seconds(t0, Clock::now());
    }
    const double plain_cpu = ProcessCpuSeconds() - plain_cpu0;
    plain_server->Shutdown();
    const double gb = push_only * pushed->container_bytes() / 1e9;
    const double rate = push_only * pushed->container_bytes() / seconds / 1e6;
    const double plain_rate = push_only * pushed->container_bytes() / plain_seconds / 1e6;
    std::printf(
        "PutDelta x%d: %.2f s, %.0f MB/s of container bytes over loopback = %.0f%% of a plain "
        "upload of the same bytes (%.2f s, %.0f MB/s); CPU (both ends) %.2f s/GB against "
        "%.2f s/GB\n",
        push_only, seconds, rate, 100.0 * rate / plain_rate, plain_seconds, plain_rate, cpu / gb,
        plain_cpu / gb);
    return 0;
  }
  if (pretouch) {
    // The pre-touch thread runs at idle priority, beside the push above: what is left of
    // it after the push is waited for here, outside every figure below.
    t0 = Clock::now();
    server::Server::PretouchStats pt = (*srv)->pretouch_stats();
    while (pt.running) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      pt = (*srv)->pretouch_stats();
    }
    std::printf(
        "pretouch: %.1f of %.1f MB planned in %.2f s wall (%.2f s CPU = %.2f s per GB), end "
        "'%s'; waited %.2f s for it after the push\n",
        pt.bytes / 1e6, pt.planned_bytes / 1e6, pt.seconds, pt.cpu_seconds,
        pt.bytes > 0 ? pt.cpu_seconds / (pt.bytes / 1e9) : 0.0, pt.end.c_str(),
        Seconds(t0, Clock::now()));
  }
  const double rss_before_cold = PeakRssMb();
  std::optional<PeakWatch> watch;
  watch.emplace(srv->get());
  const server::MergedMemoryStats pool_before_cold = server::ProcessMergedMemoryStats();
  const double worker_cpu_before = ThreadsCpuSeconds("ds-worker");
  StreamResult cold = ReadStream(target, "bench");
  const double worker_cpu = ThreadsCpuSeconds("ds-worker") - worker_cpu_before;
  double rss_after_cold = PeakRssMb();
  {
    const server::MergedMemoryStats pool = server::ProcessMergedMemoryStats();
    std::printf(
        "cold stream's merged buffers >= 256 KiB: %llu pre-touched, %llu reused, %llu mapped "
        "afresh, %llu taken over\n",
        static_cast<unsigned long long>(pool.pretouched_taken - pool_before_cold.pretouched_taken),
        static_cast<unsigned long long>(pool.reused - pool_before_cold.reused -
                                        (pool.pretouched_taken - pool_before_cold.pretouched_taken)),
        static_cast<unsigned long long>(pool.mapped - pool_before_cold.mapped),
        static_cast<unsigned long long>(pool.handed_over - pool_before_cold.handed_over));
  }
  if (second_cold) {
    const server::MergedMemoryStats pool0 = server::ProcessMergedMemoryStats();
    auto p = (*cl)->PushDeltaFile("bench-2", dir + "/task.dds");
    if (!p.ok()) return 1;
    const double cpu0 = ThreadsCpuSeconds("ds-worker");
    StreamResult second = ReadStream(target, "bench-2");
    const double cpu = ThreadsCpuSeconds("ds-worker") - cpu0;
    Print("cold, second task", second);
    rss_after_cold = PeakRssMb();  // before the reference below maps the model again
    std::printf("%s\n", watch->Report().c_str());
    const server::MergedMemoryStats pool = server::ProcessMergedMemoryStats();
    const double single_core = SingleCoreMergeRate(dir);
    std::printf(
        "decode workers, second cold task: %.2f s CPU per GB against the first's %.2f s (%.0f%%) "
        "= %.0f%% (first: %.0f%%) of the codec's single-core MergeTensor on the same tensors in "
        "this run (%.3f GB/s of CPU time); merged buffers >= 256 KiB: %llu taken over from "
        "evicted tensors, %llu reused from the pool, %llu mapped afresh (%.0f MiB kept at the "
        "end, cap %llu MiB)\n",
        cpu / (second.bytes / 1e9), worker_cpu / (cold.bytes / 1e9),
        100.0 * (cpu / second.bytes) / (worker_cpu / cold.bytes),
        100.0 * (second.bytes / cpu) / single_core, 100.0 * (cold.bytes / worker_cpu) / single_core,
        single_core / 1e9, static_cast<unsigned long long>(pool.handed_over - pool0.handed_over),
        static_cast<unsigned long long>(pool.reused - pool0.reused),
        static_cast<unsigned long long>(pool.mapped - pool0.mapped),
        pool.kept_bytes / 1048576.0, static_cast<unsigned long long>(pool.cap_bytes >> 20));
    if (!second.ok) return 1;
  }
  if (!second_cold) std::printf("%s\n", watch->Report().c_str());
  watch.reset();
  if (cold_only) {
    Print("StreamWeights cold", cold);
    std::printf(
        "peak RSS: %.0f MB before the cold stream, %.0f MB after %s; bound base mapping + "
        "cache budget + 256 MiB = %.0f MB\n",
        rss_before_cold, rss_after_cold, second_cold ? "both cold tasks" : "it", rss_bound_mb);
    const double single_core = SingleCoreMergeRate(dir);
    std::printf(
        "decode workers (cold): %.2f s CPU = %.3f GB/s per worker CPU-second = %.0f%% of the "
        "codec's single-core MergeTensor on the same tensors in this run (%.3f GB/s of CPU "
        "time)%s\n",
        worker_cpu, cold.bytes / worker_cpu / 1e9, 100.0 * (cold.bytes / worker_cpu) / single_core,
        single_core / 1e9, pretouch ? ", pre-touched" : "");
    std::printf("fresh pages in this run: %.2f s CPU per GB (mmap + MADV_POPULATE_WRITE)\n",
                FreshPageSecondsPerGb());
    return cold.ok ? 0 : 1;
  }
  // Worker time spent in decode+merge (deltaserve_decode_seconds), summed over tensors.
  double decode_sum = 0;
  {
    std::string text = (*srv)->MetricsText();
    const std::string key = "deltaserve_decode_seconds_sum ";
    size_t at = text.find(key);
    if (at != std::string::npos) decode_sum = std::stod(text.substr(at + key.size()));
  }
  StreamResult cold_legacy;
  if (legacy_cold) {
    // The same task under another name: cold again, for a client without the opt-in.
    auto p = (*cl)->PushDeltaFile("bench-legacy", dir + "/task.dds");
    if (!p.ok()) return 1;
    cold_legacy = ReadStream(target, "bench-legacy", /*checksum_after_data=*/false);
  }
  StreamResult cached = ReadStream(target, "bench");

  // Cached pulls through the client library over N parallel tensor-range streams
  // (PullOptions::streams), into memory, every tensor's checksum verified.
  // Each pull's process CPU (both ends) and minor page faults: a pull's tensors land in
  // memory the process may never have touched (its first pull) or that glibc kept from
  // the previous pull, and on a VM a page the guest has not touched for a while can cost
  // several times more to fault in (client/internal/pull_memory.h).
  struct Pull {
    uint32_t streams;
    client::PullStats stats;
    Usage usage;
  };
  std::vector<Pull> pulls;
  for (uint32_t n : pull_streams) {
    client::PullOptions po;
    po.streams = n;
    const Usage u0 = ProcessUsage();
    auto m = (*cl)->PullWeightsToMemory("bench", po);
    const Usage u1 = ProcessUsage();
    if (!m.ok()) {
      std::fprintf(stderr, "pull --streams %u: %s\n", n, m.status().ToString().c_str());
      return 1;
    }
    pulls.push_back(
        {n, m->stats, {u1.user - u0.user, u1.sys - u0.sys, u1.minor_faults - u0.minor_faults}});
  }

  // Baseline: the same merged bytes, pre-decoded in memory, through a plain stream.
  std::vector<codec::OwnedTensor> merged;
  {
    client::PullOptions po;
    auto m = (*cl)->PullWeightsToMemory("bench", po);
    if (!m.ok()) return 1;
    merged = std::move(m->tensors);
  }
  (*srv)->Shutdown(absl::Seconds(5));
  (*srv)->Wait();
  srv->reset();
  PlainService plain(&merged, chunk);
  grpc::ServerBuilder builder;
  int plain_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &plain_port);
  builder.RegisterService(&plain);
  auto plain_server = builder.BuildAndStart();
  StreamResult base = ReadStream("127.0.0.1:" + std::to_string(plain_port), "bench");
  plain_server->Shutdown();

  std::printf("\nworkers=%d prefetch=%d chunk=%u bytes, loopback, %u hardware threads%s\n",
              workers, prefetch, chunk, std::thread::hardware_concurrency(),
              keep_freed ? ", --keep-freed-memory" : "");
  Print("StreamWeights cold", cold);
  if (legacy_cold) Print("cold, no checksum_after_data", cold_legacy);
  Print("StreamWeights cached", cached);
  Print("plain gRPC stream", base);
  for (const Pull& p : pulls) {
    const client::PullStats& st = p.stats;
    const double rate = st.bytes / st.seconds;
    const client::PullStats& one = pulls.front().stats;
    const double gb = st.bytes / 1e9;
    std::printf(
        "client pull cached, %2u streams: first tensor %8.2f ms   %6.2f s   %6.3f GB/s   "
        "= %.2fx the %u-stream pull, %.0f%% of the plain stream; CPU (both ends) %.2f s/GB "
        "(%.2f user, %.2f sys), %ld minor faults\n",
        p.streams, st.first_tensor_seconds * 1e3, st.seconds, rate / 1e9,
        rate / (one.bytes / one.seconds), pulls.front().streams,
        100.0 * rate / (base.bytes / base.total_s), (p.usage.user + p.usage.sys) / gb,
        p.usage.user / gb, p.usage.sys / gb, p.usage.minor_faults);
  }
  const double single_core = SingleCoreMergeRate(dir);
  const double worker_rate = cold.bytes / worker_cpu;
  std::printf(
      "decode workers (cold): %.2f s CPU (ds-worker threads, all they did) = %.3f GB/s per "
      "worker CPU-second = %.0f%% of the codec's single-core MergeTensor on the same tensors "
      "in this run (%.3f GB/s of CPU time, %.0f M weights/s)\n",
      worker_cpu, worker_rate / 1e9, 100.0 * worker_rate / single_core, single_core / 1e9,
      single_core / 2e6);
  std::printf(
      "fresh pages in this run: %.2f s CPU per GB (mmap + MADV_POPULATE_WRITE of 256 MiB; the "
      "cold stream's merged tensors need %.3f GB of them)\n",
      FreshPageSecondsPerGb(), cold.bytes / 1e9);
  std::printf(
      "decode+merge+hash wall time summed over tensors (deltaserve_decode_seconds): %.2f s = "
      "%.3f GB/s per worker\n",
      decode_sum, cold.bytes / decode_sum / 1e9);
  // CPU bound: the whole process (server, client, benchmark) on hardware_concurrency
  // cores cannot stream cold faster than cores / (CPU seconds per GB).
  const double cores = std::thread::hardware_concurrency();
  const double cold_cpu_gb = cold.cpu_s / (cold.bytes / 1e9);
  const double plain_cpu_gb = base.cpu_s / (base.bytes / 1e9);
  std::printf(
      "CPU per GB (both ends): cold %.2f s (decode workers %.2f s, the rest %.2f s), cached "
      "%.2f s, plain stream %.2f s; on %.0f cores the cold stream is bounded by %.3f GB/s = "
      "%.0f%% of the plain stream\n",
      cold_cpu_gb, worker_cpu / (cold.bytes / 1e9), cold_cpu_gb - worker_cpu / (cold.bytes / 1e9),
      cached.cpu_s / (cached.bytes / 1e9), plain_cpu_gb, cores, cores / cold_cpu_gb,
      100.0 * (cores / cold_cpu_gb) / (base.bytes / base.total_s / 1e9));
  std::printf("cold / plain = %.0f%%   cached / plain = %.0f%%\n",
              100.0 * (cold.bytes / cold.total_s) / (base.bytes / base.total_s),
              100.0 * (cached.bytes / cached.total_s) / (base.bytes / base.total_s));
  std::printf(
      "peak RSS: %.0f MB before the cold stream, %.0f MB after it; bound base mapping + cache "
      "budget + 256 MiB = %.0f MB; %.0f MB at the end (+ in-memory copy for the plain "
      "baseline)\n",
      rss_before_cold, rss_after_cold, rss_bound_mb, PeakRssMb());
  return 0;
}

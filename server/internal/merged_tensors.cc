#include "server/internal/merged_tensors.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "codec/delta_codec.h"
#include "common/status_macros.h"
#include "server/internal/cluster_glue.h"
#include "server/internal/convert.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {

std::string MergedTensorKey(const std::string& group, uint64_t version, size_t index,
                            std::optional<codec::DType> out_dtype) {
  return absl::StrCat(group, "#", version, "#", index, "#",
                      out_dtype ? std::string(codec::DTypeName(*out_dtype)) : "rec");
}

namespace {

// Weights per part when a tensor is split across workers: small enough to balance the
// embedding (136 M weights in a 0.5B model) over the pool, large enough that the
// per-part overhead (one payload parse, one closure) stays well under 1%.
constexpr int64_t kMinPartWeights = int64_t{1} << 22;

// Runs codec::MergeTensorPart for parts [0, num_parts): the calling worker and up to
// num_parts - 1 helpers queued on the pool claim parts from a shared counter. The caller
// then waits only for parts that other workers have already started (never for queued
// closures), so it cannot deadlock even when every worker is inside a decode; helpers
// that start after all parts are claimed return at once. The output is the same bytes
// as codec::MergeTensor whatever the interleaving (disjoint pieces of `out`).
// Returns the XXH3-64 of `out`: a tensor merged in one part is hashed strip by strip as
// the merge writes it (the bytes are still in cache; one pass over memory less), a
// split one after every part is done.
absl::StatusOr<uint64_t> MergeAndHash(const ServiceContext& ctx, const codec::TensorRecord& record,
                                      codec::DType out_dtype, absl::Span<uint8_t> out,
                                      std::atomic<int64_t>* saturated) {
  const int workers = ctx.pool ? static_cast<int>(ctx.pool->num_threads()) : 1;
  const int num_parts = codec::MergeTensorParts(record, kMinPartWeights, 4 * workers);
  if (num_parts <= 1) {
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                   &XXH3_freeState);
    if (state == nullptr) return absl::ResourceExhaustedError("XXH3_createState failed");
    XXH3_64bits_reset(state.get());
    int64_t n = 0;
    DS_RETURN_IF_ERROR(codec::MergeTensorPart(
        ctx.base, record, out_dtype, 0, 1, out,
        [&](absl::Span<const uint8_t> piece) {
          XXH3_64bits_update(state.get(), piece.data(), piece.size());
        },
        &n));
    *saturated += n;
    return XXH3_64bits_digest(state.get());
  }
  struct Job {
    int num_parts = 0;
    std::atomic<int> next{0};
    absl::Mutex mu;
    int done ABSL_GUARDED_BY(mu) = 0;
    absl::Status status ABSL_GUARDED_BY(mu);
  };
  auto job = std::make_shared<Job>();
  job->num_parts = num_parts;
  // Claims and runs parts until none is left. `record` and `out` outlive every call that
  // claims a part: the caller returns only after all claimed parts are done.
  auto work = [&ctx, &record, out_dtype, out, num_parts, saturated](Job& j) {
    for (int part; (part = j.next.fetch_add(1)) < num_parts;) {
      int64_t n = 0;
      absl::Status s =
          codec::MergeTensorPart(ctx.base, record, out_dtype, part, num_parts, out, nullptr, &n);
      *saturated += n;
      absl::MutexLock lock(&j.mu);
      if (!s.ok() && j.status.ok()) j.status = s;
      ++j.done;
    }
  };
  const int helpers = std::min(num_parts, workers) - 1;
  for (int i = 0; i < helpers; ++i) {
    ctx.pool->Schedule([job, work] { work(*job); });
  }
  work(*job);
  absl::MutexLock lock(&job->mu);
  // Every part is claimed now; wait for those still running on other workers.
  job->mu.Await(absl::Condition(
      +[](Job* j) ABSL_NO_THREAD_SAFETY_ANALYSIS { return j->done == j->num_parts; }, job.get()));
  DS_RETURN_IF_ERROR(job->status);
  return XXH3_64bits(out.data(), out.size());
}

}  // namespace

absl::StatusOr<MergedTensorPtr> DecodeMergedTensor(const ServiceContext& ctx,
                                                   const storage::TaskReader& reader, size_t index,
                                                   std::optional<codec::DType> out_dtype) {
  DS_ASSIGN_OR_RETURN(storage::StoredRecord stored, reader.ReadRecord(index));
  const codec::TensorRecord& record = stored.record();
  auto merged = std::make_shared<MergedTensor>();
  merged->info = record.info;
  merged->info.dtype =
      codec::OutputDType(record.info.dtype, out_dtype.value_or(record.info.dtype));
  merged->index = static_cast<uint32_t>(index);
  merged->data.resize(codec::MergedBytes(record, merged->info.dtype));
  absl::Time start = absl::Now();
  std::atomic<int64_t> saturated{0};
  DS_ASSIGN_OR_RETURN(merged->xxh3_64, MergeAndHash(ctx, record, merged->info.dtype,
                                                    absl::MakeSpan(merged->data), &saturated));
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (const int64_t n = saturated.load(); n > 0) {
    const std::string dtype(codec::DTypeName(merged->info.dtype));
    ctx.metrics->merge_saturated_values(dtype).Increment(static_cast<double>(n));
    LogWarn("merge_saturated", {{"tenant", reader.info().tenant},
                                {"task", reader.info().task},
                                {"tensor", record.info.name},
                                {"dtype", dtype},
                                {"count", std::to_string(n)}});
  }
  // Decode, merge and hash are one fused pass (DecodeDctMatrixMerge; the hash of a split
  // tensor follows it), so both histograms see the same time.
  ctx.metrics->decode_seconds().Observe(seconds);
  ctx.metrics->merge_seconds().Observe(seconds);
  return MergedTensorPtr(std::move(merged));
}

absl::StatusOr<uint64_t> PinTask(const ServiceContext& ctx, const std::string& tenant,
                                 const std::string& task, std::optional<codec::DType> out_dtype) {
  DS_RETURN_IF_ERROR(EnsureLocal(ctx, tenant, task));  // pins and --preload
  DS_ASSIGN_OR_RETURN(TaskSnapshot snap, ctx.versions->Open(*ctx.store, tenant, task));
  const storage::TaskInfo& info = snap.reader->info();
  DS_RETURN_IF_ERROR(codec::CheckBaseHashMatch(info.base_hash, ctx.base_hash,
                                               absl::StrCat("task '", task, "'"),
                                               "the resident base"));
  const std::string group = TaskGroup(tenant, task);
  uint64_t need = TaskMergedBytes(info, out_dtype);
  uint64_t pinned_elsewhere =
      ctx.cache->pinned_bytes() - (ctx.cache->IsPinned(group) ? ctx.cache->group_bytes(group) : 0);
  if (pinned_elsewhere + need > ctx.cache->capacity_bytes()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("pinning task '", task, "' needs ", need, " bytes; the cache budget is ",
                     ctx.cache->capacity_bytes(), " with ", pinned_elsewhere, " already pinned"));
  }
  ctx.cache->Pin(group);
  absl::Mutex mu;
  absl::Status first_error;
  absl::BlockingCounter pending(static_cast<int>(snap.reader->num_records()));
  // Sequential on this worker: each GetOrLoad decodes inline, or waits for the stream
  // that is decoding the same tensor right now (that worker never waits on the pool).
  for (size_t i = 0; i < snap.reader->num_records(); ++i) {
    ctx.cache->GetOrLoad(
        group, MergedTensorKey(group, snap.version, i, out_dtype),
        [&] { return DecodeMergedTensor(ctx, *snap.reader, i, out_dtype); },
        [&](const absl::StatusOr<MergedTensorPtr>& r, bool) {
          if (!r.ok()) {
            absl::MutexLock lock(&mu);
            if (first_error.ok()) first_error = r.status();
          }
          pending.DecrementCount();
        });
  }
  pending.Wait();
  if (!first_error.ok()) {
    ctx.cache->Unpin(group);
    return first_error;
  }
  return ctx.cache->group_bytes(group);
}

}  // namespace deltaserve::server::internal

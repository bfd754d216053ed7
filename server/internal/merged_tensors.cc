#include "server/internal/merged_tensors.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "codec/delta_codec.h"
#include "common/status_macros.h"
#include "server/internal/base_check.h"
#include "server/internal/cluster_glue.h"
#include "server/internal/convert.h"
#include "server/internal/log.h"
#include "server/internal/merged_memory.h"

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

// Bytes a decoding worker gathers (consecutive patch-row strips) before it publishes
// them to the tensor's fill: fewer lock round trips, while a reader still gets its
// first chunk after a few strips.
constexpr uint64_t kPublishBytes = uint64_t{256} << 10;

// Bytes of fresh output a merging worker faults in ahead of itself with one
// madvise(MADV_POPULATE_WRITE) (Linux 5.14+) instead of one page fault per 4 KiB page
// inside the kernel loop. A kernel without it answers EINVAL and the merge faults the
// pages itself, as before.
constexpr uint64_t kPopulateBytes = uint64_t{2} << 20;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

// Called after out[.., written) became final: keeps out[written, written +
// kPopulateBytes) faulted in. *populated: end of what this part populated so far.
void PopulateAhead(absl::Span<uint8_t> out, uint64_t written, uint64_t* populated) {
  if (*populated >= written + kPopulateBytes / 2 || written >= out.size()) return;
  const uintptr_t page = 4096;
  const uint64_t to = std::min<uint64_t>(out.size(), written + kPopulateBytes);
  const uintptr_t lo =
      (reinterpret_cast<uintptr_t>(out.data()) + std::max(*populated, written) + page - 1) &
      ~(page - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(out.data()) + to) & ~(page - 1);
  // Memory reused from an evicted tensor (merged_memory.h) is all there already, and
  // populating present pages still walks them (0.05-0.11 s per GB, this VM): when the
  // range's last page is resident, skip it. (Should that page alone have been touched,
  // the merge faults in the rest of this range itself, as without populating.)
  unsigned char resident = 0;
  if (hi > lo && !(mincore(reinterpret_cast<void*>(hi - page), page, &resident) == 0 &&
                   (resident & 1) != 0)) {
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);
  }
  *populated = to;
}

// Runs codec::MergeTensorPart for parts [0, num_parts) into `out` and publishes every
// final byte range to `fill` (which hashes the growing prefix): the calling worker and
// up to num_parts - 1 helpers queued on the pool claim parts from a shared counter. The
// caller then waits only for parts that other workers have already started (never for
// queued closures), so it cannot deadlock even when every worker is inside a decode;
// helpers that start after all parts are claimed return at once. The output is the
// same bytes as codec::MergeTensor whatever the interleaving (disjoint pieces of `out`).
// Part 0 is claimed first, by the caller, so the prefix a stream is waiting for grows
// from the start.
absl::Status MergeParts(const ServiceContext& ctx, const codec::TensorRecord& record,
                        codec::DType out_dtype, absl::Span<uint8_t> out, TensorFill* fill,
                        std::atomic<int64_t>* saturated) {
  const int workers = ctx.pool ? static_cast<int>(ctx.pool->num_threads()) : 1;
  const int num_parts = codec::MergeTensorParts(record, kMinPartWeights, 4 * workers);
  struct Job {
    int num_parts = 0;
    std::atomic<int> next{0};
    absl::Mutex mu;
    int done ABSL_GUARDED_BY(mu) = 0;
    absl::Status status ABSL_GUARDED_BY(mu);
  };
  auto job = std::make_shared<Job>();
  job->num_parts = num_parts;
  // Claims and runs parts until none is left. `record`, `out` and `fill` outlive every
  // call that claims a part: the caller returns only after all claimed parts are done.
  auto work = [&ctx, &record, out_dtype, out, fill, num_parts, saturated](Job& j) {
    for (int part; (part = j.next.fetch_add(1)) < num_parts;) {
      uint64_t lo = 0, hi = 0;  // gathered, not yet published
      uint64_t populated = 0;
      auto on_bytes = [&](absl::Span<const uint8_t> piece) {
        const uint64_t at = static_cast<uint64_t>(piece.data() - out.data());
        PopulateAhead(out, at + piece.size(), &populated);
        if (at != hi) {
          fill->Publish(lo, hi);
          lo = at;
        }
        hi = at + piece.size();
        if (hi - lo >= kPublishBytes) {
          fill->Publish(lo, hi);
          lo = hi;
        }
      };
      int64_t n = 0;
      absl::Status s =
          codec::MergeTensorPart(ctx.base, record, out_dtype, part, num_parts, out, on_bytes, &n);
      if (s.ok()) fill->Publish(lo, hi);
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
  return job->status;
}

}  // namespace

absl::StatusOr<MergedTensorPtr> DecodeMergedTensor(const ServiceContext& ctx,
                                                   const storage::TaskReader& reader, size_t index,
                                                   std::optional<codec::DType> out_dtype,
                                                   const StartedFn& started) {
  DS_ASSIGN_OR_RETURN(storage::StoredRecord stored, reader.ReadRecord(index));
  const codec::TensorRecord& record = stored.record();
  auto merged = std::make_shared<MergedTensor>();
  merged->info = record.info;
  merged->info.dtype =
      codec::OutputDType(record.info.dtype, out_dtype.value_or(record.info.dtype));
  merged->index = static_cast<uint32_t>(index);
  const uint64_t bytes = codec::MergedBytes(record, merged->info.dtype);
  // Evicted memory first (tensor_cache.h MakeRoom). An evicted tensor of exactly this
  // size that nobody else holds hands its buffer, pages already there, to this one (no
  // allocation, no fault, no munmap; the cache's lock is not held): every task has the
  // base's shapes, so a cold task through a full cache mostly evicts its own shapes.
  // The rest are freed here, into MergedMemoryPool or unmapped.
  std::vector<MergedTensorPtr> evicted;
  if (ctx.cache != nullptr) evicted = ctx.cache->MakeRoom(bytes);
  for (MergedTensorPtr& old : evicted) {
    if (old.use_count() == 1 && old->data.size() == bytes) {
      // The sole owner (made non-const by make_shared; no stream, no cache entry left).
      merged->data = std::move(const_cast<MergedTensor&>(*old).data);
      MergedMemoryPool::Process().CountHandOver();
      break;
    }
  }
  evicted.clear();
  merged->data.resize(bytes);  // no-op for a handed-over buffer
  merged->fill = std::make_unique<TensorFill>(merged->data.data(), merged->data.size());
  TensorFill* fill = merged->fill.get();
  if (started) started(merged);
  absl::Time start = absl::Now();
  std::atomic<int64_t> saturated{0};
  absl::Status merge = ctx.CheckBase();
  if (merge.ok()) {
    merge = MergeParts(ctx, record, merged->info.dtype, absl::MakeSpan(merged->data), fill,
                       &saturated);
  }
  // A base file that changed during the merge (--base-mapped) may have given it the new
  // bytes: such a tensor is neither sent nor cached.
  if (merge.ok()) merge = ctx.CheckBase();
  absl::StatusOr<uint64_t> digest = merge.ok() ? fill->Digest() : absl::StatusOr<uint64_t>(merge);
  if (!digest.ok()) {
    fill->Finish(digest.status());  // a stream already sending this tensor fails with it
    return digest.status();
  }
  merged->xxh3_64 = *digest;  // before Finish: readers look at it once done() is true
  merged->saturated_values = static_cast<uint64_t>(saturated.load());
  fill->Finish(absl::OkStatus());
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
  // Decode, merge and hash are one fused pass (DecodeDctMatrixMerge; the fill hashes
  // each strip as it becomes final), so both histograms see the same time.
  ctx.metrics->decode_seconds().Observe(seconds);
  ctx.metrics->merge_seconds().Observe(seconds);
  return MergedTensorPtr(std::move(merged));
}

absl::StatusOr<uint64_t> PinTask(const ServiceContext& ctx, const std::string& tenant,
                                 const std::string& task, std::optional<codec::DType> out_dtype) {
  DS_RETURN_IF_ERROR(EnsureLocal(ctx, tenant, task));  // pins and --preload
  DS_ASSIGN_OR_RETURN(TaskSnapshot snap, ctx.versions->Open(*ctx.store, tenant, task));
  const storage::TaskInfo& info = snap.reader->info();
  DS_RETURN_IF_ERROR(CheckTaskBase(info, ctx.base_hash));
  DS_RETURN_IF_ERROR(ctx.CheckBase());
  DS_RETURN_IF_ERROR(CheckTaskFitsBase(info, *ctx.base));
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

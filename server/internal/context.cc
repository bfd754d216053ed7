#include "server/internal/context.h"

#include <algorithm>
#include <xxhash.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "codec/delta_codec.h"
#include "codec/status_macros.h"
#include "server/internal/convert.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {

void ServiceContext::PublishTenantUsage(const std::string& tenant) const {
  absl::StatusOr<storage::TenantUsage> usage = store->GetTenantUsage(tenant);
  if (!usage.ok()) {
    LogWarn("tenant usage unavailable", {{"tenant", tenant}, {"error", usage.status().ToString()}});
    return;
  }
  metrics->SetTenantUsage(tenant, usage->tasks, usage->bytes);
}

uint32_t ServiceContext::ChunkBytes(uint32_t requested) const {
  uint32_t want = requested ? requested : options->chunk_bytes;
  return std::clamp<uint32_t>(want, 4u << 10, 4u << 20);
}

std::string MergedTensorKey(const std::string& group, uint64_t version, size_t index,
                            std::optional<codec::DType> out_dtype) {
  return absl::StrCat(group, "#", version, "#", index, "#",
                      out_dtype ? std::string(codec::DTypeName(*out_dtype)) : "rec");
}

absl::StatusOr<MergedTensorPtr> DecodeMergedTensor(const ServiceContext& ctx,
                                                   const storage::TaskReader& reader,
                                                   size_t index,
                                                   std::optional<codec::DType> out_dtype) {
  DS_ASSIGN_OR_RETURN(storage::StoredRecord stored, reader.ReadRecord(index));
  const codec::TensorRecord& record = stored.record();
  auto merged = std::make_shared<MergedTensor>();
  merged->info = record.info;
  merged->info.dtype = out_dtype.value_or(record.info.dtype);
  merged->index = static_cast<uint32_t>(index);
  merged->data.resize(codec::MergedBytes(record, merged->info.dtype));
  absl::Time start = absl::Now();
  DS_RETURN_IF_ERROR(codec::MergeTensor(ctx.base, record, merged->info.dtype,
                                        absl::MakeSpan(merged->data)));
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  // Decode and merge are one fused pass in the codec (DecodeDctMatrixMerge), so both
  // histograms see the same time.
  ctx.metrics->decode_seconds().Observe(seconds);
  ctx.metrics->merge_seconds().Observe(seconds);
  merged->xxh3_64 = XXH3_64bits(merged->data.data(), merged->data.size());
  return MergedTensorPtr(std::move(merged));
}

absl::StatusOr<uint64_t> PinTask(const ServiceContext& ctx, const std::string& tenant,
                                 const std::string& task,
                                 std::optional<codec::DType> out_dtype) {
  DS_ASSIGN_OR_RETURN(TaskSnapshot snap, ctx.versions->Open(*ctx.store, tenant, task));
  const storage::TaskInfo& info = snap.reader->info();
  if (info.base_hash != ctx.base_hash) {
    return absl::FailedPreconditionError(absl::StrCat(
        "task '", task, "' was compressed against base ", codec::BaseHashHex(info.base_hash),
        ", not the resident base ", ctx.base_hash_hex));
  }
  const std::string group = TaskGroup(tenant, task);
  uint64_t need = TaskMergedBytes(info, out_dtype);
  uint64_t pinned_elsewhere = ctx.cache->pinned_bytes() -
                              (ctx.cache->IsPinned(group) ? ctx.cache->group_bytes(group) : 0);
  if (pinned_elsewhere + need > ctx.cache->capacity_bytes()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pinning task '", task, "' needs ", need, " bytes; the cache budget is ",
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


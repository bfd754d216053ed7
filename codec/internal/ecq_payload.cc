#include "codec/internal/ecq_payload.h"

#include <cmath>
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/internal/dct.h"
#include "codec/internal/dct_payload.h"
#include "codec/internal/ecq_lowrank.h"
#include "codec/internal/fp16.h"
#include "codec/internal/rans.h"
#include "common/coding.h"

namespace deltaserve::codec::internal {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t EcqNumChunks(const EcqHeader& h) { return CeilDiv(h.rows, h.chunk_rows); }

uint64_t EcqChunkSymbols(const EcqHeader& h, int64_t c) {
  const int64_t r0 = c * h.chunk_rows;
  const int64_t r1 = std::min(h.rows, r0 + h.chunk_rows);
  if (h.transform == EcqTransform::kIdentity) {
    return static_cast<uint64_t>(r1 - r0) * static_cast<uint64_t>(h.cols);
  }
  const int64_t p = h.patch_size;
  const uint64_t padded_rows = static_cast<uint64_t>(CeilDiv(r1 - r0, p) * p);
  return padded_rows * static_cast<uint64_t>(CeilDiv(h.cols, p) * p);
}

void AppendEcqHeader(const EcqHeader& h, absl::Span<const uint32_t> chunk_lengths,
                     std::vector<uint8_t>* out) {
  common::ByteWriter w(out);
  w.Bytes(kEcqMagic, 4);
  w.U8(kEcqVersion);
  w.U8(static_cast<uint8_t>(h.transform));
  w.U8(static_cast<uint8_t>(h.patch_size));
  w.U8(h.rank > 0 ? 1 : 0);  // flags: bit 0, a factor section follows the chunk table
  w.U32(static_cast<uint32_t>(h.rows));
  w.U32(static_cast<uint32_t>(h.cols));
  w.U32(FloatBits(h.step));
  w.U32(FloatBits(h.bias));
  w.U32(static_cast<uint32_t>(h.chunk_rows));
  w.U32(static_cast<uint32_t>(chunk_lengths.size()));
  for (uint32_t len : chunk_lengths) w.U32(len);
}

absl::StatusOr<ParsedEcq> ParseEcqPayload(absl::Span<const uint8_t> payload, int64_t rows,
                                          int64_t cols) {
  if (rows <= 0 || cols <= 0 || rows > kMaxPayloadDim || cols > kMaxPayloadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrix ", rows, " x ", cols, ": dims must be in [1, 2^32 - 1]"));
  }
  if (payload.size() < kEcqFixedHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat("ecq payload truncated: ", payload.size(), " bytes, header needs ",
                     kEcqFixedHeaderBytes));
  }
  const uint8_t* b = payload.data();
  if (std::memcmp(b, kEcqMagic, 4) != 0) return absl::DataLossError("ecq payload: bad magic");
  if (b[4] != kEcqVersion) {
    return absl::DataLossError(
        absl::StrCat("ecq payload: unsupported version ", static_cast<int>(b[4])));
  }
  ParsedEcq pe;
  EcqHeader& h = pe.header;
  if (b[5] > static_cast<uint8_t>(EcqTransform::kDct)) {
    return absl::DataLossError(
        absl::StrCat("ecq payload: unknown transform ", static_cast<int>(b[5])));
  }
  h.transform = static_cast<EcqTransform>(b[5]);
  h.patch_size = b[6];
  const bool dct = h.transform == EcqTransform::kDct;
  if (dct ? (h.patch_size < 2 || h.patch_size > kMaxDctPatch) : h.patch_size != 1) {
    return absl::DataLossError(
        absl::StrCat("ecq payload: patch size ", h.patch_size, " invalid for its transform"));
  }
  if ((b[7] & ~1) != 0) {
    return absl::DataLossError(absl::StrCat("ecq payload: unknown flags ", static_cast<int>(b[7])));
  }
  h.rows = common::DecodeFixed32(b + 8);
  h.cols = common::DecodeFixed32(b + 12);
  if (h.rows != rows || h.cols != cols) {
    return absl::InvalidArgumentError(absl::StrCat("ecq payload is ", h.rows, " x ", h.cols,
                                                   ", expected ", rows, " x ", cols));
  }
  h.step = BitsFloat(common::DecodeFixed32(b + 16));
  h.bias = BitsFloat(common::DecodeFixed32(b + 20));
  // Steps of 2^96 and more could make |code| x step infinite.
  if (!std::isfinite(h.step) || !(h.step > 0.0f) || h.step >= 7.9228162514264338e28f) {
    return absl::DataLossError(absl::StrCat("ecq payload: bad step ", h.step));
  }
  if (!std::isfinite(h.bias) || h.bias < 0.0f || h.bias >= 1.0f) {
    return absl::DataLossError(absl::StrCat("ecq payload: bad bias ", h.bias));
  }
  h.chunk_rows = common::DecodeFixed32(b + 24);
  if (h.chunk_rows <= 0 || h.chunk_rows % h.patch_size != 0) {
    return absl::DataLossError(absl::StrCat("ecq payload: chunk rows ", h.chunk_rows,
                                            " not a positive multiple of ", h.patch_size));
  }
  const int64_t num_chunks = common::DecodeFixed32(b + 28);
  if (num_chunks != EcqNumChunks(h)) {
    return absl::DataLossError(absl::StrCat("ecq payload: ", num_chunks, " chunks, expected ",
                                            EcqNumChunks(h)));
  }
  // Symbols per chunk must fit one rANS stream (a row of >= 2^24 weights cannot).
  if (EcqChunkSymbols(h, 0) > kMaxRansSymbols) {
    return absl::DataLossError("ecq payload: chunk too large");
  }
  const uint64_t table_end = kEcqFixedHeaderBytes + 4 * static_cast<uint64_t>(num_chunks);
  if (table_end > payload.size()) {
    return absl::DataLossError(absl::StrCat("ecq payload truncated: ", payload.size(),
                                            " bytes, chunk table needs ", table_end));
  }
  uint64_t at = table_end;
  if (b[7] & 1) {
    absl::StatusOr<EcqFactors> f = ParseEcqFactors(payload.subspan(at), rows, cols);
    if (!f.ok()) return f.status();
    h.rank = f->rank;
    pe.factor_offset = at;
    at += EcqFactorBytes(h.rank, rows, cols);
  }
  pe.chunk_offset.resize(static_cast<size_t>(num_chunks) + 1);
  for (int64_t c = 0; c < num_chunks; ++c) {
    pe.chunk_offset[c] = at;
    const uint32_t len = common::DecodeFixed32(b + kEcqFixedHeaderBytes + 4 * c);
    if (len < 4) return absl::DataLossError(absl::StrCat("ecq payload: chunk ", c, " too short"));
    at += len;
  }
  pe.chunk_offset[num_chunks] = at;
  if (at > payload.size()) {
    return absl::DataLossError(absl::StrCat("ecq payload truncated: ", payload.size(),
                                            " bytes, chunks need ", at));
  }
  if (at < payload.size()) {
    return absl::DataLossError(
        absl::StrCat("ecq payload: ", payload.size() - at, " trailing bytes"));
  }
  return pe;
}

}  // namespace deltaserve::codec::internal

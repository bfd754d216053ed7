#include "codec/internal/dct_payload.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/internal/bitpack.h"
#include "codec/internal/dct.h"
#include "codec/internal/fp16.h"
#include "codec/internal/quantize.h"
#include "common/coding.h"

namespace deltaserve::codec::internal {
namespace {

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("Delta-DCT payload: ", what));
}

// True if bits [from_bit, 8 * size) of data are all zero.
bool PaddingIsZero(const uint8_t* data, uint64_t size, uint64_t from_bit) {
  if (from_bit >= 8 * size) return true;
  const uint64_t byte = from_bit / 8;
  if ((data[byte] >> (from_bit % 8)) != 0) return false;
  for (uint64_t i = byte + 1; i < size; ++i) {
    if (data[i] != 0) return false;
  }
  return true;
}

}  // namespace

int LevelIndexBits(int num_levels) {
  int b = 0;
  while ((1 << b) < num_levels) ++b;
  return b;
}

void AppendPayloadHeader(const PayloadHeader& h, std::vector<uint8_t>* out) {
  common::ByteWriter w(out);
  w.Bytes(kDctMagic, 4);
  w.U8(kDctVersion);
  w.U8(static_cast<uint8_t>(h.patch_size));
  w.U8(static_cast<uint8_t>(h.quantizer));
  w.U8(h.separate_dc ? 1 : 0);
  w.U32(static_cast<uint32_t>(h.rows));
  w.U32(static_cast<uint32_t>(h.cols));
  w.U8(static_cast<uint8_t>(h.widths.size()));
  for (int width : h.widths) w.U8(static_cast<uint8_t>(width));
}

absl::StatusOr<ParsedPayload> ParsePayload(absl::Span<const uint8_t> payload, int64_t rows,
                                           int64_t cols) {
  if (rows <= 0 || cols <= 0 || rows > kMaxPayloadDim || cols > kMaxPayloadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("Delta-DCT decode: bad matrix shape ", rows, " x ", cols));
  }
  const uint8_t* d = payload.data();
  const uint64_t size = payload.size();
  if (size < kFixedHeaderBytes) {
    return Corrupt(absl::StrCat("truncated header (", size, " bytes)"));
  }
  if (std::memcmp(d, kDctMagic, 4) != 0) return Corrupt("bad magic (want \"DDCT\")");
  if (d[4] != kDctVersion) {
    return Corrupt(absl::StrCat("unsupported version ", d[4], " (this reader: 1)"));
  }
  ParsedPayload pp;
  PayloadHeader& h = pp.header;
  h.patch_size = d[5];
  if (h.patch_size < 2 || h.patch_size > kMaxDctPatch) {
    return Corrupt(absl::StrCat("patch size ", h.patch_size, " outside [2, 64]"));
  }
  if (d[6] > static_cast<uint8_t>(Quantizer::kClipped)) {
    return Corrupt(absl::StrCat("unknown quantizer ", d[6]));
  }
  h.quantizer = static_cast<Quantizer>(d[6]);
  if (d[7] > 1) return Corrupt(absl::StrCat("unknown flags 0x", absl::Hex(d[7])));
  h.separate_dc = d[7] == 1;
  h.rows = common::DecodeFixed32(d + 8);
  h.cols = common::DecodeFixed32(d + 12);
  if (h.rows != rows || h.cols != cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("Delta-DCT payload is for a ", h.rows, " x ", h.cols,
                     " matrix, expected ", rows, " x ", cols));
  }
  const int num_levels = d[16];
  if (num_levels < 1 || num_levels > BitSchedule::kMaxLevels) {
    return Corrupt(absl::StrCat("level count ", num_levels, " outside [1, 16]"));
  }
  uint64_t pos = kFixedHeaderBytes;
  if (size < pos + num_levels) return Corrupt("truncated bit-width table");
  for (int i = 0; i < num_levels; ++i) {
    if (d[pos + i] > 8) return Corrupt(absl::StrCat("bit-width ", d[pos + i], " > 8"));
    h.widths.push_back(d[pos + i]);
  }
  pos += num_levels;

  const int p = h.patch_size;
  pp.prows = (rows + p - 1) / p;
  pp.pcols = (cols + p - 1) / p;
  const uint64_t num_patches = static_cast<uint64_t>(pp.prows) * pp.pcols;
  const int idx_bits = LevelIndexBits(num_levels);
  // Map size: num_patches <= 2^58 here, so the product cannot overflow.
  const unsigned __int128 map_bytes128 =
      (static_cast<unsigned __int128>(num_patches) * idx_bits + 7) / 8;
  if (map_bytes128 > size - pos) return Corrupt("truncated allocation map");
  const uint64_t map_bytes = static_cast<uint64_t>(map_bytes128);
  if (idx_bits == 0 && h.widths[0] > 0 && num_patches > size) {
    // Every patch is kept and needs >= 1 byte of codes: cannot fit; refuse before
    // allocating a map for a lying shape.
    return Corrupt("payload too small for its shape");
  }
  if (idx_bits > 0) {
    pp.level_of.assign(num_patches, 0);
    UnpackCodes(d + pos, map_bytes, 0, static_cast<int64_t>(num_patches), idx_bits,
                pp.level_of.data());
    if (!PaddingIsZero(d + pos, map_bytes, num_patches * idx_bits)) {
      return Corrupt("non-zero padding bits after the allocation map");
    }
  }
  pos += map_bytes;

  const int dc = h.separate_dc ? 1 : 0;
  const uint64_t ncoef = static_cast<uint64_t>(p) * p - dc;
  const uint64_t param_bytes_per_patch = 2 * (NumStoredParams(h.quantizer) + dc);
  unsigned __int128 kept = 0, code_bits = 0;
  if (idx_bits == 0) {
    if (h.widths[0] > 0) kept = num_patches;
  } else {
    for (uint64_t i = 0; i < num_patches; ++i) {
      const uint8_t level = pp.level_of[i];
      if (level >= num_levels) {
        return Corrupt(absl::StrCat("patch ", i, " has level ", level, " of ", num_levels));
      }
      if (h.widths[level] > 0) ++kept;
    }
  }
  if (idx_bits == 0) {
    code_bits = kept * ncoef * h.widths[0];
  } else {
    for (uint64_t i = 0; i < num_patches; ++i) {
      code_bits += static_cast<unsigned __int128>(ncoef) * h.widths[pp.level_of[i]];
    }
  }
  const unsigned __int128 params_size = kept * param_bytes_per_patch;
  const unsigned __int128 codes_size = (code_bits + 7) / 8;
  if (params_size + codes_size > size - pos) {
    return Corrupt(absl::StrCat("truncated: needs ", static_cast<uint64_t>(params_size + codes_size),
                                " bytes of parameters and codes, has ", size - pos));
  }
  if (params_size + codes_size < size - pos) {
    return Corrupt(absl::StrCat(static_cast<uint64_t>(size - pos - params_size - codes_size),
                                " trailing bytes"));
  }
  pp.params = d + pos;
  pp.params_size = static_cast<uint64_t>(params_size);
  pp.codes = pp.params + pp.params_size;
  pp.codes_size = static_cast<uint64_t>(codes_size);
  for (uint64_t i = 0; i < pp.params_size; i += 2) {
    const float v = Bf16ToFloat(static_cast<uint16_t>(pp.params[i] | (pp.params[i + 1] << 8)));
    if (!std::isfinite(v)) return Corrupt(absl::StrCat("non-finite parameter at byte ", i));
  }
  // The scale is the last stored parameter of each patch and must not be negative.
  for (uint64_t i = param_bytes_per_patch - 2; i < pp.params_size; i += param_bytes_per_patch) {
    if (pp.params[i + 1] & 0x80) {
      const float v = Bf16ToFloat(static_cast<uint16_t>(pp.params[i] | (pp.params[i + 1] << 8)));
      if (v < 0.0f) return Corrupt(absl::StrCat("negative scale at parameter byte ", i));
    }
  }
  if (!PaddingIsZero(pp.codes, pp.codes_size, static_cast<uint64_t>(code_bits))) {
    return Corrupt("non-zero padding bits after the last code");
  }
  return pp;
}

}  // namespace deltaserve::codec::internal

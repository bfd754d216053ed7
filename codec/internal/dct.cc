#include "codec/internal/dct.h"

#include <immintrin.h>

#include <cassert>
#include <cmath>

#include "codec/internal/fp16.h"
#include "codec/internal/merge.h"

namespace deltaserve::codec::internal {
namespace {

// out = M in N for p x p matrices M, N (contiguous) and strided in/out. Rows are
// processed as whole vectors: the compiler keeps a patch row in one register for the
// fixed sizes. Every output element sums its products in the same order on every call.
// Rows are taken kRowBlock at a time (j outer, the block's rows inner): each
// accumulator still sums its products in ascending j, but the block's independent
// accumulators overlap their multiply-add latencies (one row at a time, each step
// waited for the one before).
constexpr int kRowBlock = 4;

template <int P>
__attribute__((always_inline)) inline void TripleProductFixed(const float* m, const float* n,
                                                              const float* in,
                                                              int64_t in_stride, float* out,
                                                              int64_t out_stride) {
  static_assert(P % kRowBlock == 0);
  float t[P][P];
  for (int i = 0; i < P; i += kRowBlock) {
    float acc[kRowBlock][P] = {};
    for (int j = 0; j < P; ++j) {
      const float* row = in + j * in_stride;
      for (int b = 0; b < kRowBlock; ++b) {
        const float w = m[(i + b) * P + j];
        for (int c = 0; c < P; ++c) acc[b][c] += w * row[c];
      }
    }
    for (int b = 0; b < kRowBlock; ++b) {
      for (int c = 0; c < P; ++c) t[i + b][c] = acc[b][c];
    }
  }
  for (int i = 0; i < P; i += kRowBlock) {
    float acc[kRowBlock][P] = {};
    for (int j = 0; j < P; ++j) {
      const float* row = n + j * P;
      for (int b = 0; b < kRowBlock; ++b) {
        const float w = t[i + b][j];
        for (int c = 0; c < P; ++c) acc[b][c] += w * row[c];
      }
    }
    for (int b = 0; b < kRowBlock; ++b) {
      float* o = out + (i + b) * out_stride;
      for (int c = 0; c < P; ++c) o[c] = acc[b][c];
    }
  }
}

__attribute__((always_inline)) inline void TripleProductAny(int p, const float* m,
                                                            const float* n, const float* in,
                                                            int64_t in_stride, float* out,
                                                            int64_t out_stride) {
  float t[kMaxDctPatch * kMaxDctPatch];
  float acc[kMaxDctPatch];
  for (int i = 0; i < p; ++i) {
    for (int c = 0; c < p; ++c) acc[c] = 0.0f;
    for (int j = 0; j < p; ++j) {
      const float w = m[i * p + j];
      const float* row = in + j * in_stride;
      for (int c = 0; c < p; ++c) acc[c] += w * row[c];
    }
    for (int c = 0; c < p; ++c) t[i * p + c] = acc[c];
  }
  for (int i = 0; i < p; ++i) {
    for (int c = 0; c < p; ++c) acc[c] = 0.0f;
    for (int j = 0; j < p; ++j) {
      const float w = t[i * p + j];
      const float* row = n + j * p;
      for (int c = 0; c < p; ++c) acc[c] += w * row[c];
    }
    float* o = out + i * out_stride;
    for (int c = 0; c < p; ++c) o[c] = acc[c];
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
TripleProduct(int p, const float* m, const float* n, const float* in, int64_t in_stride,
              float* out, int64_t out_stride) {
  switch (p) {
    case 8:
      return TripleProductFixed<8>(m, n, in, in_stride, out, out_stride);
    case 16:
      return TripleProductFixed<16>(m, n, in, in_stride, out, out_stride);
    case 32:
      return TripleProductFixed<32>(m, n, in, in_stride, out, out_stride);
    default:
      return TripleProductAny(p, m, n, in, in_stride, out, out_stride);
  }
}


// Inverse only, p even: the DCT basis is symmetric, C[k][p-1-n] = (-1)^k C[k][n], so
// each 1-D inverse splits into even-k and odd-k half sums, E +- O (one butterfly
// level): half the multiply-adds of the plain product. Products are summed in ascending
// k from +0. At P = 32 every multiply-add is an explicit fused one, so the result is
// defined to the bit on every CPU and matches InverseEvenOdd32Avx512 (left to itself the
// compiler contracted some lanes and not others); the baseline clone then calls libm's
// fmaf (slow; only CPUs without FMA, pre-2013). P = 8/16 keep the compiler's choice.
template <int P>
__attribute__((always_inline)) inline void InverseEvenOdd(const float* c, const float* in,
                                                          int64_t in_stride, float* out,
                                                          int64_t out_stride) {
  constexpr int H = P / 2;
  float t[P][P];
  // Columns: t = C^T in, row pairs (n, P-1-n).
  for (int n = 0; n < H; ++n) {
    float e[P] = {}, o[P] = {};
    for (int k = 0; k < P; k += 2) {
      const float we = c[k * P + n], wo = c[(k + 1) * P + n];
      const float* re = in + k * in_stride;
      const float* ro = in + (k + 1) * in_stride;
      for (int x = 0; x < P; ++x) {
        if constexpr (P == 32) {
          e[x] = __builtin_fmaf(we, re[x], e[x]);
          o[x] = __builtin_fmaf(wo, ro[x], o[x]);
        } else {
          e[x] += we * re[x];
          o[x] += wo * ro[x];
        }
      }
    }
    for (int x = 0; x < P; ++x) {
      t[n][x] = e[x] + o[x];
      t[P - 1 - n][x] = e[x] - o[x];
    }
  }
  // Rows: out = t C, column pairs (m, P-1-m).
  for (int i = 0; i < P; ++i) {
    float e[H] = {}, o[H] = {};
    for (int k = 0; k < P; k += 2) {
      const float we = t[i][k], wo = t[i][k + 1];
      const float* ce = c + k * P;
      const float* co = c + (k + 1) * P;
      for (int m = 0; m < H; ++m) {
        if constexpr (P == 32) {
          e[m] = __builtin_fmaf(we, ce[m], e[m]);
          o[m] = __builtin_fmaf(wo, co[m], o[m]);
        } else {
          e[m] += we * ce[m];
          o[m] += wo * co[m];
        }
      }
    }
    float* row = out + i * out_stride;
    for (int m = 0; m < H; ++m) row[m] = e[m] + o[m];
    for (int m = 0; m < H; ++m) row[P - 1 - m] = e[m] - o[m];
  }
}

// InverseEvenOdd<32> with AVX-512 intrinsics, register-blocked. Every output element is
// computed by exactly the same sequence of operations as InverseEvenOdd<32> (fused
// multiply-adds in ascending k from +0, then e +- o), so the bits are identical
// (dct_test checks it); only loads and shuffles are saved: the compiler's version of the
// row pass spends most of its time in lane permutes (10x slower, codec_bench). Each
// finished output row i goes to sink(i, lo, hi): lo = columns 0-15, hi = columns 16-31.
template <class Sink>
__attribute__((target("avx512f,fma,f16c"), always_inline)) inline void InverseEvenOdd32Avx512Rows(
    const float* c, const float* in, int64_t in_stride, Sink& sink) {
  constexpr int P = 32, H = 16;
  alignas(64) float t[P][P];
  // Columns: t[n] = e + o, t[P-1-n] = e - o, e/o over even/odd input rows k. kN n at a
  // time so that every input row loaded feeds 2 kN accumulators: 4 kN independent
  // fused multiply-add chains hide the FMA latency on two FMA ports.
  constexpr int kN = 4;
  for (int n = 0; n < H; n += kN) {
    __m512 e[kN][2], o[kN][2];
#pragma GCC unroll 4
    for (int j = 0; j < kN; ++j) e[j][0] = e[j][1] = o[j][0] = o[j][1] = _mm512_setzero_ps();
    for (int k = 0; k < P; k += 2) {
      const float* re = in + k * in_stride;
      const float* ro = in + (k + 1) * in_stride;
      const __m512 rea = _mm512_loadu_ps(re), reb = _mm512_loadu_ps(re + 16);
      const __m512 roa = _mm512_loadu_ps(ro), rob = _mm512_loadu_ps(ro + 16);
#pragma GCC unroll 4
      for (int j = 0; j < kN; ++j) {
        const __m512 we = _mm512_set1_ps(c[k * P + n + j]);
        const __m512 wo = _mm512_set1_ps(c[(k + 1) * P + n + j]);
        e[j][0] = _mm512_fmadd_ps(we, rea, e[j][0]);
        e[j][1] = _mm512_fmadd_ps(we, reb, e[j][1]);
        o[j][0] = _mm512_fmadd_ps(wo, roa, o[j][0]);
        o[j][1] = _mm512_fmadd_ps(wo, rob, o[j][1]);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < kN; ++j) {
      _mm512_store_ps(&t[n + j][0], _mm512_add_ps(e[j][0], o[j][0]));
      _mm512_store_ps(&t[n + j][16], _mm512_add_ps(e[j][1], o[j][1]));
      _mm512_store_ps(&t[P - 1 - n - j][0], _mm512_sub_ps(e[j][0], o[j][0]));
      _mm512_store_ps(&t[P - 1 - n - j][16], _mm512_sub_ps(e[j][1], o[j][1]));
    }
  }
  // Rows: out[i][m] = e + o, out[i][P-1-m] = e - o (m < H), e/o over even/odd k of
  // t[i][k] * C[k][m]. kR rows i at a time share each basis row loaded (2 kR chains).
  constexpr int kR = 8;
  const __m512i reverse = _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int i = 0; i < P; i += kR) {
    __m512 e[kR], o[kR];
#pragma GCC unroll 8
    for (int r = 0; r < kR; ++r) e[r] = o[r] = _mm512_setzero_ps();
    for (int k = 0; k < P; k += 2) {
      const __m512 ce = _mm512_loadu_ps(c + k * P);
      const __m512 co = _mm512_loadu_ps(c + (k + 1) * P);
#pragma GCC unroll 8
      for (int r = 0; r < kR; ++r) {
        e[r] = _mm512_fmadd_ps(_mm512_set1_ps(t[i + r][k]), ce, e[r]);
        o[r] = _mm512_fmadd_ps(_mm512_set1_ps(t[i + r][k + 1]), co, o[r]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < kR; ++r) {
      // The zero-masking form with every lane kept: the same vpermps, without GCC 12's
      // -Wuninitialized on the plain intrinsic's undefined source operand.
      sink(i + r, _mm512_add_ps(e[r], o[r]),
           _mm512_maskz_permutexvar_ps(0xFFFF, reverse, _mm512_sub_ps(e[r], o[r])));
    }
  }
}

// Sink of InverseEvenOdd32Avx512Rows: stores the float rows.
struct StoreRows {
  float* out;
  int64_t out_stride;
  __attribute__((target("avx512f,fma,f16c"), always_inline)) void operator()(int i, __m512 lo,
                                                                     __m512 hi) const {
    float* row = out + i * out_stride;
    _mm512_storeu_ps(row, lo);
    _mm512_storeu_ps(row + 16, hi);
  }
};

__attribute__((target("avx512f,fma,f16c"))) void InverseEvenOdd32Avx512(const float* c,
                                                                    const float* in,
                                                                    int64_t in_stride,
                                                                    float* out,
                                                                    int64_t out_stride) {
  StoreRows sink{out, out_stride};
  InverseEvenOdd32Avx512Rows(c, in, in_stride, sink);
}

// Sink of InverseEvenOdd32Avx512Rows: merges each row into a 16-bit float base row
// (F16, or BF16 when kBf16) with MergeRow's rule for the same dtype in and out, on 16
// lanes: widen, add, saturate, round to nearest even (BF16: FloatToBf16, NaN quieted);
// counts the saturated lanes.
template <bool kBf16>
struct MergeRows16 {
  // Every lane. The maskz_ forms with this mask compute what the plain intrinsics do;
  // the plain ones pass _mm512_undefined_*() (a self-initialised variable) to their
  // builtins in GCC 12's avx512fintrin.h, which -Wuninitialized reports once inlined
  // here (GCC bug 105593).
  static constexpr __mmask16 kAll = 0xffff;
  const uint16_t* base;
  int64_t base_stride;
  uint16_t* out;
  int64_t out_stride;
  int64_t saturated = 0;

  __attribute__((target("avx512f,fma,f16c"), always_inline)) void Merge16(const uint16_t* b,
                                                                      __m512 d, uint16_t* o) {
    // Bitwise sign/magnitude in integer lanes (the float forms need AVX-512DQ).
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    const __m512 wide = kBf16 ? _mm512_castsi512_ps(
                                  _mm512_maskz_slli_epi32(kAll, _mm512_maskz_cvtepu16_epi32(kAll, raw), 16))
                              : _mm512_maskz_cvtph_ps(kAll, raw);
    __m512 s = _mm512_add_ps(wide, d);
    const __m512 a = _mm512_castsi512_ps(_mm512_maskz_andnot_epi32(kAll, sign, _mm512_castps_si512(s)));
    const __m512 over = kBf16 ? _mm512_castsi512_ps(_mm512_set1_epi32(kBf16OverflowBits))
                              : _mm512_set1_ps(kF16Overflow);
    const __m512i max = kBf16 ? _mm512_set1_epi32(kBf16MaxFiniteBits)
                              : _mm512_castps_si512(_mm512_set1_ps(kF16MaxFinite));
    // Ordered compares are false for NaN: NaN and Inf pass through.
    const __mmask16 big = _mm512_cmp_ps_mask(a, over, _CMP_GE_OQ) &
                          _mm512_cmp_ps_mask(a, _mm512_set1_ps(INFINITY), _CMP_NEQ_OQ);
    if (big != 0) {
      const __m512i signed_max = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(s), sign), max);
      s = _mm512_mask_blend_ps(big, s, _mm512_castsi512_ps(signed_max));
      saturated += __builtin_popcount(static_cast<unsigned>(big));
    }
    if constexpr (kBf16) {
      // FloatToBf16: NaN -> (x >> 16) | 0x40; else (x + 0x7fff + ((x >> 16) & 1)) >> 16.
      const __m512i x = _mm512_castps_si512(s);
      const __m512i hi = _mm512_maskz_srli_epi32(kAll, x, 16);
      const __m512i rounded = _mm512_maskz_srli_epi32(
          kAll,
          _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)),
                           _mm512_and_si512(hi, _mm512_set1_epi32(1))),
          16);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_maskz_andnot_epi32(kAll, sign, x),
                                                    _mm512_set1_epi32(0x7f800000));
      const __m512i r =
          _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm512_maskz_cvtepi32_epi16(kAll, r));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o),
                          _mm512_maskz_cvtps_ph(kAll, s, _MM_FROUND_TO_NEAREST_INT));
    }
  }
  __attribute__((target("avx512f,fma,f16c"), always_inline)) void operator()(int i, __m512 lo,
                                                                         __m512 hi) {
    const uint16_t* b = base + i * base_stride;
    uint16_t* o = out + i * out_stride;
    Merge16(b, lo, o);
    Merge16(b + 16, hi, o + 16);
  }
};

// InverseEvenOdd32Avx512 with each output row merged into a 16-bit float base row on the
// fly: the float patch never goes to memory. Returns the number of values saturated.
template <bool kBf16>
__attribute__((target("avx512f,fma,f16c"))) int64_t InverseEvenOdd32Merge16Avx512(
    const float* c, const float* in, const uint16_t* base, int64_t base_stride, uint16_t* out,
    int64_t out_stride) {
  MergeRows16<kBf16> sink{base, base_stride, out, out_stride};
  InverseEvenOdd32Avx512Rows(c, in, 32, sink);
  return sink.saturated;
}

bool HasAvx512() {
  static const bool has =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") && CpuHasF16c();
  return has;
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) bool
InverseFast(int p, const float* c, const float* in, int64_t in_stride, float* out,
            int64_t out_stride) {
  switch (p) {
    case 8:
      InverseEvenOdd<8>(c, in, in_stride, out, out_stride);
      return true;
    case 16:
      InverseEvenOdd<16>(c, in, in_stride, out, out_stride);
      return true;
    case 32:
      InverseEvenOdd<32>(c, in, in_stride, out, out_stride);
      return true;
    default:
      return false;
  }
}

}  // namespace

DctBasis::DctBasis(int p_in) : p(p_in), c(static_cast<size_t>(p_in) * p_in),
                               ct(static_cast<size_t>(p_in) * p_in) {
  assert(p >= 1 && p <= kMaxDctPatch);
  const double pi = std::acos(-1.0);
  for (int k = 0; k < p; ++k) {
    const double a = std::sqrt((k == 0 ? 1.0 : 2.0) / p);
    for (int n = 0; n < p; ++n) {
      const float v = static_cast<float>(a * std::cos(pi * (2 * n + 1) * k / (2.0 * p)));
      c[k * p + n] = v;
      ct[n * p + k] = v;
    }
  }
}

void ForwardDct2d(const DctBasis& basis, const float* in, int64_t in_stride, float* out,
                  int64_t out_stride) {
  TripleProduct(basis.p, basis.c.data(), basis.ct.data(), in, in_stride, out, out_stride);
}

void InverseDct2d(const DctBasis& basis, const float* in, int64_t in_stride, float* out,
                  int64_t out_stride) {
  if (basis.p == 32 && HasAvx512()) {
    return InverseEvenOdd32Avx512(basis.c.data(), in, in_stride, out, out_stride);
  }
  InverseDct2dPortable(basis, in, in_stride, out, out_stride);
}

bool CanInverseDct2dMerge(int p, DType dtype) {
  return p == 32 && HasAvx512() && (dtype == DType::kF16 || dtype == DType::kBF16);
}

int64_t InverseDct2dMerge(const DctBasis& basis, const float* in, DType dtype,
                          const uint16_t* base, int64_t base_stride, uint16_t* out,
                          int64_t out_stride) {
  assert(CanInverseDct2dMerge(basis.p, dtype));
  return dtype == DType::kBF16
             ? InverseEvenOdd32Merge16Avx512<true>(basis.c.data(), in, base, base_stride, out,
                                                   out_stride)
             : InverseEvenOdd32Merge16Avx512<false>(basis.c.data(), in, base, base_stride, out,
                                                    out_stride);
}

void InverseDct2dPortable(const DctBasis& basis, const float* in, int64_t in_stride,
                          float* out, int64_t out_stride) {
  if (InverseFast(basis.p, basis.c.data(), in, in_stride, out, out_stride)) return;
  TripleProduct(basis.p, basis.ct.data(), basis.c.data(), in, in_stride, out, out_stride);
}

}  // namespace deltaserve::codec::internal

// Vectorised exp of the CPU kernels, extension-wide: VExpT<A, VB>::exp over a GCC vector of VB bytes of A (float
// or double). The same source for every ISA variant: a kernel header includes this file after its TU's
// `#pragma GCC target` (16-byte vectors = SSE2 in the baseline builds, 32 = AVX2+FMA, 64 = AVX-512 or pairs of
// ymm on AVX2). Internal linkage only, so code compiled for a wide ISA can never be what the linker picks for a
// baseline caller. Users: attention/attention_cpu_math.h (VExp<A>), compact_softmax_ce/*_kernels.h.
//
// x = n ln2 + r with n = round(x log2 e) (the 1.5 * 2^mantissa-bits rounding trick) and |r| <= ln2 / 2 split
// Cody-Waite style, e^r by a polynomial, 2^n built in the exponent bits. fp32: Cephes' degree-7 minimax (~1 ulp),
// inputs below -88 give 0; fp64: Taylor to degree 13 (~1e-16), inputs clamped to [-708.3, 709] (e^-708 ~ 3e-308
// stands in for 0). NaN stays NaN.
#pragma once

#include <cstdint>

#include "common/common.h"

// The vector width of the including TU's kernels (its wide variants define it before including their kernel
// header): 32 bytes where AVX is on (the TU's #pragma GCC target), else 16.
#ifndef FXK_CPU_VEC_BYTES
#if defined(__AVX__)
#define FXK_CPU_VEC_BYTES 32
#else
#define FXK_CPU_VEC_BYTES 16
#endif
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace {

template <typename A, int VB>
struct VExpT;

template <int VB>
struct VExpT<float, VB> {
  typedef float V __attribute__((vector_size(VB)));
  typedef int32_t I __attribute__((vector_size(VB)));
  static FXK_HD_INLINE V exp(V x) {
    const V lo = V{} + -88.0f, hi = V{} + 88.0f;
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    const float magic = 12582912.0f;  // 1.5 * 2^23
    const V t = x * 1.44269504088896341f + magic;
    const V n = t - magic;
    V r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const I e = ((I)t - 0x4B400000 + 127) << 23;
    return p * (V)e;
  }
};

template <int VB>
struct VExpT<double, VB> {
  typedef double V __attribute__((vector_size(VB)));
  typedef int64_t I __attribute__((vector_size(VB)));
  static FXK_HD_INLINE V exp(V x) {
    const V lo = V{} + -708.3, hi = V{} + 709.0;
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    const V t = x * 1.4426950408889634074 + magic;
    const V n = t - magic;
    V r = x - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    V p = V{} + 1.0 / 6227020800.0;  // 1/13!
    const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                               1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,     1.0 / 120.0,
                               1.0 / 24.0,        1.0 / 6.0,        0.5,             1.0,
                               1.0};
    for (double cf : inv_fact) p = p * r + cf;
    const I e = ((I)t - int64_t(0x4338000000000000LL) + 1023) << 52;
    return p * (V)e;
  }
};

}  // namespace
}  // namespace fxk

#pragma GCC diagnostic pop

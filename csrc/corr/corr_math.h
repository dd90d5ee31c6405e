// Spatial-correlation index math (fxkernels/ops/corr/README.md), shared by the CPU and the CUDA kernels.
//
//   R = P / 2,  o(p) = (p - R) * d
//   out[b, p*P + q, h, w] = sum_c f1[b, c, h, w] * f2[b, c, h + o(p), w + o(q)]      (0 outside the map)
//
// Everything is FXK_HD: the CPU kernels clip their displacement loops with the same ranges the CUDA kernels
// use, so the CPU tests exercise the device index math.
#pragma once

#include "common/common.h"

namespace fxk {
namespace corr {
namespace {  // internal linkage: every TU (generic CPU, AVX2 CPU, CUDA) gets its own copy

// Displacement of patch index p in [0, P).
FXK_HD_INLINE int offset(int p, int P, int d) { return (p - P / 2) * d; }

// Half-open range [lo, hi) of patch indices p with 0 <= x + o(p) < n (x in [0, n)): the displacements of
// position x that land inside a map of n positions (forward gather, df1). Empty when lo >= hi.
FXK_HD_INLINE void fwd_range(int x, int n, int P, int d, int& lo, int& hi) {
  const int R = P / 2;
  const int a = R - x / d;                // smallest p with (p - R) * d >= -x
  const int b = R + (n - 1 - x) / d + 1;  // one past the largest p with (p - R) * d <= n - 1 - x
  lo = a > 0 ? a : 0;
  hi = b < P ? b : P;
}

// Half-open range [lo, hi) of patch indices p with 0 <= y - o(p) < n (y in [0, n)): the positions y - o(p) whose
// displacement p lands on y (the df2 gather).
FXK_HD_INLINE void bwd_range(int y, int n, int P, int d, int& lo, int& hi) {
  const int R = P / 2;
  const int a = R - (n - 1 - y) / d;  // smallest p with (p - R) * d >= y - (n - 1)
  const int b = R + y / d + 1;        // one past the largest p with (p - R) * d <= y
  lo = a > 0 ? a : 0;
  hi = b < P ? b : P;
}

// Positions x in [0, n) with x % d == r (r in [0, d)): x = r + d * i, i in [0, residue_count).
FXK_HD_INLINE int residue_count(int n, int r, int d) { return r < n ? (n - r + d - 1) / d : 0; }

// Along one axis, o(q) = (q - R) * d maps position r + d*i to r + d*j with j = i + q - R: on the residue-r
// positions the displacements are a band of width P, q = j - i + R. Index of q for the pair (i, j):
FXK_HD_INLINE int band_q(int i, int j, int P) { return j - i + P / 2; }

}  // namespace
}  // namespace corr
}  // namespace fxk

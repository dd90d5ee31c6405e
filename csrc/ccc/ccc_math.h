// CCC math (fxkernels/ops/ccc/README.md, "Backend contract"), shared by the CPU and the CUDA kernels.
//
// Everything here is FXK_HD and works on one element (one similarity, one output element, one gradient):
// the CPU kernels (ccc_cpu.cpp) call these functions inside loops the compiler vectorises, the CUDA kernels
// (ccc_cuda.cu) once per thread, so the CPU tests exercise the device math as well.
#pragma once

#include <cstdint>

#include "common/common.h"

namespace fxk {
namespace ccc {
namespace {  // internal linkage: every TU (generic CPU, AVX2 CPU, CUDA) gets its own ISA-specific copy

// As F.normalize: norms are clamped from below by eps before dividing.
constexpr double kEps = 1e-12;

// ---------------------------------------------------------------------------------------------------------
// k-NN

// Rows are normalised as F.normalize does, x_hat = x / max(|x|, eps) (a division, as the reference), and
// sim[r, q] = dot(x_hat_r, x_hat_q). So an all-zero row has similarity exactly 0 with everything and D = 1 gives
// exactly +-1 / 0: the ties of the reference are ties here too. Rows with bitwise-equal x_hat (equal rows, or rows
// equal up to a power of two) must score bitwise-equal similarities: the CUDA kernel computes every dot product
// the same way; the CPU kernels' GEMM may not (its register tiles round differently), so they score every
// duplicate row as its first equal row (ccc_cpu_kernels.h, first_equal_rows).
template <typename A>
FXK_HD_INLINE A knn_clamp_norm(A norm) {
  const A e = static_cast<A>(kEps);
  return norm < e ? e : norm;  // a NaN norm propagates, as clamp_min
}
template <typename A>
FXK_HD_INLINE A knn_normalize(A v, A clamped_norm) {
  return v / clamped_norm;
}

// The k-NN order, a strict total order on (similarity, index) pairs: "(v1, i1) comes before (v2, i2)".
// Larger similarity first, ties -> lower index first; NaN before every number (as torch.sort(descending=True,
// stable=True), the reference), NaNs among themselves by index.
template <typename A, typename I>
FXK_HD_INLINE bool knn_better(A v1, I i1, A v2, I i2) {
  const bool nan1 = v1 != v1, nan2 = v2 != v2;
  if (nan1 || nan2) return nan1 && (!nan2 || i1 < i2);
  return v1 > v2 || (v1 == v2 && i1 < i2);
}

// ---------------------------------------------------------------------------------------------------------
// Edge max (forward)

// v = ReLU(round_to_T(a + g)): the sum in the accumulation type, rounded to the storage dtype T (exactly what
// PyTorch computes for `a + g` in T), then ReLU as torch.relu (NaN propagates, -0 stays -0).
template <typename T, typename A>
FXK_HD_INLINE A edge_value(A a, A g) {
  const A r = to_acc<A>(from_acc<T>(a + g));
  return r < A(0) ? A(0) : r;
}

// Running max over the slots s = 0, 1, ...: does slot value v replace the current best? Only a strictly
// larger value does, so the first maximising slot is kept; the first NaN wins and stays (as torch.max).
template <typename A>
FXK_HD_INLINE bool edge_takes(A v, A best) {
  return v > best || (v != v && best == best);
}

// y = max_s edge_value(a, g(s)) over s in [0, k), arg = the first maximising s.  g(s) returns the neighbour
// term of slot s in the accumulation type.
template <typename T, typename A, typename G>
FXK_HD_INLINE A edge_max(A a, int k, const G& g, int& arg) {
  A best = edge_value<T, A>(a, g(0));
  int am = 0;
  for (int s = 1; s < k; ++s) {
    const A v = edge_value<T, A>(a, g(s));
    if (edge_takes(v, best)) {
      best = v;
      am = s;
    }
  }
  arg = am;
  return best;
}

// ---------------------------------------------------------------------------------------------------------
// Backward

// da = dy where y is not <= 0, else 0: a select, as torch.relu's backward (threshold_backward): an infinite or
// NaN dy of a masked element gives 0, and a NaN output passes dy (as it reaches the winning slot of the max).
template <typename A>
FXK_HD_INLINE A relu_grad(A dy, A y) {
  return y <= A(0) ? A(0) : dy;
}

// The part of da that slot s received: da if arg == s, else 0 (adding this 0 to a sum that starts at +0 never
// changes it, so masked accumulation equals summing only the matching entries).
template <typename A>
FXK_HD_INLINE A slot_grad(A da, int arg, int s) {
  return arg == s ? da : A(0);
}

}  // namespace
}  // namespace ccc
}  // namespace fxk

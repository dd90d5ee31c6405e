// Host-side glue of the dynamic-image ops: argument validation (every check happens before any kernel runs), the
// validated problem description (the tensor's axes merged into rows) and the rank-pooling coefficients.
// Contract: "Backend contract" in fxkernels/ops/dynamic_image/README.md.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fxk {
namespace dynamic_image {

constexpr int kMaxDims = 64;  // axes of one tensor (more than any ATen tensor has in practice)

// A strided tensor walked as `count` rows of `n` elements: row r starts at element offset offset(r) and steps by
// `s`. The rows are numbered in the tensor's logical (row-major) order, so element i of row r is the logical
// (flat) output index r * n + i. `size` / `stride` are the merged outer axes, outermost first.
struct Rows {
  int nd = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  int64_t n = 1, s = 0, count = 0;
  int64_t offset(int64_t r) const {
    int64_t off = 0;
    for (int k = nd - 1; k >= 0 && r > 0; --k) {
      const int64_t q = r / size[k];
      off += (r - q * size[k]) * stride[k];
      r = q;
    }
    return off;
  }
};

// forward:  src = x, y[o] = sum_t alpha_t x[offset of o + t * st]; y contiguous with N elements
// backward: src = dy, dx[(o / Q) * T * Q + t * Q + o % Q] = alpha_t dy[o]; dx contiguous (P, T, Q); every row of
//           dy lies within one p (rows never cross the axis `dim`), and steps dx by dx_s (1, or T when Q = 1)
struct Problem {
  at::Tensor src;
  Rows rows;
  int64_t T = 0, st = 0, Q = 1, N = 0, dx_s = 1;
};
Problem prepare_fwd(const char* op, const at::Tensor& x, int64_t dim);
Problem prepare_bwd(const char* op, const at::Tensor& dy, int64_t dim, int64_t T);

// alpha_t = 2 (T - t + 1) - (T + 1) (H_T - H_{t-1}), t = 1..T, in double (the harmonic numbers summed in order,
// the same operations as fxkernels/ops/dynamic_image/reference.py), rounded once to A.
template <typename A>
std::vector<A> coefficients(int64_t T);

// CPU kernels of one ISA variant (dynamic_image_cpu_kernels.h; the baseline is compiled by dynamic_image_cpu.cpp,
// the AVX2+FMA one by dynamic_image_cpu_avx2.cpp). They take validated problems with N > 0 and T > 0.
struct CpuKernels {
  void (*fwd)(const Problem& pb, const at::Tensor& y);
  void (*bwd)(const Problem& pb, const at::Tensor& dx);
};
CpuKernels cpu_kernels_avx2();  // only in builds with FXK_CPU_HAVE_AVX2 (common/cpu_isa.h)

}  // namespace dynamic_image
}  // namespace fxk

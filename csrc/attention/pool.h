// Host-side glue of the attention_pool CPU ops (fxkernels/ops/attention/README.md, "attention_pool"): argument
// validation (pool_host.cpp, every check before any kernel runs), the validated problem and the tap tables.
//
//   z[b, h, c + o, :] = sum_{dt, dh, dw} weight[:, 0, dt, dh, dw] * x[b, h, c + n(o, dt, dh, dw), :]
//   z[b, h, :c] = x[b, h, :c];   y = LayerNorm_hd(z) (with norm_weight, norm_bias) or z
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fxk {
namespace attn_pool {

// The taps of one axis (input size n, output size no, kernel k, stride s, padding k / 2), both ways:
//   fwd: for output coordinate o, the pairs (d, i) with i = o*s - k/2 + d in [0, n)
//   bwd: for input coordinate i, the pairs (d, o) with o*s = i + k/2 - d, o in [0, no)
// Entry j of coordinate u is (tap[u*k + j], idx[u*k + j]) for j < cnt[u].
struct AxisTaps {
  int k = 1;
  std::vector<int> cnt, tap, idx;
};
AxisTaps axis_taps_fwd(int n, int no, int k, int s);
AxisTaps axis_taps_bwd(int n, int no, int k, int s);

// A validated problem. x as given (any strides sxb, sxh, sxl, sxd); in the accumulation dtype A (fp32; fp64 for
// fp64), contiguous:
//   wt   (kt*kh*kw, hd): wt[tap, :] = weight[:, 0, dt, dh, dw], tap = (dt*kh + dh)*kw + dw
//   nw, nb  (hd,), or undefined without norm
struct Problem {
  at::Tensor x, wt, nw, nb;
  int64_t B = 0, nh = 0, L = 0, hd = 0, Lo = 0;
  int c = 0;
  int T = 1, H = 1, W = 1, To = 1, Ho = 1, Wo = 1, kt = 1, kh = 1, kw = 1, st = 1, sh = 1, sw = 1;
  int64_t sxb = 0, sxh = 0, sxl = 0, sxd = 1;
  double eps = 1e-6;
  bool norm = false;
  AxisTaps fwd[3], bwd[3];  // t, h, w
  int taps() const { return kt * kh * kw; }
  int64_t rows() const { return B * nh * Lo; }  // output rows
};

Problem prepare_fwd(const char* op, const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& norm_weight, const std::optional<at::Tensor>& norm_bias,
                    at::IntArrayRef stride, at::IntArrayRef thw, bool has_cls, double eps);
// Also checks dy (B, nh, Lo, hd) in x's dtype and, with a norm, stats (B, nh, Lo, 2) in A.
Problem prepare_bwd(const char* op, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& norm_weight, const std::optional<at::Tensor>& norm_bias,
                    const at::Tensor& stats, at::IntArrayRef stride, at::IntArrayRef thw, bool has_cls,
                    double eps);

// Outputs of the backward kernel, preallocated: dx (B, nh, L, hd) contiguous in x's dtype; dwt (taps, hd),
// dnw, dnb (hd,) in A (dnw, dnb undefined without norm).
struct Grads {
  at::Tensor dx, dwt, dnw, dnb;
};

// CPU kernels of one ISA variant (pool_cpu_kernels.h; the baseline is compiled by pool_cpu.cpp, the AVX2+FMA
// one by pool_cpu_avx2.cpp). They take validated problems with at least one output element.
//   fwd: y (B, nh, Lo, hd) contiguous in x's dtype; stats (B, nh, Lo, 2) contiguous in A (unused without norm)
//   bwd: dy (any strides), stats contiguous (with a norm)
struct CpuKernels {
  void (*fwd)(const Problem& pb, const at::Tensor& y, const at::Tensor& stats);
  void (*bwd)(const Problem& pb, const at::Tensor& dy, const at::Tensor& stats, const Grads& g);
};
CpuKernels cpu_kernels_avx2();  // pool_cpu_avx2.cpp, only in builds with FXK_CPU_HAVE_AVX2 (common/cpu_isa.h)

}  // namespace attn_pool
}  // namespace fxk

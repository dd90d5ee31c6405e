// Host-side glue shared by the CPU and CUDA spectral-filter ops: argument validation (every check happens before
// any kernel runs), the validated problem description and the twiddle table.
// Contract: "Backend contract" in fxkernels/ops/spectral/README.md.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "common/checks.h"
#include "spectral/spectral_math.h"

namespace fxk {
namespace spectral {

// Element strides of a canonical (B, C, T, H, W) tensor; for filt t is the frequency axis and ri the (re, im) one.
struct Strides {
  int64_t b = 0, c = 0, t = 0, h = 0, w = 0, ri = 0;
};

// x, dy, residual: (B, C, T, H, W); filt: (B, C, M, H, W, 2) (an expanded view: 0 strides allowed). Any strides.
struct Problem {
  at::Tensor x, filt, residual, dy;
  int64_t B = 0, C = 0, H = 0, W = 0;
  int T = 1, M = 1;
  Strides sx, sf, sr, sdy;
};
Problem prepare_fwd(const char* op, const at::Tensor& x, const at::Tensor& filt,
                    const std::optional<at::Tensor>& residual, c10::DeviceType device_type);
Problem prepare_bwd(const char* op, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& filt,
                    c10::DeviceType device_type);

// c[j] = cos(2 pi j / T), s[j] = sin(2 pi j / T) for j < T and inv_t = 1 / T, computed in double and rounded
// once to A.
template <typename A>
struct Twiddles {
  A c[kMaxT];
  A s[kMaxT];
  A inv_t;
};
template <typename A>
Twiddles<A> make_twiddles(int T);

// Outputs of the backward, preallocated (undefined when not requested): dx (B, C, T, H, W) contiguous in x's
// dtype, dfilt (B, C, M, H, W, 2) in the accumulation type laid out like filt when filt is dense (else contiguous:
// see new_dfilt), with its strides sdf.
struct Grads {
  at::Tensor dx, dfilt;
  Strides sdf;
};
Strides strides_of(const at::Tensor& t);  // of a 5-D or 6-D tensor (undefined: zeros)
// dfilt for filt, in the accumulation dtype: filt's layout when filt is non-overlapping and dense (so autograd can
// keep it as filt.grad without a copy, e.g. the permuted (B, C, M, 2, H, W) view of TemporalFilter), else
// contiguous (a broadcast filt: the op layer sums it over the broadcast axes).
at::Tensor new_dfilt(const at::Tensor& filt);

// CPU kernels of one ISA variant (spectral_cpu_kernels.h; the baseline is compiled by spectral_cpu.cpp, the
// AVX2+FMA one by spectral_cpu_avx2.cpp). They take validated problems with at least one column.
struct CpuKernels {
  void (*fwd)(const Problem& pb, const at::Tensor& y);
  void (*bwd)(const Problem& pb, const Grads& g);
};
CpuKernels cpu_kernels_avx2();  // spectral_cpu_avx2.cpp, only in builds with FXK_CPU_HAVE_AVX2 (common/cpu_isa.h)

}  // namespace spectral
}  // namespace fxk

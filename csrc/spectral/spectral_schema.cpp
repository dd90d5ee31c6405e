// Schemas of the spectral-filter C++ ops (fxkernels/ops/spectral/README.md, "Backend contract"). Their CPU / CUDA
// kernels are registered by spectral_cpu.cpp / spectral_cuda.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // Canonical layout: x (B, C, T, H, W), filt (B, C, T//2+1, H, W, 2) (expanded views, any strides),
  // 1 <= T <= 64 -> y (B, C, T, H, W) contiguous = irfft(rfft(x) * filt) (+ residual).
  m.def("spectral_fwd(Tensor x, Tensor filt, Tensor? residual) -> Tensor");
  // -> (dx (B, C, T, H, W) in x's dtype, dfilt (B, C, M, H, W, 2) per column in fp32 / fp64); an output not
  // asked for is an empty tensor. Deterministic, no atomics.
  m.def("spectral_bwd(Tensor dy, Tensor x, Tensor filt, bool need_dx, bool need_dfilt) -> (Tensor, Tensor)");
}

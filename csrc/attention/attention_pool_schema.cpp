// Schemas of the attention_pool C++ ops (fxkernels/ops/attention/README.md, "attention_pool"). Their CPU kernels
// are registered by pool_cpu.cpp (no CUDA kernel: on GPUs the Triton backend runs).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // x (B, nh, c + T*H*W, hd) (any strides), weight (hd, 1, kt, kh, kw), norm (hd,) or None, c = has_cls
  //   -> (y (B, nh, Lo, hd) contiguous in x's dtype, stats (B, nh, Lo, 2) = (mean, rstd) in fp32 / fp64 with a
  //   norm, else empty)
  m.def(
      "attention_pool_fwd(Tensor x, Tensor weight, Tensor? norm_weight, Tensor? norm_bias, int[] stride, "
      "int[] thw, bool has_cls, float eps) -> (Tensor, Tensor)");
  // -> (dx (x's shape, contiguous), dweight (weight's shape), dnorm_weight, dnorm_bias (hd,) or empty without a
  // norm), all in x's dtype. Deterministic, no atomics.
  m.def(
      "attention_pool_bwd(Tensor dy, Tensor x, Tensor weight, Tensor? norm_weight, Tensor? norm_bias, "
      "Tensor stats, int[] stride, int[] thw, bool has_cls, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
}

// Schemas of the compact softmax cross-entropy C++ ops (fxkernels/ops/compact_softmax_ce/README.md, "Backend
// contract"). Their CPU kernels are registered by compact_softmax_ce_cpu.cpp (CUDA tensors go to the Triton
// kernels: no CUDA kernel).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // logits (N, C), C >= 2, any strides; target (N,) int64 in [0, C) -> the per-row losses (N,), contiguous, in the
  // accumulation dtype (fp32 for fp32/fp16/bf16, fp64 for fp64).
  m.def("compact_softmax_ce_fwd(Tensor logits, Tensor target, float beta) -> Tensor");
  // dl (N,) the upstream gradient of each row's loss (any floating dtype), logits, target as in the forward ->
  // dlogits (N, C), contiguous, logits' dtype.
  m.def("compact_softmax_ce_bwd(Tensor dl, Tensor logits, Tensor target, float beta) -> Tensor");
}

// Schemas of the spatial-correlation C++ ops (fxkernels/ops/corr/README.md, "Backend contract"): the FlowNetC
// cost volume. Their CPU / CUDA kernels are registered by corr_cpu.cpp / corr_cuda.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // f1, f2 (B, C, H, W) -> out (B, patch*patch, H, W), displacements (p - patch//2) * dilation.
  m.def("corr_fwd(Tensor f1, Tensor f2, int patch, int dilation) -> Tensor");
  // -> (df1, df2), both (B, C, H, W), gathers (deterministic, no atomics).
  m.def("corr_bwd(Tensor dout, Tensor f1, Tensor f2, int patch, int dilation) -> (Tensor, Tensor)");
}

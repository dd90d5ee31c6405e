// Schemas of the dynamic-image C++ ops (fxkernels/ops/dynamic_image/README.md, "Backend contract"). Their CPU
// kernels are registered by dynamic_image_cpu.cpp (CUDA tensors go to the Triton kernels: no CUDA kernel).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // x: any rank >= 1, any strides, time axis at dim (0 <= dim < x.dim()) -> y = sum_t alpha_t x_t, x's shape
  // without dim, contiguous, x's dtype (fp32 accumulation, fp64 for fp64). One read of x.
  m.def("dynamic_image_fwd(Tensor x, int dim) -> Tensor");
  // dy: y's shape, any strides -> dx = alpha_t dy with T inserted at dim, contiguous, dy's dtype.
  m.def("dynamic_image_bwd(Tensor dy, int dim, int T) -> Tensor");
}

// Schemas of the FCC C++ ops (fxkernels/ops/fcc/README.md, "Modes" and "Backend contract"); their CPU / CUDA
// kernels are registered by fcc_cpu.cpp / fcc_cuda.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // mode: 0 = V, 1 = H, 2 = VH, 3 = HV.
  m.def(
      "fcc_fwd(Tensor x, Tensor w1, Tensor? w2, Tensor? p1, Tensor? p2, Tensor? b1, Tensor? b2, int mode) "
      "-> Tensor");
  // Returns [dx, dw1, dw2, dp1, dp2, db1, db2]; an absent optional input gives an empty tensor in its slot.
  m.def(
      "fcc_bwd(Tensor dy, Tensor x, Tensor w1, Tensor? w2, Tensor? p1, Tensor? p2, Tensor? b1, Tensor? b2, "
      "int mode) -> Tensor[]");
}

// Schemas of the CCC C++ ops: the backend kernels of the "Backend contract" in fxkernels/ops/ccc/README.md
// (shapes, dtypes, tie rules, determinism); the public ops in fxkernels/ops/ccc/ccc.py do the dense GEMMs.
// Their CPU / CUDA kernels are registered by ccc_cpu.cpp / ccc_cuda.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // k-NN by cosine similarity: x (B, R, D) -> nbr (B, R, k) int64, ties -> lower index.
  m.def("ccc_knn(Tensor x, int k) -> Tensor");
  // Channel graph: ag = [A | G] (B, C, 2F), nbr (B, C, k) -> (y (B, C, F), arg (B, C, F) uint8).
  m.def("ccc_edge_max_fwd(Tensor ag, Tensor nbr) -> (Tensor, Tensor)");
  // -> dag (B, C, 2F) = [da | dg], deterministic.
  m.def("ccc_edge_max_bwd(Tensor dy, Tensor y, Tensor arg, Tensor nbr) -> Tensor");
  // Spatial graph: x (B, C, N), nbr (B, N, k), w2 (F, N), a (B, C, F) -> (y, arg), both (B, C, F).
  m.def("ccc_spatial_fwd(Tensor x, Tensor nbr, Tensor w2, Tensor a) -> (Tensor, Tensor)");
  // -> (da (B, C, F), dxg (B, C, N), dw2 (F, N)), deterministic.
  m.def(
      "ccc_spatial_bwd(Tensor dy, Tensor y, Tensor arg, Tensor x, Tensor nbr, Tensor w2) "
      "-> (Tensor, Tensor, Tensor)");
}

// All C++ op schemas of the fxkernels namespace, and the Python module fxkernels._C.
// Per-family files register their kernels with TORCH_LIBRARY_IMPL(fxkernels, CPU / CUDA, m);
// Python adds further ops to the namespace with torch.library FRAGMENTs.
#include <string>
#include <vector>

#include <torch/extension.h>
#include <torch/library.h>

#include "fcc/fcc.h"

#ifdef FXK_WITH_CUDA
namespace fxk {
std::string cuda_build_version();  // fcc_cuda.cu: CUDA runtime version the kernels were compiled against
}
#endif

TORCH_LIBRARY(fxkernels, m) {
  // FCC (SPEC section 1, fxkernels/ops/fcc/README.md). mode: 0 = V, 1 = H, 2 = VH, 3 = HV.
  m.def(
      "fcc_fwd(Tensor x, Tensor w1, Tensor? w2, Tensor? p1, Tensor? p2, Tensor? b1, Tensor? b2, int mode) "
      "-> Tensor");
  // Returns [dx, dw1, dw2, dp1, dp2, db1, db2]; an absent optional input gives an empty tensor in its slot.
  m.def(
      "fcc_bwd(Tensor dy, Tensor x, Tensor w1, Tensor? w2, Tensor? p1, Tensor? p2, Tensor? b1, Tensor? b2, "
      "int mode) -> Tensor[]");

  // CCC (SPEC section 2): the backend kernels of the "Backend contract" in fxkernels/ops/ccc/README.md
  // (shapes, dtypes, tie rules, determinism); the public ops in fxkernels/ops/ccc/ccc.py do the dense GEMMs.
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

  // Spatial correlation (SPEC section 7, fxkernels/ops/corr/README.md "Backend contract"): the FlowNetC cost
  // volume. f1, f2 (B, C, H, W) -> out (B, patch*patch, H, W), displacements (p - patch//2) * dilation.
  m.def("corr_fwd(Tensor f1, Tensor f2, int patch, int dilation) -> Tensor");
  // -> (df1, df2), both (B, C, H, W), gathers (deterministic, no atomics).
  m.def("corr_bwd(Tensor dout, Tensor f1, Tensor f2, int patch, int dilation) -> (Tensor, Tensor)");

  // Spectral filter (SPEC section 3.1, fxkernels/ops/spectral/README.md "Backend contract"): canonical layout,
  // x (B, C, T, H, W), filt (B, C, T//2+1, H, W, 2) (expanded views, any strides), 1 <= T <= 64
  // -> y (B, C, T, H, W) contiguous = irfft(rfft(x) * filt) (+ residual).
  m.def("spectral_fwd(Tensor x, Tensor filt, Tensor? residual) -> Tensor");
  // -> (dx (B, C, T, H, W) in x's dtype, dfilt (B, C, M, H, W, 2) per column in fp32 / fp64); an output not
  // asked for is an empty tensor. Deterministic, no atomics.
  m.def("spectral_bwd(Tensor dy, Tensor x, Tensor filt, bool need_dx, bool need_dfilt) -> (Tensor, Tensor)");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
  const char* const ops[] = {"ccc_knn", "ccc_edge_max_fwd", "ccc_edge_max_bwd", "ccc_spatial_fwd",
                                 "ccc_spatial_bwd", "corr_fwd", "corr_bwd", "spectral_fwd",
                                 "spectral_bwd"};
  std::vector<std::string> kernels = {"fcc_fwd:cpu", "fcc_bwd:cpu"};
  for (const char* op : ops) kernels.push_back(std::string(op) + ":cpu");
#ifdef FXK_WITH_CUDA
  d["cuda"] = true;
#ifdef FXK_CUDA_ARCHS
  {
    std::string archs = FXK_STR(FXK_CUDA_ARCHS);  // "8.0/9.0" (see setup.py) -> "8.0;9.0"
    for (char& ch : archs)
      if (ch == '/') ch = ';';
    d["cuda_archs"] = archs;
  }
#else
  d["cuda_archs"] = std::string("");
#endif
  d["cuda_version"] = fxk::cuda_build_version();
  kernels.push_back("fcc_fwd:cuda");
  kernels.push_back("fcc_bwd:cuda");
  for (const char* op : ops) kernels.push_back(std::string(op) + ":cuda");
#else
  d["cuda"] = false;
  d["cuda_archs"] = std::string("");
  d["cuda_version"] = std::string("");
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string("unknown");
#endif
#ifdef _OPENMP
  d["openmp"] = true;
#else
  d["openmp"] = false;
#endif
#if defined(TORCH_VERSION_MAJOR) && defined(TORCH_VERSION_MINOR) && defined(TORCH_VERSION_PATCH)
  d["torch"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
               std::to_string(TORCH_VERSION_PATCH);  // the torch headers compiled against
#endif
  d["cpu_isa"] = fxk::fcc::cpu_isa();  // variant the CPU kernels use now
  d["cpu_isa_variants"] = fxk::fcc::cpu_isa_variants();
  d["kernels"] = kernels;
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fxkernels compiled kernels (ops are registered under torch.ops.fxkernels)";
  m.def("build_info", &build_info, "How this extension was built: CUDA, archs, compiler, OpenMP, kernels.");
  m.def("_set_cpu_emulate_threads", &fxk::fcc::set_cpu_emulate_threads, pybind11::arg("threads"),
        "Test hook: when threads > 0 the CPU FCC kernels run the CUDA block schedule emulated with that many "
        "threads (exercises the device index math without a GPU). Returns the previous value; 0 = normal.");
  m.def("_set_cpu_isa", &fxk::fcc::set_cpu_isa, pybind11::arg("isa"),
        "Select the CPU kernel variant: 'auto' (default, or $FXKERNELS_CPU_ISA), 'generic' or 'avx2'. "
        "Returns the previous choice.");
}

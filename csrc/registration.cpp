// Extension-wide registration: the fxkernels operator library, the Python module fxkernels._C and build_info().
// Each family declares its op schemas in its own folder (csrc/<family>/<family>_schema.cpp, a
// TORCH_LIBRARY_FRAGMENT) and registers its kernels there with TORCH_LIBRARY_IMPL(fxkernels, CPU / CUDA, m);
// Python adds its custom ops to the same namespace with torch.library.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "common/common.h"
#include "common/cpu_isa.h"
#include "common/cuda_emulation.h"

#ifdef FXK_WITH_CUDA
#include <cuda_runtime_api.h>  // CUDART_VERSION
#endif

// Owns the namespace; the schemas are the families' fragments.
TORCH_LIBRARY(fxkernels, m) {}

namespace {

// "op:cpu" / "op:cuda" for every fxkernels op with a kernel for that backend, read from the dispatcher when the
// module is loaded: after this library's static registrations and before Python registers its ops (which have
// no per-backend kernels of their own either way). CPU entries first, then CUDA, each sorted by op name.
std::vector<std::string> registered_kernels() {
  auto& dispatcher = c10::Dispatcher::singleton();
  const std::string prefix = "fxkernels::";
  std::vector<std::string> ops;
  for (const c10::OperatorName& name : dispatcher.getAllOpNames())
    if (name.name.rfind(prefix, 0) == 0 && name.overload_name.empty()) ops.push_back(name.name.substr(prefix.size()));
  std::sort(ops.begin(), ops.end());
  std::vector<std::string> kernels;
  const std::pair<c10::DispatchKey, const char*> backends[] = {{c10::DispatchKey::CPU, "cpu"},
                                                               {c10::DispatchKey::CUDA, "cuda"}};
  for (const auto& [key, suffix] : backends) {
    for (const std::string& op : ops) {
      const auto handle = dispatcher.findOp(c10::OperatorName(prefix + op, ""));
      if (handle.has_value() && handle->hasKernelForDispatchKey(key)) kernels.push_back(op + ":" + suffix);
    }
  }
  return kernels;
}

std::vector<std::string>& kernels_at_load() {
  static std::vector<std::string> k;
  return k;
}

pybind11::dict build_info() {
  pybind11::dict d;
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
  d["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
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
  d["cpu_isa"] = fxk::cpu_isa();  // the choice in force ("auto" resolved)
  d["cpu_isa_variants"] = fxk::cpu_isa_variants();
  d["cpu_isa_usable"] = fxk::cpu_isa_usable();
  d["kernels"] = kernels_at_load();
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  kernels_at_load() = registered_kernels();
  m.doc() = "fxkernels compiled kernels (ops are registered under torch.ops.fxkernels)";
  m.def("build_info", &build_info,
        "How this extension was built: CUDA, archs, compiler, OpenMP, CPU ISA variants, and the registered "
        "kernels as 'op:cpu' / 'op:cuda'.");
  m.def("_set_cpu_emulate_threads", &fxk::set_cpu_emulate_threads, pybind11::arg("threads"),
        "Test hook: when threads > 0 the CPU kernels of the families that support it run their CUDA kernels' "
        "per-thread code on the CPU (FCC: the block schedule emulated with that many threads), which exercises "
        "the device index math without a GPU. Returns the previous value; 0 = normal.");
  m.def("_set_cpu_isa", &fxk::set_cpu_isa, pybind11::arg("isa"),
        "Select the CPU kernel variant: 'auto' (default, or $FXKERNELS_CPU_ISA), 'generic', 'avx2' or 'avx512' "
        "(families without an AVX-512 build run their AVX2 kernels there); the test hook 'avx512-emulated' runs "
        "the AVX-512 source compiled for AVX2. Returns the previous choice.");
}

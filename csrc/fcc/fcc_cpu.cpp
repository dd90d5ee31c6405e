// FCC CPU ops: validation (fcc_host.cpp), then the plane kernels (fcc_cpu_kernels.h) of the selected ISA
// (common/cpu_isa.h): this TU compiles the baseline variant, fcc_cpu_avx2.cpp / fcc_cpu_avx512.cpp the wide ones.
#include <torch/library.h>

#include "common/cpu_isa.h"
#include "fcc/fcc.h"
#include "fcc/fcc_cpu_kernels.h"

namespace fxk {
namespace fcc {
namespace {

// "auto" takes the AVX-512 build on AVX-512 CPUs: on a Zen 4 at 2 threads it beat the AVX2 build at all 8
// shapes/passes of benchmarks/bench_fcc.py -k cpu_isa (1.02-2.39x, medians of one run).
constexpr CpuAuto kAutoPolicy = CpuAuto::kAvx512;

const CpuKernels& kernels() {
  return cpu_kernel_table<CpuKernels>(
      make_cpu_kernels, [] { return cpu_kernels_avx2(); }, [] { return cpu_kernels_avx512(); },
      [] { return cpu_kernels_avx512_emulated(); }, kAutoPolicy);
}

at::Tensor fcc_fwd_cpu(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& w2,
                       const std::optional<at::Tensor>& p1, const std::optional<at::Tensor>& p2,
                       const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& b2, int64_t mode) {
  const Problem pb = prepare("fxkernels.fcc_fwd", nullptr, x, w1, w2, p1, p2, b1, b2, mode, c10::DeviceType::CPU);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  kernels().run(pb, y, nullptr);
  return y;
}

std::vector<at::Tensor> fcc_bwd_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w1,
                                    const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& p1,
                                    const std::optional<at::Tensor>& p2, const std::optional<at::Tensor>& b1,
                                    const std::optional<at::Tensor>& b2, int64_t mode) {
  const Problem pb = prepare("fxkernels.fcc_bwd", &dy, x, w1, w2, p1, p2, b1, b2, mode, c10::DeviceType::CPU);
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const Partials part = alloc_partials(pb);
  kernels().run(pb, dx, &part);
  return finish_grads(pb, dx, part);
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("fcc_fwd", &fcc_fwd_cpu);
  m.impl("fcc_bwd", &fcc_bwd_cpu);
}

}  // namespace fcc
}  // namespace fxk

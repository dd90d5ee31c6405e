// FCC CPU ops: validation (fcc_host.cpp), then the plane kernels (fcc_cpu_kernels.h) of the selected ISA:
// this TU compiles the baseline variant, fcc_cpu_avx2.cpp the AVX2+FMA one.
#include <torch/library.h>

#include "fcc/fcc.h"
#include "fcc/fcc_cpu_kernels.h"

namespace fxk {
namespace fcc {
namespace {

void run(const Problem& pb, const at::Tensor& out, const Partials* part) {
#if FXK_CPU_HAVE_AVX2
  if (cpu_isa() == "avx2") {
    cpu_run_avx2(pb, out, part);
    return;
  }
#endif
  cpu_run(pb, out, part);
}

at::Tensor fcc_fwd_cpu(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& w2,
                       const std::optional<at::Tensor>& p1, const std::optional<at::Tensor>& p2,
                       const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& b2, int64_t mode) {
  const Problem pb = prepare("fxkernels.fcc_fwd", nullptr, x, w1, w2, p1, p2, b1, b2, mode, c10::DeviceType::CPU);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  run(pb, y, nullptr);
  return y;
}

std::vector<at::Tensor> fcc_bwd_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w1,
                                    const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& p1,
                                    const std::optional<at::Tensor>& p2, const std::optional<at::Tensor>& b1,
                                    const std::optional<at::Tensor>& b2, int64_t mode) {
  const Problem pb = prepare("fxkernels.fcc_bwd", &dy, x, w1, w2, p1, p2, b1, b2, mode, c10::DeviceType::CPU);
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const Partials part = alloc_partials(pb);
  run(pb, dx, &part);
  return finish_grads(pb, dx, part);
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("fcc_fwd", &fcc_fwd_cpu);
  m.impl("fcc_bwd", &fcc_bwd_cpu);
}

}  // namespace fcc
}  // namespace fxk

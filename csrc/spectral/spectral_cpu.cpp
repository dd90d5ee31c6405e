// Spectral-filter CPU ops (fxkernels/ops/spectral/README.md, "Backend contract"): validation (spectral_host.cpp),
// output allocation, then the kernels of the selected ISA (spectral_cpu_kernels.h): this TU compiles the baseline
// variant, spectral_cpu_avx2.cpp the AVX2+FMA one. The variant follows the extension-wide CPU ISA choice
// (common/cpu_isa.h, $FXKERNELS_CPU_ISA, fxkernels._C._set_cpu_isa).
#pragma GCC diagnostic ignored "-Wpsabi"

#include <tuple>

#include <torch/library.h>

#include "common/cpu_isa.h"
#include "common/cuda_emulation.h"
#include "spectral/spectral.h"
#include "spectral/spectral_cpu_kernels.h"

namespace fxk {
namespace spectral {
namespace {

const CpuKernels& kernels() {
  return cpu_kernel_table<CpuKernels>(make_cpu_kernels, [] { return cpu_kernels_avx2(); });
}

at::Tensor spectral_fwd_cpu(const at::Tensor& x, const at::Tensor& filt, const std::optional<at::Tensor>& residual) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb = prepare_fwd("fxkernels.spectral_fwd", x, filt, residual, c10::DeviceType::CPU);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() > 0) kernels().fwd(pb, y);
  return y;
}

std::tuple<at::Tensor, at::Tensor> spectral_bwd_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& filt,
                                                    bool need_dx, bool need_dfilt) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Problem pb = prepare_bwd("fxkernels.spectral_bwd", dy, x, filt, c10::DeviceType::CPU);
  Grads g;
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  g.dx = need_dx ? at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous))
                 : at::empty({0}, x.options());
  g.dfilt = need_dfilt ? new_dfilt(filt) : at::empty({0}, x.options().dtype(acc));
  if (x.numel() > 0 && (need_dx || need_dfilt)) {
    Grads run;  // undefined = not requested
    if (need_dx) run.dx = g.dx;
    if (need_dfilt) {
      run.dfilt = g.dfilt;
      run.sdf = strides_of(g.dfilt);
    }
    kernels().bwd(pb, run);
  }
  return {g.dx, g.dfilt};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("spectral_fwd", &spectral_fwd_cpu);
  m.impl("spectral_bwd", &spectral_bwd_cpu);
}

}  // namespace spectral
}  // namespace fxk

// Spatial-correlation CPU ops (fxkernels/ops/corr/README.md, "Backend contract"): validation (corr_host.cpp),
// output allocation, then the kernels of the selected ISA (corr_cpu_kernels.h): this TU compiles the baseline
// variant, corr_cpu_avx2.cpp the AVX2+FMA one. The variant follows the extension-wide CPU ISA choice
// (common/cpu_isa.h, $FXKERNELS_CPU_ISA, fxkernels._C._set_cpu_isa).
// 32-byte GCC vectors in the baseline ISA (internal functions only, so the ABI note does not apply).
#pragma GCC diagnostic ignored "-Wpsabi"

#include <tuple>

#include <torch/library.h>

#include "corr/corr.h"
#include "corr/corr_cpu_kernels.h"
#include "common/cpu_isa.h"

namespace fxk {
namespace corr {
namespace {

const CpuKernels& kernels() {
  return cpu_kernel_table<CpuKernels>(make_cpu_kernels, [] { return cpu_kernels_avx2(); });
}

at::Tensor corr_fwd_cpu(const at::Tensor& f1, const at::Tensor& f2, int64_t patch, int64_t dilation) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb = prepare_fwd("fxkernels.corr_fwd", f1, f2, patch, dilation, c10::DeviceType::CPU);
  const int64_t PP = int64_t{pb.P} * pb.P;
  if (pb.C == 0) return at::zeros({pb.B, PP, pb.H, pb.W}, f1.options());
  at::Tensor out = at::empty({pb.B, PP, pb.H, pb.W}, f1.options());
  if (out.numel() > 0) kernels().fwd(pb, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor> corr_bwd_cpu(const at::Tensor& dout, const at::Tensor& f1, const at::Tensor& f2,
                                                int64_t patch, int64_t dilation) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb = prepare_bwd("fxkernels.corr_bwd", dout, f1, f2, patch, dilation, c10::DeviceType::CPU);
  at::Tensor df1 = at::empty({pb.B, pb.C, pb.H, pb.W}, f1.options());
  at::Tensor df2 = at::empty({pb.B, pb.C, pb.H, pb.W}, f1.options());
  if (df1.numel() > 0) kernels().bwd(pb, df1, df2);
  return {df1, df2};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("corr_fwd", &corr_fwd_cpu);
  m.impl("corr_bwd", &corr_bwd_cpu);
}

}  // namespace corr
}  // namespace fxk

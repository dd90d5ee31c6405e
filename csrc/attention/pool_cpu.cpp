// attention_pool CPU ops (fxkernels/ops/attention/README.md, "attention_pool"): validation (pool_host.cpp),
// output allocation, then the kernels of the selected ISA (pool_cpu_kernels.h): this TU compiles the baseline
// variant, pool_cpu_avx2.cpp the AVX2+FMA one. The variant follows the extension-wide CPU ISA choice
// (common/cpu_isa.h, $FXKERNELS_CPU_ISA, fxkernels._C._set_cpu_isa).
#pragma GCC diagnostic ignored "-Wpsabi"

#include <tuple>

#include <torch/library.h>

#include "attention/pool.h"
#include "attention/pool_cpu_kernels.h"
#include "common/cpu_isa.h"

namespace fxk {
namespace attn_pool {
namespace {

const CpuKernels& kernels() {
  return cpu_kernel_table<CpuKernels>(make_cpu_kernels, [] { return cpu_kernels_avx2(); });
}

at::ScalarType acc_of(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// y (B, nh, Lo, hd) contiguous in x's dtype; stats (B, nh, Lo, 2) = (mean, rstd) in the accumulation dtype with a
// norm, else an empty tensor of x's dtype.
std::tuple<at::Tensor, at::Tensor> attention_pool_fwd_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                          const std::optional<at::Tensor>& norm_weight,
                                                          const std::optional<at::Tensor>& norm_bias,
                                                          at::IntArrayRef stride, at::IntArrayRef thw, bool has_cls,
                                                          double eps) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb =
      prepare_fwd("fxkernels.attention_pool_fwd", x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps);
  at::Tensor y = at::empty({pb.B, pb.nh, pb.Lo, pb.hd}, x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor stats =
      pb.norm ? at::empty({pb.B, pb.nh, pb.Lo, 2}, x.options().dtype(acc_of(x))) : at::empty({0}, x.options());
  if (y.numel() > 0) kernels().fwd(pb, y, stats);
  return {y, stats};
}

// -> (dx contiguous in x's dtype, dweight in weight's shape and dtype, dnorm_weight, dnorm_bias (hd,) in x's dtype,
// or empty tensors without norm).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_pool_bwd_cpu(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const at::Tensor& stats, at::IntArrayRef stride,
    at::IntArrayRef thw, bool has_cls, double eps) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Problem pb = prepare_bwd("fxkernels.attention_pool_bwd", dy, x, weight, norm_weight, norm_bias, stats,
                                 stride, thw, has_cls, eps);
  const auto acc = x.options().dtype(acc_of(x));
  Grads g;
  g.dx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  g.dwt = at::empty({pb.taps(), pb.hd}, acc);
  if (pb.norm) {
    g.dnw = at::empty({pb.hd}, acc);
    g.dnb = at::empty({pb.hd}, acc);
  }
  if (pb.rows() * pb.hd > 0) {
    kernels().bwd(pb, dy, pb.norm ? stats.contiguous() : stats, g);
  } else {  // nothing flows back: zero parameter gradients (dx is empty)
    g.dwt.zero_();
    if (pb.norm) {
      g.dnw.zero_();
      g.dnb.zero_();
    }
  }
  at::Tensor dw = g.dwt.t().reshape(weight.sizes()).to(weight.scalar_type());
  if (!pb.norm) return {g.dx, dw, at::empty({0}, x.options()), at::empty({0}, x.options())};
  return {g.dx, dw, g.dnw.to(x.scalar_type()), g.dnb.to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("attention_pool_fwd", &attention_pool_fwd_cpu);
  m.impl("attention_pool_bwd", &attention_pool_bwd_cpu);
}

}  // namespace attn_pool
}  // namespace fxk

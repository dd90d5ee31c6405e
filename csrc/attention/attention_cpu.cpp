// Attention CPU ops (fxkernels/ops/attention/README.md, "Backend contract"): validation (attention_host.cpp),
// output allocation, then the kernels of the selected ISA (common/cpu_isa.h; attention_cpu_kernels.h): this TU
// compiles the baseline variant, attention_cpu_avx2.cpp / attention_cpu_avx512.cpp the wide ones.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <tuple>

#include <torch/library.h>

#include "attention/attention_cpu_kernels.h"
#include "attention/attention_host.h"
#include "common/cpu_isa.h"

namespace fxk {
namespace attn {
namespace {

// "auto" takes the AVX-512 kernels on CPUs that have them: on a 2-core Zen 4 (2 threads, fp32, fwd+bwd of the
// kit op) they ran mvit_v2_s stage 1 in 50 ms against 73 ms for the AVX2 build, stage 4 in 8.3 against 10.4 ms.
constexpr CpuAuto kAutoPolicy = CpuAuto::kAvx512;

const CpuKernels& kernels() {
  return cpu_kernel_table<CpuKernels>(
      make_cpu_kernels, [] { return cpu_kernels_avx2(); }, [] { return cpu_kernels_avx512(); },
      [] { return cpu_kernels_avx512_emulated(); }, kAutoPolicy);
}

at::ScalarType acc_of(const at::Tensor& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor> attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     const std::optional<at::Tensor>& rel, double scale,
                                                     at::IntArrayRef thw_k, bool has_cls, bool add_q,
                                                     bool add_q_cls) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb = prepare_fwd("fxkernels.attention_fwd", q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls);
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({pb.B, pb.nh, pb.Lq}, q.options().dtype(acc_of(q)));
  if (!pb.empty()) kernels().fwd(pb, out, lse);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& rel, const at::Tensor& out, const at::Tensor& lse, double scale,
    at::IntArrayRef thw_k, bool has_cls, bool add_q, bool add_q_cls, bool need_rel) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Problem pb = prepare_bwd("fxkernels.attention_bwd", dout, q, k, v, rel, out, lse, scale, thw_k, has_cls,
                                 add_q, add_q_cls, need_rel);
  const auto contiguous = q.options().memory_format(at::MemoryFormat::Contiguous);
  Grads g;
  g.dq = at::empty(q.sizes(), contiguous);
  if (pb.empty()) {  // no query rows: no gradient reaches k and v
    g.dk = at::zeros(k.sizes(), contiguous);
    g.dv = at::zeros(v.sizes(), contiguous);
  } else {
    g.dk = at::empty(k.sizes(), contiguous);
    g.dv = at::empty(v.sizes(), contiguous);
  }
  g.drel = need_rel ? at::empty(pb.rel.sizes(), pb.rel.options().memory_format(at::MemoryFormat::Contiguous))
                    : at::empty({0}, q.options().dtype(acc_of(q)));
  if (!pb.empty()) kernels().bwd(pb, g);
  return {g.dq, g.dk, g.dv, g.drel};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("attention_fwd", &attention_fwd_cpu);
  m.impl("attention_bwd", &attention_bwd_cpu);
}

}  // namespace attn
}  // namespace fxk

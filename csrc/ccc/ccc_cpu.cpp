// CCC CPU ops (fxkernels/ops/ccc/README.md, "Backend contract"): validation (ccc_host.cpp), output allocation,
// then the kernels of the selected ISA (ccc_cpu_kernels.h): this TU compiles the baseline variant,
// ccc_cpu_avx2.cpp the AVX2+FMA one. The variant follows the extension-wide CPU ISA choice (common/cpu_isa.h,
// $FXKERNELS_CPU_ISA, fxkernels._C._set_cpu_isa).
#include <tuple>

#include <torch/library.h>

#include "ccc/ccc.h"
#include "ccc/ccc_cpu_kernels.h"
#include "common/cpu_isa.h"

namespace fxk {
namespace ccc {
namespace {

const CpuKernels& kernels() {
  return cpu_kernel_table<CpuKernels>(make_cpu_kernels, [] { return cpu_kernels_avx2(); });
}

at::Tensor ccc_knn_cpu(const at::Tensor& x, int64_t k) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const KnnProblem pb = prepare_knn("fxkernels.ccc_knn", x, k, c10::DeviceType::CPU);
  at::Tensor out = at::empty({pb.B, pb.R, pb.k}, pb.x.options().dtype(at::kLong));
  if (out.numel() > 0) kernels().knn(pb, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor> ccc_edge_max_fwd_cpu(const at::Tensor& ag, const at::Tensor& nbr) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const EdgeProblem pb = prepare_edge_fwd("fxkernels.ccc_edge_max_fwd", ag, nbr, c10::DeviceType::CPU);
  at::Tensor y = at::empty({pb.B, pb.C, pb.F}, pb.ag.options());
  at::Tensor arg = at::empty({pb.B, pb.C, pb.F}, pb.ag.options().dtype(at::kByte));
  if (y.numel() > 0) kernels().edge_fwd(pb, y, arg);
  return {y, arg};
}

at::Tensor ccc_edge_max_bwd_cpu(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& arg,
                                const at::Tensor& nbr) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const EdgeProblem pb = prepare_edge_bwd("fxkernels.ccc_edge_max_bwd", dy, y, arg, nbr, c10::DeviceType::CPU);
  at::Tensor dag = at::empty({pb.B, pb.C, 2 * pb.F}, pb.dy.options());
  if (dag.numel() > 0) kernels().edge_bwd(pb, dag);
  return dag;
}

std::tuple<at::Tensor, at::Tensor> ccc_spatial_fwd_cpu(const at::Tensor& x, const at::Tensor& nbr,
                                                       const at::Tensor& w2, const at::Tensor& a) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const SpatialProblem pb = prepare_spatial_fwd("fxkernels.ccc_spatial_fwd", x, nbr, w2, a, c10::DeviceType::CPU);
  at::Tensor y = at::empty({pb.B, pb.C, pb.F}, pb.x.options());
  at::Tensor arg = at::empty({pb.B, pb.C, pb.F}, pb.x.options().dtype(at::kByte));
  if (y.numel() > 0) kernels().spatial_fwd(pb, y, arg);
  return {y, arg};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ccc_spatial_bwd_cpu(const at::Tensor& dy, const at::Tensor& y,
                                                                   const at::Tensor& arg, const at::Tensor& x,
                                                                   const at::Tensor& nbr, const at::Tensor& w2) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const SpatialProblem pb =
      prepare_spatial_bwd("fxkernels.ccc_spatial_bwd", dy, y, arg, x, nbr, w2, c10::DeviceType::CPU);
  at::Tensor da = at::empty({pb.B, pb.C, pb.F}, pb.x.options());
  at::Tensor dxg = at::empty({pb.B, pb.C, pb.N}, pb.x.options());
  at::Tensor dw2_acc = at::zeros({pb.F, pb.N}, pb.x.options().dtype(acc_dtype(pb.x.scalar_type())));
  if (pb.B * pb.C > 0) kernels().spatial_bwd(pb, da, dxg, dw2_acc);
  return {da, dxg, dw2_acc.to(pb.x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("ccc_knn", &ccc_knn_cpu);
  m.impl("ccc_edge_max_fwd", &ccc_edge_max_fwd_cpu);
  m.impl("ccc_edge_max_bwd", &ccc_edge_max_bwd_cpu);
  m.impl("ccc_spatial_fwd", &ccc_spatial_fwd_cpu);
  m.impl("ccc_spatial_bwd", &ccc_spatial_bwd_cpu);
}

}  // namespace ccc
}  // namespace fxk

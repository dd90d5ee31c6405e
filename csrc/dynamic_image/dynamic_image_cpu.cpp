// Dynamic-image CPU ops (fxkernels/ops/dynamic_image/README.md, "Backend contract"): validation
// (dynamic_image_host.cpp), output allocation, then the kernels of the selected ISA (dynamic_image_cpu_kernels.h):
// this TU compiles the baseline variant, dynamic_image_cpu_avx2.cpp the AVX2+FMA one. The variant follows the
// extension-wide CPU ISA choice (common/cpu_isa.h, $FXKERNELS_CPU_ISA, fxkernels._C._set_cpu_isa); there is no
// AVX-512 build (the avx512 slot runs the AVX2 kernels).
#pragma GCC diagnostic ignored "-Wpsabi"

#include <vector>

#include <torch/library.h>

#include "common/cpu_isa.h"
#include "dynamic_image/dynamic_image.h"
#include "dynamic_image/dynamic_image_cpu_kernels.h"

namespace fxk {
namespace dynamic_image {
namespace {

const CpuKernels& kernels() {
  return cpu_kernel_table<CpuKernels>(make_cpu_kernels, [] { return cpu_kernels_avx2(); });
}

at::Tensor dynamic_image_fwd_cpu(const at::Tensor& x, int64_t dim) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb = prepare_fwd("fxkernels.dynamic_image_fwd", x, dim);
  std::vector<int64_t> shape;
  for (int64_t a = 0; a < x.dim(); ++a)
    if (a != dim) shape.push_back(x.size(a));
  at::Tensor y = at::empty(shape, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (pb.N == 0) return y;
  if (pb.T == 0) return y.zero_();  // an empty sum
  kernels().fwd(pb, y);
  return y;
}

at::Tensor dynamic_image_bwd_cpu(const at::Tensor& dy, int64_t dim, int64_t T) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Problem pb = prepare_bwd("fxkernels.dynamic_image_bwd", dy, dim, T);
  std::vector<int64_t> shape(dy.sizes().begin(), dy.sizes().end());
  shape.insert(shape.begin() + dim, T);
  at::Tensor dx = at::empty(shape, dy.options().memory_format(at::MemoryFormat::Contiguous));
  if (pb.N > 0 && pb.T > 0) kernels().bwd(pb, dx);
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("dynamic_image_fwd", &dynamic_image_fwd_cpu);
  m.impl("dynamic_image_bwd", &dynamic_image_bwd_cpu);
}

}  // namespace dynamic_image
}  // namespace fxk

// FCC CUDA kernels: one block per (b, c) plane, plane math from fcc_math.h (shared with the CPU kernels).
// The plane workspace lives in dynamic shared memory when it fits the opt-in limit, else in a global slice
// per block (grid-stride over planes).
#include <algorithm>
#include <climits>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "fcc/fcc.h"
#include "fcc/fcc_math.h"

namespace fxk {
namespace fcc {
namespace {

constexpr int kMaxThreads = 512;
// At most 64 registers per thread (two 512-thread blocks, or four 256-thread ones, per SM by registers);
// ptxas reports no spills at this bound for every dtype on sm_80 / sm_90 (see -Xptxas -v in the build log).
constexpr int kMinBlocks = 2;

// One step = every thread of the block takes its work items, then a block barrier.
struct GpuExec {
  template <typename F>
  FXK_HD_INLINE void operator()(F&& f) const {
#ifdef __CUDA_ARCH__
    f(static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x));
    __syncthreads();
#endif
  }
};

template <typename A>
__device__ __forceinline__ A* plane_workspace(A* gws, int64_t ws_elems) {
  extern __shared__ __align__(16) unsigned char fxk_smem[];
  return gws != nullptr ? gws + static_cast<int64_t>(blockIdx.x) * ws_elems : reinterpret_cast<A*>(fxk_smem);
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks)
    fcc_fwd_kernel(const FccParams<T, A> P, A* gws, int64_t ws_elems) {
  A* ws = plane_workspace<A>(gws, ws_elems);
  const int64_t planes = P.B * P.C;
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) fcc_fwd_plane<T, A>(P, p, ws, GpuExec{}, false);
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks)
    fcc_bwd_kernel(const FccParams<T, A> P, A* gws, int64_t ws_elems) {
  A* ws = plane_workspace<A>(gws, ws_elems);
  const int64_t planes = P.B * P.C;
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) fcc_bwd_plane<T, A>(P, p, ws, GpuExec{}, false);
}

template <typename T, typename A, bool kBackward>
void launch(const Problem& pb, const FccParams<T, A>& P) {
  const int64_t planes = pb.planes();
  if (planes == 0 || pb.H == 0 || pb.W == 0) return;
  const int64_t ws_elems = plane_workspace_elems(kBackward, pb.H, pb.W, pb.L1, pb.L2);
  const size_t bytes = static_cast<size_t>(ws_elems) * sizeof(A);
  const int hw = pb.H * pb.W;
  const int threads = std::min(kMaxThreads, std::max(64, ceil_div(hw, 32) * 32));
  auto kernel = kBackward ? fcc_bwd_kernel<T, A> : fcc_fwd_kernel<T, A>;

  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  const size_t optin = props->sharedMemPerBlockOptin;
  size_t smem = 0;
  int64_t grid = 0;
  at::Tensor gws;
  if (bytes <= optin) {
    smem = bytes;
    if (bytes > 48 * 1024) {
      C10_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    }
    grid = std::min<int64_t>(planes, INT_MAX);
  } else {
    // Workspace too large for shared memory: a global slice per resident block.
    grid = std::min<int64_t>(planes, static_cast<int64_t>(props->multiProcessorCount) * 4);
    gws = at::empty({grid * ws_elems}, pb.x.options().dtype(c10::CppTypeToScalarType<A>::value));
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  kernel<<<static_cast<unsigned int>(grid), threads, smem, stream>>>(
      P, gws.defined() ? gws.mutable_data_ptr<A>() : nullptr, ws_elems);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor fcc_fwd_cuda(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& w2,
                        const std::optional<at::Tensor>& p1, const std::optional<at::Tensor>& p2,
                        const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& b2, int64_t mode) {
  const Problem pb =
      prepare("fxkernels.fcc_fwd", nullptr, x, w1, w2, p1, p2, b1, b2, mode, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  FXK_DISPATCH_FLOATING(x.scalar_type(), "fxkernels.fcc_fwd", [&] {
    launch<scalar_t, acc_t, false>(pb, make_params<scalar_t, acc_t>(pb, y, nullptr));
  });
  return y;
}

std::vector<at::Tensor> fcc_bwd_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w1,
                                     const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& p1,
                                     const std::optional<at::Tensor>& p2, const std::optional<at::Tensor>& b1,
                                     const std::optional<at::Tensor>& b2, int64_t mode) {
  const Problem pb =
      prepare("fxkernels.fcc_bwd", &dy, x, w1, w2, p1, p2, b1, b2, mode, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const Partials part = alloc_partials(pb);
  FXK_DISPATCH_FLOATING(x.scalar_type(), "fxkernels.fcc_bwd", [&] {
    launch<scalar_t, acc_t, true>(pb, make_params<scalar_t, acc_t>(pb, dx, &part));
  });
  return finish_grads(pb, dx, part);
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CUDA, m) {
  m.impl("fcc_fwd", &fcc_fwd_cuda);
  m.impl("fcc_bwd", &fcc_bwd_cuda);
}

}  // namespace fcc
}  // namespace fxk

// Spectral-filter CUDA ops (fxkernels/ops/spectral/README.md, "Backend contract"): validation in
// spectral_host.cpp, per-column math in spectral_math.h (shared with the CPU kernels, so the CPU tests exercise it).
//
// One thread per column (b, c, h, w), grid-stride over B * C * H * W columns; consecutive threads take
// consecutive positions w, so every load / store at a fixed t (or k) is coalesced for the usual layouts. The
// twiddle table (cos / sin of 2 pi j / T, j < T) is a kernel argument copied to shared memory (read as broadcasts).
// The spectra live in registers: the frequency loops are unrolled to the compile-time class KMAX (4, 8, 16, 33)
// with runtime guards k < M. Backward keeps G = w analysis(dy) (2 KMAX registers) and recomputes the spectrum of
// x in chunks of KC frequencies for the filter gradient, then overwrites G with dX for the synthesis of dx.
// Every output element is written by the thread that owns its column: deterministic, no atomics.
// Accumulation in fp32 (fp64 for fp64 inputs), one rounding at the end.
#include <algorithm>
#include <cstdint>
#include <tuple>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "spectral/spectral.h"
#include "spectral/spectral_math.h"

namespace fxk {
namespace spectral {
namespace {

constexpr int kThreads = 128;  // __launch_bounds__(kThreads, 1): without the min-blocks hint ptxas spilled at 64-128 registers
constexpr int64_t kMaxGridX = int64_t{1} << 30;

// Grid: blockIdx.x * blockDim.x + threadIdx.x = position p = h * W + w of a plane, blockIdx.y = plane b * C + c
// (grid-strided over both); the host checks that B * C and H * W fit in int, so only 32-bit divisions remain
// (a 64-bit division is a subroutine call on the GPU).
struct Geometry {
  int BC, C, HW, W, T, M;
};
template <typename A>
__device__ __forceinline__ void load_twiddles(const Twiddles<A>& tw, A* sc, A* ss) {
  if (threadIdx.x == 0) {
#pragma unroll
    for (int i = 0; i < kMaxT; ++i) {  // constant indices: direct reads of the kernel argument
      sc[i] = tw.c[i];
      ss[i] = tw.s[i];
    }
  }
  __syncthreads();
}

// Column (bc, p) -> element offset of (b, c, h, w) in a tensor with strides s.
__device__ __forceinline__ int64_t column_offset(int bc, int p, const Strides& s, const Geometry& g) {
  const int b = bc / g.C, c = bc - b * g.C, h = p / g.W, w = p - h * g.W;
  return b * s.b + c * s.c + h * s.h + w * s.w;
}

template <typename T, typename A, int KMAX>
__global__ void __launch_bounds__(kThreads, 1)
    spectral_fwd_kernel(const T* __restrict__ x, const T* __restrict__ filt, const T* __restrict__ res,
                        T* __restrict__ y, Geometry g, Strides sx, Strides sf, Strides sr, Twiddles<A> tw) {
  __shared__ A sc[kMaxT], ss[kMaxT];
  load_twiddles(tw, sc, ss);
  const int T_ = g.T, M = g.M;
  for (int bc = blockIdx.y; bc < g.BC; bc += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < g.HW; p += gridDim.x * blockDim.x) {
    const T* xp = x + column_offset(bc, p, sx, g);
    A xr[KMAX], xi[KMAX];
    analysis<KMAX, A, A>([=](int t) { return to_acc<A>(xp[t * sx.t]); }, T_, M, 0, sc, ss, xr, xi);
    const T* fp = filt + column_offset(bc, p, sf, g);
#pragma unroll
    for (int k = 0; k < KMAX; ++k)
      if (k < M) apply_filter<A, A>(k, T_, tw.inv_t, to_acc<A>(fp[k * sf.t]), to_acc<A>(fp[k * sf.t + sf.ri]), xr[k], xi[k]);
    const T* rp = res != nullptr ? res + column_offset(bc, p, sr, g) : nullptr;
    T* yp = y + int64_t{bc} * T_ * g.HW + p;
    for (int t = 0; t < T_; ++t) {
      A v = synthesis<KMAX, A, A>(t, T_, M, sc, ss, xr, xi);
      if (rp != nullptr) v += to_acc<A>(rp[t * sr.t]);
      yp[int64_t{t} * g.HW] = from_acc<T>(v);
    }
  }
}

template <typename T, typename A, int KMAX>
__global__ void __launch_bounds__(kThreads, 1)
    spectral_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ filt,
                        T* __restrict__ dx, A* __restrict__ dfilt, Geometry g, Strides sdy, Strides sx, Strides sf, Strides sdf,
                        Twiddles<A> tw) {
  __shared__ A sc[kMaxT], ss[kMaxT];
  load_twiddles(tw, sc, ss);
  const int T_ = g.T, M = g.M;
  for (int bc = blockIdx.y; bc < g.BC; bc += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < g.HW; p += gridDim.x * blockDim.x) {
    const T* dp = dy + column_offset(bc, p, sdy, g);
    A gr[KMAX], gi[KMAX];
    analysis<KMAX, A, A>([=](int t) { return to_acc<A>(dp[t * sdy.t]); }, T_, M, 0, sc, ss, gr, gi);
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      const A w = onesided_weight<A>(k, T_, tw.inv_t);
      gr[k] *= w;
      gi[k] *= w;
    }
    if (dfilt != nullptr) {
      const T* xp = x + column_offset(bc, p, sx, g);
      A* op = dfilt + column_offset(bc, p, sdf, g);  // dfilt[b, c, k, h, w, ri] = op[k * sdf.t + ri * sdf.ri]
#pragma unroll
      for (int k0 = 0; k0 < KMAX; k0 += spectrum_chunk<A>()) {
        if (k0 < M) {
          constexpr int KC = KMAX < spectrum_chunk<A>() ? KMAX : spectrum_chunk<A>();
          A xr[KC], xi[KC];
          analysis<KC, A, A>([=](int t) { return to_acc<A>(xp[t * sx.t]); }, T_, M, k0, sc, ss, xr, xi);
#pragma unroll
          for (int kk = 0; kk < KC; ++kk) {
            const int k = k0 + kk;
            if (k < M && k < KMAX) {
              A dfr, dfi;
              filter_grad<A>(gr[k], gi[k], xr[kk], xi[kk], dfr, dfi);
              op[k * sdf.t] = dfr;
              op[k * sdf.t + sdf.ri] = dfi;
            }
          }
        }
      }
    }
    if (dx != nullptr) {
      const T* fp = filt + column_offset(bc, p, sf, g);
#pragma unroll
      for (int k = 0; k < KMAX; ++k)
        if (k < M) {
          spectrum_grad<A>(to_acc<A>(fp[k * sf.t]), to_acc<A>(fp[k * sf.t + sf.ri]), gr[k], gi[k]);
          real_bin(k, T_, gi[k]);
        }
      T* xo = dx + int64_t{bc} * T_ * g.HW + p;
      for (int t = 0; t < T_; ++t) xo[int64_t{t} * g.HW] = from_acc<T>(synthesis<KMAX, A, A>(t, T_, M, sc, ss, gr, gi));
    }
  }
}

Geometry geometry(const Problem& pb) {
  constexpr int64_t kIntMax = (int64_t{1} << 31) - 1;
  TORCH_CHECK(pb.B * pb.C <= kIntMax && pb.H * pb.W <= kIntMax, "fxkernels.spectral (cuda): B * C and H * W must ",
              "be below 2^31, got B * C = ", pb.B * pb.C, ", H * W = ", pb.H * pb.W);
  Geometry g;
  g.BC = static_cast<int>(pb.B * pb.C);
  g.C = static_cast<int>(pb.C);
  g.HW = static_cast<int>(pb.H * pb.W);
  g.W = static_cast<int>(pb.W);
  g.T = pb.T;
  g.M = pb.M;
  return g;
}

dim3 grid_for(const Geometry& g) {
  const int64_t bx = (int64_t{g.HW} + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(std::min<int64_t>(bx, kMaxGridX)), static_cast<unsigned>(std::min(g.BC, 65535)));
}

at::Tensor spectral_fwd_cuda(const at::Tensor& x, const at::Tensor& filt, const std::optional<at::Tensor>& residual) {
  const Problem pb = prepare_fwd("fxkernels.spectral_fwd", x, filt, residual, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  const Geometry g = geometry(pb);
  auto stream = at::cuda::getCurrentCUDAStream();
  FXK_DISPATCH_FLOATING(x.scalar_type(), "spectral_fwd_cuda", [&] {
    const Twiddles<acc_t> tw = make_twiddles<acc_t>(pb.T);
    const scalar_t* rp = pb.residual.defined() ? pb.residual.data_ptr<scalar_t>() : nullptr;
    with_freq_class(pb.M, [&](auto K) {
      spectral_fwd_kernel<scalar_t, acc_t, decltype(K)::value><<<grid_for(g), kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), filt.data_ptr<scalar_t>(), rp, y.data_ptr<scalar_t>(), g, pb.sx, pb.sf, pb.sr,
          tw);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> spectral_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                     const at::Tensor& filt, bool need_dx, bool need_dfilt) {
  const Problem pb = prepare_bwd("fxkernels.spectral_bwd", dy, x, filt, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor dx = need_dx ? at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous))
                          : at::empty({0}, x.options());
  at::Tensor dfilt = need_dfilt ? new_dfilt(filt) : at::empty({0}, x.options().dtype(acc));
  const Strides sdf = strides_of(dfilt);
  if (x.numel() == 0 || !(need_dx || need_dfilt)) return {dx, dfilt};
  const Geometry g = geometry(pb);
  auto stream = at::cuda::getCurrentCUDAStream();
  FXK_DISPATCH_FLOATING(x.scalar_type(), "spectral_bwd_cuda", [&] {
    const Twiddles<acc_t> tw = make_twiddles<acc_t>(pb.T);
    with_freq_class(pb.M, [&](auto K) {
      spectral_bwd_kernel<scalar_t, acc_t, decltype(K)::value><<<grid_for(g), kThreads, 0, stream>>>(
          dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), filt.data_ptr<scalar_t>(),
          need_dx ? dx.data_ptr<scalar_t>() : nullptr, need_dfilt ? dfilt.data_ptr<acc_t>() : nullptr, g, pb.sdy,
          pb.sx, pb.sf, sdf, tw);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {dx, dfilt};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CUDA, m) {
  m.impl("spectral_fwd", &spectral_fwd_cuda);
  m.impl("spectral_bwd", &spectral_bwd_cuda);
}

}  // namespace spectral
}  // namespace fxk

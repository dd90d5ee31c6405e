// Spatial-correlation CUDA ops (fxkernels/ops/corr/README.md, "Backend contract"): validation in corr_host.cpp,
// index math in corr_math.h (shared with the CPU kernels, so the CPU tests exercise it).
//
// f1 and f2 are first made channels-last (B, H, W, C) with ATen, so every dot product / axpy is over C contiguous
// (coalesced, 16-byte vector loads when C allows).
//   forward   one block per position (b, h, w): the displacements inside the map (clipped ranges from
//             fwd_range) are spread over the warps, one warp per displacement (lanes over C, warp sum); the
//             threads write the zeros of the displacements outside the map.
//   backward  one block per (position, gradient): df1 rows (sum over fwd_range displacements of dout * f2 rows)
//             and df2 rows (sum over bwd_range displacements of dout * f1 rows, the gather form); threads over C,
//             each sum in the fixed (p, q) order. No atomics: every output element is written by one thread.
// Accumulation in fp32 (fp64 for fp64 inputs), one rounding at the end.
#include <algorithm>
#include <cstdint>
#include <tuple>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "corr/corr.h"
#include "corr/corr_math.h"

namespace fxk {
namespace corr {
namespace {

constexpr int kFwdThreads = 128;
constexpr int kBwdThreads = 128;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxGrid = 1 << 30;  // grid-stride loops beyond this many blocks

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Elements of T in one 16-byte vector load.
template <typename T>
struct PackOf {
  static constexpr int N = static_cast<int>(16 / sizeof(T));
};

template <typename T>
__device__ __forceinline__ uint4 load16(const T* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// Dot product of two rows of C elements by one warp, in A; vec: rows 16-byte aligned and C a multiple of N.
template <typename T, typename A>
__device__ __forceinline__ A warp_dot(const T* __restrict__ a, const T* __restrict__ b, int C, bool vec, int lane) {
  A s = A(0);
  if (vec) {
    constexpr int N = PackOf<T>::N;
    const int np = C / N;
    for (int i = lane; i < np; i += 32) {
      const uint4 ra = load16(a + i * N), rb = load16(b + i * N);
      const T* va = reinterpret_cast<const T*>(&ra);
      const T* vb = reinterpret_cast<const T*>(&rb);
#pragma unroll
      for (int e = 0; e < N; ++e) s += to_acc<A>(va[e]) * to_acc<A>(vb[e]);
    }
  } else {
    for (int c = lane; c < C; c += 32) s += to_acc<A>(a[c]) * to_acc<A>(b[c]);
  }
  return warp_sum(s);
}

// f1c, f2c: (B, H, W, C) contiguous; out: (B, P*P, H, W) contiguous.
template <typename T, typename A>
__global__ void __launch_bounds__(kFwdThreads)
    corr_fwd_kernel(const T* __restrict__ f1c, const T* __restrict__ f2c, T* __restrict__ out, int64_t npos, int H,
                    int W, int C, int P, int d, bool vec) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int PP = P * P;
  for (int64_t pos = blockIdx.x; pos < npos; pos += gridDim.x) {
    const int w = static_cast<int>(pos % W);
    const int64_t bh = pos / W;
    const int h = static_cast<int>(bh % H);
    const int64_t b = bh / H;
    int plo, phi, qlo, qhi;
    fwd_range(h, H, P, d, plo, phi);
    fwd_range(w, W, P, d, qlo, qhi);
    T* o = out + b * PP * HW + static_cast<int64_t>(h) * W + w;  // out[b, pq, h, w] = o[pq * HW]
    for (int pq = threadIdx.x; pq < PP; pq += blockDim.x) {
      const int p = pq / P, q = pq - p * P;
      if (p < plo || p >= phi || q < qlo || q >= qhi) o[pq * HW] = T(0);
    }
    const int np = phi - plo, nq = qhi - qlo;
    const int nv = (np > 0 && nq > 0) ? np * nq : 0;
    const T* a = f1c + pos * C;
    for (int k = warp; k < nv; k += nwarps) {
      const int p = plo + k / nq, q = qlo + k % nq;
      const T* bp = f2c + ((bh + offset(p, P, d)) * W + w + offset(q, P, d)) * C;
      const A s = warp_dot<T, A>(a, bp, C, vec, lane);
      if (lane == 0) o[(p * P + q) * HW] = from_acc<T>(s);
    }
  }
}

// blockIdx.y = 0: df1c[b, h, w, :] = sum_{p, q in fwd ranges} dout[b, pq, h, w] * f2c[b, h + o(p), w + o(q), :]
// blockIdx.y = 1: df2c[b, y, x, :] = sum_{p, q in bwd ranges} dout[b, pq, y - o(p), x - o(q)] * f1c[b, y - o(p),
//                 x - o(q), :]
// Threads over C (16-byte packs when vec); dout through its strides g0..g3. Sums in increasing (p, q) order.
template <typename T, typename A>
__global__ void __launch_bounds__(kBwdThreads)
    corr_bwd_kernel(const T* __restrict__ dout, int64_t g0, int64_t g1, int64_t g2, int64_t g3,
                    const T* __restrict__ f1c, const T* __restrict__ f2c, T* __restrict__ df1c,
                    T* __restrict__ df2c, int64_t npos, int H, int W, int C, int P, int d, bool vec) {
  const bool second = blockIdx.y != 0;
  const T* __restrict__ src = second ? f1c : f2c;
  T* __restrict__ dst = second ? df2c : df1c;
  const int sgn = second ? -1 : 1;
  constexpr int N = PackOf<T>::N;
  for (int64_t pos = blockIdx.x; pos < npos; pos += gridDim.x) {
    const int w = static_cast<int>(pos % W);
    const int64_t bh = pos / W;
    const int h = static_cast<int>(bh % H);
    const int64_t b = bh / H;
    int plo, phi, qlo, qhi;
    if (second) {
      bwd_range(h, H, P, d, plo, phi);
      bwd_range(w, W, P, d, qlo, qhi);
    } else {
      fwd_range(h, H, P, d, plo, phi);
      fwd_range(w, W, P, d, qlo, qhi);
    }
    const T* gb = dout + b * g0;
    const int64_t brow = b * H;
    T* o = dst + pos * C;
    if (vec) {
      const int npk = C / N;
      for (int i = threadIdx.x; i < npk; i += blockDim.x) {
        A acc[N];
#pragma unroll
        for (int e = 0; e < N; ++e) acc[e] = A(0);
        for (int p = plo; p < phi; ++p) {
          const int hs = h + sgn * offset(p, P, d);
          for (int q = qlo; q < qhi; ++q) {
            const int ws = w + sgn * offset(q, P, d);
            // dout at the position the displacement starts from: (h, w) for df1, (hs, ws) for df2
            const int gh = second ? hs : h, gw = second ? ws : w;
            const A g = to_acc<A>(gb[(p * P + q) * g1 + gh * g2 + gw * g3]);
            const uint4 raw = load16(src + ((brow + hs) * W + ws) * C + i * N);
            const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
            for (int e = 0; e < N; ++e) acc[e] += g * to_acc<A>(v[e]);
          }
        }
        uint4 packed;
        T* pv = reinterpret_cast<T*>(&packed);
#pragma unroll
        for (int e = 0; e < N; ++e) pv[e] = from_acc<T>(acc[e]);
        *reinterpret_cast<uint4*>(o + i * N) = packed;
      }
    } else {
      for (int c = threadIdx.x; c < C; c += blockDim.x) {
        A acc = A(0);
        for (int p = plo; p < phi; ++p) {
          const int hs = h + sgn * offset(p, P, d);
          for (int q = qlo; q < qhi; ++q) {
            const int ws = w + sgn * offset(q, P, d);
            const int gh = second ? hs : h, gw = second ? ws : w;
            const A g = to_acc<A>(gb[(p * P + q) * g1 + gh * g2 + gw * g3]);
            acc += g * to_acc<A>(src[((brow + hs) * W + ws) * C + c]);
          }
        }
        o[c] = from_acc<T>(acc);
      }
    }
  }
}

// Channels-last copy (B, H, W, C) of a (B, C, H, W) tensor, contiguous.
at::Tensor channels_last(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).contiguous(); }

// 16-byte vector loads are possible: C a multiple of the pack and every row base 16-byte aligned.
bool can_vectorize(int64_t C, int64_t elem_size, std::initializer_list<const void*> ptrs) {
  if ((C * elem_size) % 16 != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

at::Tensor corr_fwd_cuda(const at::Tensor& f1, const at::Tensor& f2, int64_t patch, int64_t dilation) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb = prepare_fwd("fxkernels.corr_fwd", f1, f2, patch, dilation, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(f1.device());
  const int64_t PP = int64_t{pb.P} * pb.P;
  at::Tensor out = at::empty({pb.B, PP, pb.H, pb.W}, f1.options());
  if (out.numel() == 0) return out;
  if (pb.C == 0) return out.zero_();
  const at::Tensor f1c = channels_last(f1), f2c = channels_last(f2);
  const int64_t npos = pb.B * pb.H * pb.W;
  const dim3 grid(static_cast<unsigned>(std::min(npos, kMaxGrid)));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  FXK_DISPATCH_FLOATING(f1.scalar_type(), "fxkernels.corr_fwd", [&] {
    const bool vec = can_vectorize(pb.C, sizeof(scalar_t), {f1c.const_data_ptr(), f2c.const_data_ptr()});
    corr_fwd_kernel<scalar_t, acc_t><<<grid, kFwdThreads, 0, stream>>>(
        f1c.const_data_ptr<scalar_t>(), f2c.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), npos,
        static_cast<int>(pb.H), static_cast<int>(pb.W), static_cast<int>(pb.C), pb.P, pb.d, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> corr_bwd_cuda(const at::Tensor& dout, const at::Tensor& f1,
                                                 const at::Tensor& f2, int64_t patch, int64_t dilation) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const Problem pb = prepare_bwd("fxkernels.corr_bwd", dout, f1, f2, patch, dilation, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(f1.device());
  // Written channels-last by the kernel, returned contiguous (B, C, H, W).
  const auto opts = f1.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor df1 = at::empty({pb.B, pb.C, pb.H, pb.W}, opts);
  at::Tensor df2 = at::empty({pb.B, pb.C, pb.H, pb.W}, opts);
  if (df1.numel() == 0) return {df1.contiguous(), df2.contiguous()};
  const at::Tensor f1c = channels_last(f1), f2c = channels_last(f2);
  const int64_t npos = pb.B * pb.H * pb.W;
  const dim3 grid(static_cast<unsigned>(std::min(npos, kMaxGrid)), 2);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  FXK_DISPATCH_FLOATING(f1.scalar_type(), "fxkernels.corr_bwd", [&] {
    const bool vec = can_vectorize(pb.C, sizeof(scalar_t), {f1c.const_data_ptr(), f2c.const_data_ptr(),
                                                            df1.const_data_ptr(), df2.const_data_ptr()});
    const int64_t work = vec ? pb.C / PackOf<scalar_t>::N : pb.C;
    const int threads = static_cast<int>(std::min<int64_t>(kBwdThreads, (work + 31) / 32 * 32));
    corr_bwd_kernel<scalar_t, acc_t><<<grid, threads, 0, stream>>>(
        dout.const_data_ptr<scalar_t>(), dout.stride(0), dout.stride(1), dout.stride(2), dout.stride(3),
        f1c.const_data_ptr<scalar_t>(), f2c.const_data_ptr<scalar_t>(), df1.mutable_data_ptr<scalar_t>(),
        df2.mutable_data_ptr<scalar_t>(), npos, static_cast<int>(pb.H), static_cast<int>(pb.W),
        static_cast<int>(pb.C), pb.P, pb.d, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {df1.contiguous(), df2.contiguous()};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CUDA, m) {
  m.impl("corr_fwd", &corr_fwd_cuda);
  m.impl("corr_bwd", &corr_bwd_cuda);
}

}  // namespace corr
}  // namespace fxk

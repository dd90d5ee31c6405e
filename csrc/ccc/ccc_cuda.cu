// CCC CUDA ops (fxkernels/ops/ccc/README.md, "Backend contract"): validation in ccc_host.cpp, element math in
// ccc_math.h (shared with the CPU kernels).
//   knn           a normalise kernel, then a fused kernel per (batch, tile of rows): dot products into shared memory
//                 (the R x R matrix never goes to memory), cosine, then k rounds of a warp argmax per row.
//   edge max      fwd: thread per (b, i, f); bwd: inverse adjacency (CSR) of nbr built with ATen (stable sort,
//                 searchsorted), then thread per (b, j, f) summing its entries in increasing (i, s) order.
//   spatial       fwd: tiled gather-GEMM with the running max / argmax over s in registers; bwd: mask and gather
//                 kernels, two cuBLAS GEMMs (via ATen), and a CSR scatter kernel (increasing (n, s) order).
// No float atomics anywhere: every output element is written by exactly one thread, sums in a fixed order.
#include <algorithm>
#include <climits>
#include <tuple>
#include <utility>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "ccc/ccc.h"
#include "ccc/ccc_math.h"

namespace fxk {
namespace ccc {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

// Grid for a grid-stride loop over n items (at least one block).
unsigned int grid_for(int64_t n, int threads = kThreads) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, sms * 32)));
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// ---------------------------------------------------------------------------------------------------------
// k-NN

// xn[r] = x[r] / max(|x[r]|, eps) in the accumulation type, one warp per row.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    knn_normalize_kernel(const T* __restrict__ x, A* __restrict__ xn, int64_t rows, int D) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < rows; r += nwarps) {
    const T* p = x + r * D;
    A s = A(0);
    for (int d = lane; d < D; d += 32) {
      const A v = to_acc<A>(p[d]);
      s += v * v;
    }
    const A c = knn_clamp_norm(::sqrt(warp_sum(s)));
    for (int d = lane; d < D; d += 32) xn[r * D + d] = knn_normalize(to_acc<A>(p[d]), c);
  }
}

// Rows per block of the fused kernel (its dot-product accumulators per lane).
constexpr int kKnnRows = 8;

// One block per (b, tile of rt <= kKnnRows rows) of the normalised rows xn. Shared memory: xr[kKnnRows][dc]
// (a chunk of the tile's rows, zero padded) and sim[rt][R]. Dot products: warp per neighbour q, lanes over d, a
// warp sum per chunk of dc. Top-k: warp per row, round t takes the best (knn_better) of the candidates after the
// round t-1 winner.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    knn_topk_kernel(const A* __restrict__ x, int64_t* __restrict__ out, int64_t B, int R, int D, int k, int rt,
                    int dc) {
  extern __shared__ __align__(16) unsigned char knn_smem[];
  A* xr = reinterpret_cast<A*>(knn_smem);
  A* sim = xr + kKnnRows * dc;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int tiles = (R + rt - 1) / rt;
  for (int64_t tile = blockIdx.x; tile < B * tiles; tile += gridDim.x) {
    const int64_t b = tile / tiles;
    const int r0 = static_cast<int>(tile - b * tiles) * rt;
    const int nr = min(rt, R - r0);
    const A* xb = x + b * R * static_cast<int64_t>(D);
    __syncthreads();  // the previous tile is done with sim
    for (int e = threadIdx.x; e < nr * R; e += blockDim.x) sim[e] = A(0);
    for (int d0 = 0; d0 < D; d0 += dc) {
      const int dl = min(dc, D - d0);
      __syncthreads();  // sim zeroed / the previous chunk is done with xr
      for (int e = threadIdx.x; e < kKnnRows * dc; e += blockDim.x) {
        const int rr = e / dc, dd = e - rr * dc;
        xr[e] = (rr < nr && dd < dl) ? xb[static_cast<int64_t>(r0 + rr) * D + d0 + dd] : A(0);
      }
      __syncthreads();
      for (int q = warp; q < R; q += nwarps) {
        const A* xq = xb + static_cast<int64_t>(q) * D + d0;
        A part[kKnnRows];
#pragma unroll
        for (int rr = 0; rr < kKnnRows; ++rr) part[rr] = A(0);
        for (int dd = lane; dd < dl; dd += 32) {
          const A v = xq[dd];
#pragma unroll
          for (int rr = 0; rr < kKnnRows; ++rr) part[rr] += xr[rr * dc + dd] * v;
        }
#pragma unroll
        for (int rr = 0; rr < kKnnRows; ++rr) part[rr] = warp_sum(part[rr]);
        if (lane == 0) {
#pragma unroll
          for (int rr = 0; rr < kKnnRows; ++rr)
            if (rr < nr) sim[rr * R + q] += part[rr];
        }
      }
    }
    __syncthreads();
    for (int rr = warp; rr < nr; rr += nwarps) {
      const int64_t g = b * R + r0 + rr;
      const A* srow = sim + rr * R;
      A pv = A(0);
      int pi = -1;  // the previous round's winner (none yet)
      for (int t = 0; t < k; ++t) {
        A bv = A(0);
        int bi = -1;
        for (int q = lane; q < R; q += 32) {
          const A v = srow[q];
          if ((pi < 0 || knn_better(pv, pi, v, q)) && (bi < 0 || knn_better(v, q, bv, bi))) {
            bv = v;
            bi = q;
          }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
          const A ov = __shfl_xor_sync(kFullMask, bv, o);
          const int oi = __shfl_xor_sync(kFullMask, bi, o);
          if (oi >= 0 && (bi < 0 || knn_better(ov, oi, bv, bi))) {
            bv = ov;
            bi = oi;
          }
        }
        if (lane == 0) out[g * k + t] = bi;
        pv = bv;
        pi = bi;
      }
    }
  }
}

template <typename T, typename A>
void knn_cuda(const KnnProblem& pb, const at::Tensor& out) {
  const int R = static_cast<int>(pb.R), D = static_cast<int>(pb.D), k = static_cast<int>(pb.k);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor xn = at::empty({pb.B, pb.R, pb.D}, pb.x.options().dtype(acc_dtype(pb.x.scalar_type())));
  knn_normalize_kernel<T, A><<<grid_for(pb.B * pb.R * 32), kThreads, 0, stream>>>(
      pb.x.const_data_ptr<T>(), xn.mutable_data_ptr<A>(), pb.B * pb.R, D);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Tile rows and d-chunk: as many rows (up to kKnnRows) as the opt-in shared memory allows.
  const size_t optin = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  int rt = std::min(kKnnRows, R), dc = std::max(1, std::min(D, 256));
  auto bytes = [&]() { return (static_cast<size_t>(kKnnRows) * dc + static_cast<size_t>(rt) * R) * sizeof(A); };
  while (bytes() > optin && rt > 1) rt = (rt + 1) / 2;
  while (bytes() > optin && dc > 32) dc /= 2;
  TORCH_CHECK(bytes() <= optin, "fxkernels.ccc_knn: R = ", R,
              " rows do not fit the similarity buffer in shared memory (", optin, " bytes) for ", pb.x.scalar_type(),
              " input");
  const size_t smem = bytes();
  if (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(knn_topk_kernel<A>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  }
  const int64_t tiles = pb.B * ((R + rt - 1) / rt);
  const unsigned int grid = static_cast<unsigned int>(std::min<int64_t>(tiles, INT_MAX));
  knn_topk_kernel<A><<<grid, kThreads, smem, stream>>>(xn.const_data_ptr<A>(), out.mutable_data_ptr<int64_t>(), pb.B,
                                                      R, D, k, rt, dc);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor ccc_knn_cuda(const at::Tensor& x, int64_t k) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const KnnProblem pb = prepare_knn("fxkernels.ccc_knn", x, k, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(pb.x.device());
  at::Tensor out = at::empty({pb.B, pb.R, pb.k}, pb.x.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_knn", [&] { knn_cuda<scalar_t, acc_t>(pb, out); });
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Inverse adjacency of nbr (B, R, k) with values in [0, nodes): per batch, the entries e = r * k + s grouped by
// target (stable sort: increasing e within a target), perm (B, R * k) int32 and offsets (B, nodes + 1) int32.
std::pair<at::Tensor, at::Tensor> build_csr(const at::Tensor& nbr, int64_t nodes) {
  const int64_t B = nbr.size(0), E = nbr.size(1) * nbr.size(2);
  const at::Tensor keys = nbr.reshape({B, E});
  at::Tensor sorted, perm;
  std::tie(sorted, perm) = at::sort(keys, /*stable=*/true, /*dim=*/1, /*descending=*/false);
  const at::Tensor bounds = at::arange(nodes + 1, keys.options()).unsqueeze(0).expand({B, nodes + 1}).contiguous();
  at::Tensor offs = at::searchsorted(sorted, bounds, /*out_int32=*/true);
  return {perm.to(at::kInt).contiguous(), offs.contiguous()};
}

// ---------------------------------------------------------------------------------------------------------
// Channel graph: edge max forward / backward

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    edge_fwd_kernel(const T* __restrict__ ag, const int64_t* __restrict__ nbr, T* __restrict__ y,
                    uint8_t* __restrict__ arg, int64_t total, int64_t C, int64_t F, int k) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t row = e / F, f = e - row * F, b = row / C;
    const int64_t* nb = nbr + row * k;
    const T* g = ag + b * C * 2 * F + F + f;
    int am = 0;
    const A best =
        edge_max<T, A>(to_acc<A>(ag[row * 2 * F + f]), k, [&](int s) { return to_acc<A>(g[nb[s] * 2 * F]); }, am);
    y[e] = from_acc<T>(best);
    arg[e] = static_cast<uint8_t>(am);
  }
}

// Thread per (b, j, f): da of node j, and dg[b, j, f] = the sum over j's CSR entries (i, s), in order.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    edge_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ y, const uint8_t* __restrict__ arg,
                    const int32_t* __restrict__ perm, const int32_t* __restrict__ offs, T* __restrict__ dag,
                    int64_t total, int64_t C, int64_t F, int k) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t row = e / F, f = e - row * F, b = row / C, j = row - b * C;
    dag[row * 2 * F + f] = from_acc<T>(relu_grad(to_acc<A>(dy[e]), to_acc<A>(y[e])));
    const int32_t* pb = perm + b * C * k;
    const int32_t* ob = offs + b * (C + 1);
    A acc = A(0);
    for (int p = ob[j], pe = ob[j + 1]; p < pe; ++p) {
      const int ent = pb[p];
      const int i = ent / k, s = ent - i * k;
      const int64_t src = (b * C + i) * F + f;
      acc += slot_grad(relu_grad(to_acc<A>(dy[src]), to_acc<A>(y[src])), static_cast<int>(arg[src]), s);
    }
    dag[row * 2 * F + F + f] = from_acc<T>(acc);
  }
}

std::tuple<at::Tensor, at::Tensor> ccc_edge_max_fwd_cuda(const at::Tensor& ag, const at::Tensor& nbr) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const EdgeProblem pb = prepare_edge_fwd("fxkernels.ccc_edge_max_fwd", ag, nbr, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(pb.ag.device());
  at::Tensor y = at::empty({pb.B, pb.C, pb.F}, pb.ag.options());
  at::Tensor arg = at::empty({pb.B, pb.C, pb.F}, pb.ag.options().dtype(at::kByte));
  const int64_t total = y.numel();
  if (total == 0) return {y, arg};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  FXK_DISPATCH_FLOATING(pb.ag.scalar_type(), "fxkernels.ccc_edge_max_fwd", [&] {
    edge_fwd_kernel<scalar_t, acc_t><<<grid_for(total), kThreads, 0, stream>>>(
        pb.ag.const_data_ptr<scalar_t>(), pb.nbr.const_data_ptr<int64_t>(), y.mutable_data_ptr<scalar_t>(),
        arg.mutable_data_ptr<uint8_t>(), total, pb.C, pb.F, static_cast<int>(pb.k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, arg};
}

at::Tensor ccc_edge_max_bwd_cuda(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& arg,
                                 const at::Tensor& nbr) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const EdgeProblem pb = prepare_edge_bwd("fxkernels.ccc_edge_max_bwd", dy, y, arg, nbr, c10::DeviceType::CUDA);
  TORCH_CHECK(pb.C * pb.k <= INT_MAX, "fxkernels.ccc_edge_max_bwd: C * k must be below 2^31, got C = ", pb.C,
              ", k = ", pb.k);
  const c10::cuda::CUDAGuard guard(pb.dy.device());
  at::Tensor dag = at::empty({pb.B, pb.C, 2 * pb.F}, pb.dy.options());
  const int64_t total = pb.B * pb.C * pb.F;
  if (total == 0) return dag;
  at::Tensor perm, offs;
  std::tie(perm, offs) = build_csr(pb.nbr, pb.C);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  FXK_DISPATCH_FLOATING(pb.dy.scalar_type(), "fxkernels.ccc_edge_max_bwd", [&] {
    edge_bwd_kernel<scalar_t, acc_t><<<grid_for(total), kThreads, 0, stream>>>(
        pb.dy.const_data_ptr<scalar_t>(), pb.y.const_data_ptr<scalar_t>(), pb.arg.const_data_ptr<uint8_t>(),
        perm.const_data_ptr<int32_t>(), offs.const_data_ptr<int32_t>(), dag.mutable_data_ptr<scalar_t>(), total,
        pb.C, pb.F, static_cast<int>(pb.k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dag;
}

// ---------------------------------------------------------------------------------------------------------
// Spatial graph

// Gather-GEMM tile: kBM rows (c) x kBN columns (f) per block, kBK positions n per step; 256 threads, each
// 4 x 4 outputs at rows ty + 16 i, columns tx + 16 j (conflict-free shared-memory reads).
constexpr int kBM = 64, kBN = 64, kBK = 16, kSpatialThreads = 256;

template <typename T, typename A>
__global__ void __launch_bounds__(kSpatialThreads)
    spatial_fwd_kernel(const T* __restrict__ x, const int64_t* __restrict__ nbr, const T* __restrict__ w2,
                       const T* __restrict__ a, T* __restrict__ y, uint8_t* __restrict__ arg, int C, int N, int F,
                       int k, int tiles_c, int tiles_f) {
  __shared__ A xs[kBK][kBM + 1];  // xs[kk][m] = x[b, c0 + m, nbr[b, n0 + kk, s]]
  __shared__ A ws[kBK][kBN + 1];  // ws[kk][j] = w2[f0 + j, n0 + kk]
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t tile = blockIdx.x;
  const int64_t b = tile / (static_cast<int64_t>(tiles_c) * tiles_f);
  const int rem = static_cast<int>(tile - b * tiles_c * tiles_f);
  const int c0 = (rem / tiles_f) * kBM, f0 = (rem % tiles_f) * kBN;
  const T* xb = x + b * C * static_cast<int64_t>(N);
  const int64_t* nb = nbr + b * N * static_cast<int64_t>(k);
  const int64_t out0 = b * C * static_cast<int64_t>(F);

  A best[4][4];
  uint8_t am[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      best[i][j] = A(0);
      am[i][j] = 0;
    }
  for (int s = 0; s < k; ++s) {
    A acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = A(0);
    for (int n0 = 0; n0 < N; n0 += kBK) {
#pragma unroll
      for (int r = 0; r < kBM * kBK / kSpatialThreads; ++r) {
        const int e = tid + r * kSpatialThreads;
        const int m = e / kBK, kk = e % kBK, c = c0 + m, n = n0 + kk;
        xs[kk][m] = (c < C && n < N) ? to_acc<A>(xb[static_cast<int64_t>(c) * N + nb[static_cast<int64_t>(n) * k + s]])
                                     : A(0);
      }
#pragma unroll
      for (int r = 0; r < kBN * kBK / kSpatialThreads; ++r) {
        const int e = tid + r * kSpatialThreads;
        const int j = e / kBK, kk = e % kBK, f = f0 + j, n = n0 + kk;
        ws[kk][j] = (f < F && n < N) ? to_acc<A>(w2[static_cast<int64_t>(f) * N + n]) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        A av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = xs[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) bv[j] = ws[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int c = c0 + ty + 16 * i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int f = f0 + tx + 16 * j;
        if (c < C && f < F) {
          const A v = edge_value<T, A>(to_acc<A>(a[out0 + static_cast<int64_t>(c) * F + f]), acc[i][j]);
          if (s == 0 || edge_takes(v, best[i][j])) {
            best[i][j] = v;
            am[i][j] = static_cast<uint8_t>(s);
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int c = c0 + ty + 16 * i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int f = f0 + tx + 16 * j;
      if (c < C && f < F) {
        const int64_t o = out0 + static_cast<int64_t>(c) * F + f;
        y[o] = from_acc<T>(best[i][j]);
        arg[o] = am[i][j];
      }
    }
  }
}

// da = dy * (y > 0) (storage dtype) and dh[s] = da * (arg == s) (accumulation type), thread per (b, c, f).
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    spatial_mask_kernel(const T* __restrict__ dy, const T* __restrict__ y, const uint8_t* __restrict__ arg,
                        T* __restrict__ da, A* __restrict__ dh, int64_t total, int k) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const A d = relu_grad(to_acc<A>(dy[e]), to_acc<A>(y[e]));
    da[e] = from_acc<T>(d);
    const int am = arg[e];
    for (int s = 0; s < k; ++s) dh[s * total + e] = slot_grad(d, am, s);
  }
}

// xg[s, b * C + c, n] = x[b, c, nbr[b, n, s]] (accumulation type): warp per (s, b, c) row, lanes over n.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    spatial_gather_kernel(const T* __restrict__ x, const int64_t* __restrict__ nbr, A* __restrict__ xg,
                          int64_t rows, int64_t C, int64_t N, int k) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t q = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; q < k * rows; q += nwarps) {
    const int64_t s = q / rows, row = q - s * rows, b = row / C;  // q = s * rows + row
    const T* src = x + row * N;
    const int64_t* idx = nbr + b * N * k + s;
    A* dst = xg + q * N;
    for (int64_t n = lane; n < N; n += 32) dst[n] = to_acc<A>(src[idx[n * k]]);
  }
}

// dxg[b, c, m] = sum over m's CSR entries (n, s) in order of p[s, b * C + c, n]; thread per (b, c, m).
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    spatial_scatter_kernel(const A* __restrict__ p, const int32_t* __restrict__ perm,
                           const int32_t* __restrict__ offs, T* __restrict__ dxg, int64_t total, int64_t C,
                           int64_t N, int k) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t rows = total / N;  // B * C
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t row = e / N, m = e - row * N, b = row / C;
    const int32_t* pb = perm + b * N * k;
    const int32_t* ob = offs + b * (N + 1);
    A acc = A(0);
    for (int q = ob[m], qe = ob[m + 1]; q < qe; ++q) {
      const int ent = pb[q];
      const int n = ent / k, s = ent - n * k;
      acc += p[(s * rows + row) * N + n];
    }
    dxg[e] = from_acc<T>(acc);
  }
}

std::tuple<at::Tensor, at::Tensor> ccc_spatial_fwd_cuda(const at::Tensor& x, const at::Tensor& nbr,
                                                        const at::Tensor& w2, const at::Tensor& a) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const SpatialProblem pb = prepare_spatial_fwd("fxkernels.ccc_spatial_fwd", x, nbr, w2, a, c10::DeviceType::CUDA);
  TORCH_CHECK(pb.C <= INT_MAX && pb.N <= INT_MAX && pb.F <= INT_MAX, "fxkernels.ccc_spatial_fwd: C, N and F must be "
              "below 2^31");
  const c10::cuda::CUDAGuard guard(pb.x.device());
  at::Tensor y = at::empty({pb.B, pb.C, pb.F}, pb.x.options());
  at::Tensor arg = at::empty({pb.B, pb.C, pb.F}, pb.x.options().dtype(at::kByte));
  if (y.numel() == 0) return {y, arg};
  const int64_t tiles_c = (pb.C + kBM - 1) / kBM, tiles_f = (pb.F + kBN - 1) / kBN;
  const int64_t blocks = pb.B * tiles_c * tiles_f;
  TORCH_CHECK(blocks <= INT_MAX, "fxkernels.ccc_spatial_fwd: too many output tiles (", blocks, ")");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_spatial_fwd", [&] {
    spatial_fwd_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(blocks), kSpatialThreads, 0, stream>>>(
        pb.x.const_data_ptr<scalar_t>(), pb.nbr.const_data_ptr<int64_t>(), pb.w2.const_data_ptr<scalar_t>(),
        pb.a.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), arg.mutable_data_ptr<uint8_t>(),
        static_cast<int>(pb.C), static_cast<int>(pb.N), static_cast<int>(pb.F), static_cast<int>(pb.k),
        static_cast<int>(tiles_c), static_cast<int>(tiles_f));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, arg};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ccc_spatial_bwd_cuda(const at::Tensor& dy, const at::Tensor& y,
                                                                    const at::Tensor& arg, const at::Tensor& x,
                                                                    const at::Tensor& nbr, const at::Tensor& w2) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // nested ATen calls record nothing
  const SpatialProblem pb =
      prepare_spatial_bwd("fxkernels.ccc_spatial_bwd", dy, y, arg, x, nbr, w2, c10::DeviceType::CUDA);
  TORCH_CHECK(pb.N * pb.k <= INT_MAX, "fxkernels.ccc_spatial_bwd: N * k must be below 2^31, got N = ", pb.N,
              ", k = ", pb.k);
  const c10::cuda::CUDAGuard guard(pb.x.device());
  const int64_t rows = pb.B * pb.C, k = pb.k;
  const auto acc_opts = pb.x.options().dtype(acc_dtype(pb.x.scalar_type()));
  at::Tensor da = at::empty({pb.B, pb.C, pb.F}, pb.x.options());
  at::Tensor dxg = at::empty({pb.B, pb.C, pb.N}, pb.x.options());
  if (rows == 0) return {da, dxg, at::zeros({pb.F, pb.N}, pb.x.options())};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor dh = at::empty({k * rows, pb.F}, acc_opts);  // dh_s stacked over s
  at::Tensor xg = at::empty({k * rows, pb.N}, acc_opts);  // gathered x_s stacked over s
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_spatial_bwd", [&] {
    const int64_t nf = rows * pb.F, nn = k * rows * pb.N;
    if (nf > 0) {
      spatial_mask_kernel<scalar_t, acc_t><<<grid_for(nf), kThreads, 0, stream>>>(
          pb.dy.const_data_ptr<scalar_t>(), pb.y.const_data_ptr<scalar_t>(), pb.arg.const_data_ptr<uint8_t>(),
          da.mutable_data_ptr<scalar_t>(), dh.mutable_data_ptr<acc_t>(), nf, static_cast<int>(k));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (nn > 0) {
      spatial_gather_kernel<scalar_t, acc_t><<<grid_for(k * rows * 32), kThreads, 0, stream>>>(
          pb.x.const_data_ptr<scalar_t>(), pb.nbr.const_data_ptr<int64_t>(), xg.mutable_data_ptr<acc_t>(), rows,
          pb.C, pb.N, static_cast<int>(k));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  const at::Tensor dw2 = at::mm(dh.t(), xg);                     // sum_s dh_s^T xg_s: (F, N)
  const at::Tensor p = at::mm(dh, pb.w2.to(acc_opts.dtype()));  // dh_s w2 stacked over s: (k * rows, N)
  if (pb.N > 0) {
    at::Tensor perm, offs;
    std::tie(perm, offs) = build_csr(pb.nbr, pb.N);
    const int64_t total = rows * pb.N;
    FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_spatial_bwd", [&] {
      spatial_scatter_kernel<scalar_t, acc_t><<<grid_for(total), kThreads, 0, stream>>>(
          p.const_data_ptr<acc_t>(), perm.const_data_ptr<int32_t>(), offs.const_data_ptr<int32_t>(),
          dxg.mutable_data_ptr<scalar_t>(), total, pb.C, pb.N, static_cast<int>(k));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {da, dxg, dw2.to(pb.x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CUDA, m) {
  m.impl("ccc_knn", &ccc_knn_cuda);
  m.impl("ccc_edge_max_fwd", &ccc_edge_max_fwd_cuda);
  m.impl("ccc_edge_max_bwd", &ccc_edge_max_bwd_cuda);
  m.impl("ccc_spatial_fwd", &ccc_spatial_fwd_cuda);
  m.impl("ccc_spatial_bwd", &ccc_spatial_bwd_cuda);
}

}  // namespace ccc
}  // namespace fxk

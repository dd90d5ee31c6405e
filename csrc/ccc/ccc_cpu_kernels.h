// CCC CPU kernels (fxkernels/ops/ccc/README.md, "Backend contract"). Included once per ISA variant
// (ccc_cpu.cpp: baseline, ccc_cpu_avx2.cpp: AVX2+FMA); everything here has internal linkage, so the variants
// never mix. Element math from ccc_math.h (shared with the CUDA kernels).
//
// The dense products go to ATen GEMMs (MKL / OpenBLAS); the gathers, the running max with its argmax, the k-NN
// selection (ccc_cpu_knn.h) and the deterministic scatters are the loops below, parallelised with
// at::parallel_for over disjoint outputs (no atomics, every sum in a fixed order), inner loops contiguous over f
// (or n, or q).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ccc/ccc.h"
#include "ccc/ccc_cpu_knn.h"
#include "ccc/ccc_math.h"

namespace fxk {
namespace ccc {
namespace {

// Scratch budget of the chunked spatial loops (elements of the largest per-chunk buffer; ~4 MB in fp32).
constexpr int64_t kChunkElems = int64_t{1} << 20;

// ---------------------------------------------------------------------------------------------------------
// Running max over slots, vectorised over f. Slot s of a row with centre terms a[0, F) (storage dtype T) and
// neighbour terms g[0, F) (T or the accumulation type); best / arg hold slots [0, s). arg is int32 here (the
// lane width of the float compare, so the select vectorises); finish_row narrows it to uint8.
template <typename T, typename A, typename G>
FXK_HD_INLINE void max_slot(int64_t F, int s, const T* FXK_RESTRICT a, const G* FXK_RESTRICT g,
                            A* FXK_RESTRICT best, int32_t* FXK_RESTRICT arg) {
  if (s == 0) {
    for (int64_t f = 0; f < F; ++f) {
      best[f] = edge_value<T, A>(to_acc<A>(a[f]), to_acc<A>(g[f]));
      arg[f] = 0;
    }
    return;
  }
  for (int64_t f = 0; f < F; ++f) {
    const A v = edge_value<T, A>(to_acc<A>(a[f]), to_acc<A>(g[f]));
    const bool take = edge_takes(v, best[f]);
    best[f] = take ? v : best[f];
    arg[f] = take ? s : arg[f];
  }
}

template <typename T, typename A>
FXK_HD_INLINE void finish_row(int64_t F, const A* FXK_RESTRICT best, const int32_t* FXK_RESTRICT arg,
                              T* FXK_RESTRICT y, uint8_t* FXK_RESTRICT arg8) {
  for (int64_t f = 0; f < F; ++f) {
    y[f] = from_acc<T>(best[f]);
    arg8[f] = static_cast<uint8_t>(arg[f]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Channel graph: edge max forward / backward

template <typename T, typename A>
void edge_fwd_impl(const EdgeProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  const int64_t C = pb.C, F = pb.F, k = pb.k;
  const T* ag = pb.ag.const_data_ptr<T>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  T* yp = y.mutable_data_ptr<T>();
  uint8_t* ap = arg.mutable_data_ptr<uint8_t>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(F * k, 1));
  at::parallel_for(0, pb.B * C, grain, [&](int64_t r0, int64_t r1) {
    std::vector<A> best(static_cast<size_t>(F));
    std::vector<int32_t> am(static_cast<size_t>(F));
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / C;
      const T* a = ag + row * 2 * F;
      for (int s = 0; s < k; ++s) {
        const T* g = ag + (b * C + nbr[row * k + s]) * 2 * F + F;
        max_slot<T, A, T>(F, s, a, g, best.data(), am.data());
      }
      finish_row<T, A>(F, best.data(), am.data(), yp + row * F, ap + row * F);
    }
  });
}

// Parallel over (b, f-block): a task owns dg[b, :, f-block] and sums into it in increasing (i, s) order.
template <typename T, typename A>
void edge_bwd_impl(const EdgeProblem& pb, const at::Tensor& dag) {
  const int64_t B = pb.B, C = pb.C, F = pb.F, k = pb.k;
  const T* dy = pb.dy.const_data_ptr<T>();
  const T* yv = pb.y.const_data_ptr<T>();
  const uint8_t* argp = pb.arg.const_data_ptr<uint8_t>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  T* out = dag.mutable_data_ptr<T>();
  // Whole rows (sequential memory) unless that leaves too few tasks or too big an accumulator.
  const int64_t want_tasks = 4 * static_cast<int64_t>(at::get_num_threads());
  int64_t fb = F;
  while (fb > 16 && (B * ((F + fb - 1) / fb) < want_tasks || C * fb * static_cast<int64_t>(sizeof(A)) > (1 << 19)))
    fb = (fb / 2 + 15) / 16 * 16;
  const int64_t nfb = (F + fb - 1) / fb;
  at::parallel_for(0, B * nfb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> acc(static_cast<size_t>(C * fb));
    std::vector<A> da(static_cast<size_t>(fb));
    std::vector<int32_t> am(static_cast<size_t>(fb));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nfb, f0 = (t % nfb) * fb, fl = std::min(fb, F - f0);
      std::fill(acc.begin(), acc.begin() + C * fl, A(0));
      for (int64_t i = 0; i < C; ++i) {
        const int64_t row = b * C + i;
        const T* FXK_RESTRICT dyr = dy + row * F + f0;
        const T* FXK_RESTRICT yr = yv + row * F + f0;
        const uint8_t* FXK_RESTRICT ar = argp + row * F + f0;
        T* FXK_RESTRICT dar = out + row * 2 * F + f0;
        A* FXK_RESTRICT dap = da.data();
        int32_t* FXK_RESTRICT amp = am.data();
        for (int64_t f = 0; f < fl; ++f) {
          dap[f] = relu_grad(to_acc<A>(dyr[f]), to_acc<A>(yr[f]));
          dar[f] = from_acc<T>(dap[f]);
          amp[f] = ar[f];
        }
        for (int s = 0; s < k; ++s) {
          A* FXK_RESTRICT accj = acc.data() + nbr[row * k + s] * fl;
          for (int64_t f = 0; f < fl; ++f) accj[f] += slot_grad(dap[f], amp[f], s);
        }
      }
      for (int64_t j = 0; j < C; ++j) {
        const A* FXK_RESTRICT src = acc.data() + j * fl;
        T* FXK_RESTRICT dst = out + (b * C + j) * 2 * F + F + f0;
        for (int64_t f = 0; f < fl; ++f) dst[f] = from_acc<T>(src[f]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Spatial graph: gather-GEMM edge max forward / backward, chunked over the batch.

// Batches per chunk so that the (k * rows, max(N, F)) scratch stays within kChunkElems.
inline int64_t spatial_chunk(const SpatialProblem& pb) {
  const int64_t per_batch = std::max<int64_t>(1, pb.k * pb.C * std::max<int64_t>(std::max(pb.N, pb.F), 1));
  return std::max<int64_t>(1, std::min<int64_t>(pb.B, kChunkElems / per_batch));
}

// xg[s * rows + (b - b0) * C + c, n] = x[b, c, nbr[b, n, s]] for b in [b0, b0 + nb), in the accumulation type.
template <typename T, typename A>
void spatial_gather(const SpatialProblem& pb, int64_t b0, int64_t nb, const at::Tensor& xg) {
  const int64_t C = pb.C, N = pb.N, k = pb.k, rows = nb * C;
  const T* x = pb.x.const_data_ptr<T>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  A* dst = xg.mutable_data_ptr<A>();
  at::parallel_for(0, k * rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t s = q / rows, r = q - s * rows, b = b0 + r / C;
      const T* FXK_RESTRICT src = x + (b0 * C + r) * N;
      const int64_t* FXK_RESTRICT idx = nbr + b * N * k + s;
      A* FXK_RESTRICT o = dst + q * N;
      for (int64_t n = 0; n < N; ++n) o[n] = to_acc<A>(src[idx[n * k]]);
    }
  });
}

template <typename T, typename A>
void spatial_fwd_impl(const SpatialProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  const int64_t C = pb.C, N = pb.N, F = pb.F, k = pb.k;
  const at::Tensor w2t = pb.w2.to(acc_dtype(pb.x.scalar_type())).t();  // (N, F)
  const T* ap = pb.a.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  uint8_t* argp = arg.mutable_data_ptr<uint8_t>();
  const int64_t bc = spatial_chunk(pb);
  at::Tensor xg_buf = at::empty({k * bc * C, N}, w2t.options());
  at::Tensor h_buf = at::empty({k * bc * C, F}, w2t.options());
  for (int64_t b0 = 0; b0 < pb.B; b0 += bc) {
    const int64_t nb = std::min(bc, pb.B - b0), rows = nb * C;
    at::Tensor xg = xg_buf.narrow(0, 0, k * rows);
    at::Tensor h = h_buf.narrow(0, 0, k * rows);  // h_s stacked over s
    spatial_gather<T, A>(pb, b0, nb, xg);
    at::mm_out(h, xg, w2t);
    const A* hp = h.const_data_ptr<A>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(F * k, 1));
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      std::vector<A> best(static_cast<size_t>(F));
      std::vector<int32_t> am(static_cast<size_t>(F));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t row = b0 * C + r;
        for (int s = 0; s < k; ++s)
          max_slot<T, A, A>(F, s, ap + row * F, hp + (s * rows + r) * F, best.data(), am.data());
        finish_row<T, A>(F, best.data(), am.data(), yp + row * F, argp + row * F);
      }
    });
  }
}

template <typename T, typename A>
void spatial_bwd_impl(const SpatialProblem& pb, const at::Tensor& da_out, const at::Tensor& dxg_out,
                      const at::Tensor& dw2_acc) {
  const int64_t C = pb.C, N = pb.N, F = pb.F, k = pb.k;
  const at::Tensor w2a = pb.w2.to(acc_dtype(pb.x.scalar_type())).contiguous();  // (F, N)
  const T* dyp = pb.dy.const_data_ptr<T>();
  const T* yp = pb.y.const_data_ptr<T>();
  const uint8_t* argp = pb.arg.const_data_ptr<uint8_t>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  T* dap = da_out.mutable_data_ptr<T>();
  T* dxp = dxg_out.mutable_data_ptr<T>();
  at::Tensor dw2 = dw2_acc;
  const int64_t bc = spatial_chunk(pb);
  at::Tensor dh_buf = at::empty({k * bc * C, F}, w2a.options());
  at::Tensor xg_buf = at::empty({k * bc * C, N}, w2a.options());
  at::Tensor p_buf = at::empty({k * bc * C, N}, w2a.options());
  for (int64_t b0 = 0; b0 < pb.B; b0 += bc) {
    const int64_t nb = std::min(bc, pb.B - b0), rows = nb * C;
    // da and dh_s = da * (arg == s), stacked over s: (k * rows, F)
    at::Tensor dh = dh_buf.narrow(0, 0, k * rows);
    A* dhp = dh.mutable_data_ptr<A>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(F * k, 1)), [&](int64_t r0,
                                                                                              int64_t r1) {
      std::vector<A> da(static_cast<size_t>(F));
      std::vector<int32_t> am(static_cast<size_t>(F));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t row = b0 * C + r;
        const T* FXK_RESTRICT dyr = dyp + row * F;
        const T* FXK_RESTRICT yr = yp + row * F;
        const uint8_t* FXK_RESTRICT ar = argp + row * F;
        T* FXK_RESTRICT dar = dap + row * F;
        A* FXK_RESTRICT d = da.data();
        int32_t* FXK_RESTRICT amp = am.data();
        for (int64_t f = 0; f < F; ++f) {
          d[f] = relu_grad(to_acc<A>(dyr[f]), to_acc<A>(yr[f]));
          dar[f] = from_acc<T>(d[f]);
          amp[f] = ar[f];
        }
        for (int s = 0; s < k; ++s) {
          A* FXK_RESTRICT o = dhp + (s * rows + r) * F;
          for (int64_t f = 0; f < F; ++f) o[f] = slot_grad(d[f], amp[f], s);
        }
      }
    });
    at::Tensor xg = xg_buf.narrow(0, 0, k * rows);
    spatial_gather<T, A>(pb, b0, nb, xg);
    dw2.addmm_(dh.t(), xg);  // dw2 += sum_s dh_s^T xg_s
    at::Tensor p = p_buf.narrow(0, 0, k * rows);
    at::mm_out(p, dh, w2a);  // dh_s w2 stacked over s: (k * rows, N)
    const A* pp = p.const_data_ptr<A>();
    // dxg[b, c, m] = sum over (n, s) with nbr[b, n, s] == m of p_s[b, c, n], in increasing (n, s) order.
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(N * k, 1)), [&](int64_t r0,
                                                                                             int64_t r1) {
      std::vector<A> acc(static_cast<size_t>(N));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t row = b0 * C + r, b = row / C;
        const int64_t* FXK_RESTRICT nb_b = nbr + b * N * k;
        A* FXK_RESTRICT ac = acc.data();
        std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t n = 0; n < N; ++n)
          for (int s = 0; s < k; ++s) ac[nb_b[n * k + s]] += pp[(s * rows + r) * N + n];
        T* FXK_RESTRICT dst = dxp + row * N;
        for (int64_t m = 0; m < N; ++m) dst[m] = from_acc<T>(ac[m]);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Entry points of this ISA variant (dtype dispatch).

void knn_kernel(const KnnProblem& pb, const at::Tensor& out) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_knn", [&] { knn_impl<scalar_t, acc_t>(pb, out); });
}
void edge_fwd_kernel(const EdgeProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  FXK_DISPATCH_FLOATING(pb.ag.scalar_type(), "fxkernels.ccc_edge_max_fwd",
                        [&] { edge_fwd_impl<scalar_t, acc_t>(pb, y, arg); });
}
void edge_bwd_kernel(const EdgeProblem& pb, const at::Tensor& dag) {
  FXK_DISPATCH_FLOATING(pb.dy.scalar_type(), "fxkernels.ccc_edge_max_bwd",
                        [&] { edge_bwd_impl<scalar_t, acc_t>(pb, dag); });
}
void spatial_fwd_kernel(const SpatialProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_spatial_fwd",
                        [&] { spatial_fwd_impl<scalar_t, acc_t>(pb, y, arg); });
}
void spatial_bwd_kernel(const SpatialProblem& pb, const at::Tensor& da, const at::Tensor& dxg,
                        const at::Tensor& dw2_acc) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_spatial_bwd",
                        [&] { spatial_bwd_impl<scalar_t, acc_t>(pb, da, dxg, dw2_acc); });
}

inline CpuKernels make_cpu_kernels() {
  return CpuKernels{&knn_kernel, &edge_fwd_kernel, &edge_bwd_kernel, &spatial_fwd_kernel, &spatial_bwd_kernel};
}

}  // namespace
}  // namespace ccc
}  // namespace fxk

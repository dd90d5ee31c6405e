// Dynamic-image CPU kernels (fxkernels/ops/dynamic_image/README.md, "Backend contract"). Included once per ISA
// variant (dynamic_image_cpu.cpp: baseline, dynamic_image_cpu_avx2.cpp: AVX2+FMA); everything here has internal
// linkage, so the variants never mix.
//
// Work unit: a chunk of up to kChunk consecutive elements of one row (dynamic_image.h, Rows). The forward keeps
// the chunk's sums in a local buffer in the accumulation type A (64 KiB for fp32: L2-resident) and streams x once,
// four time steps per pass over the buffer when a row is unit-stride fp32 / fp64 (four long sequential runs that
// the hardware prefetchers follow; short chunks or one step per pass measured 35-55% of the copy bandwidth, this
// 60-100% depending on the machine's load), then writes y once. The backward loads the chunk of dy once and
// writes its T rows of dx (its time is dominated by the first touch of the freshly allocated dx pages).
// Parallel over chunks with at::parallel_for; every output element belongs to one chunk and every sum runs in
// time order, so results are deterministic and independent of the thread count; no atomics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "common/cpu_vec.h"
#include "dynamic_image/dynamic_image.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace dynamic_image {
namespace {

constexpr int64_t kChunk = 16384;  // elements per work unit: 64 KiB (fp32) / 128 KiB (fp64) of sums (L2)

// acc[i] (= if first) (+)= a * x[i * s], i < n
template <typename S, typename A>
inline void accumulate(A* FXK_RESTRICT acc, const S* FXK_RESTRICT x, int64_t n, int64_t s, A a, bool first) {
  if (first) {
    for (int64_t i = 0; i < n; ++i) acc[i] = a * to_acc<A>(x[i * s]);
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] + a * to_acc<A>(x[i * s]);
  }
}

// The unit-stride fp32 / fp64 case, R time steps per pass over the sums (R concurrent input streams, 1/R of the
// sum traffic): acc = (..((acc + a[0] x0) + a[1] x1) ..) + a[R-1] x_{R-1}, the same order as R single steps.
template <int R, typename A>
inline void accumulate_rows(A* FXK_RESTRICT acc, const A* FXK_RESTRICT x, int64_t st, int64_t n, const A* a,
                            bool first) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  V av[R];
  for (int k = 0; k < R; ++k) av[k] = V{} + a[k];
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V v = first ? av[0] * vload<V>(x + i) : vload<V>(acc + i) + av[0] * vload<V>(x + i);
    for (int k = 1; k < R; ++k) v = v + av[k] * vload<V>(x + k * st + i);
    vstore<V>(acc + i, v);
  }
  for (; i < n; ++i) {
    A v = first ? a[0] * x[i] : acc[i] + a[0] * x[i];
    for (int k = 1; k < R; ++k) v = v + a[k] * x[k * st + i];
    acc[i] = v;
  }
}

// acc = sum_t alpha_t x[t * st + i * s] over the chunk, in time order
template <typename S, typename A>
inline void chunk_sum(A* FXK_RESTRICT acc, const S* FXK_RESTRICT x, int64_t T, int64_t st, int64_t n, int64_t s,
                      const A* alpha) {
  int64_t t = 0;
  if constexpr (std::is_same_v<S, A>) {
    if (s == 1) {
      for (; t + 4 <= T; t += 4) accumulate_rows<4, A>(acc, x + t * st, st, n, alpha + t, t == 0);
      for (; t < T; ++t) accumulate_rows<1, A>(acc, x + t * st, st, n, alpha + t, t == 0);
      return;
    }
  }
  for (; t < T; ++t) accumulate<S, A>(acc, x + t * st, n, s, alpha[t], t == 0);
}

// out[i * s] = a * v[i], i < n
template <typename S, typename A>
inline void scale_store(S* FXK_RESTRICT out, int64_t s, const A* FXK_RESTRICT v, int64_t n, A a) {
  int64_t i = 0;
  if constexpr (std::is_same_v<S, A>) {
    if (s == 1) {
      using V = typename Vec<A>::type;
      constexpr int L = Vec<A>::L;
      const V av = V{} + a;
      for (; i + L <= n; i += L) vstore<V>(out + i, av * vload<V>(v + i));
    }
  }
  for (; i < n; ++i) out[i * s] = from_acc<S>(a * v[i]);
}

// Runs fn(row, i0, n) over every chunk of every row, in parallel (grain: about 64 Ki elements read per task).
template <typename F>
void for_each_chunk(const Problem& pb, F&& fn) {
  const int64_t n = pb.rows.n, nchunk = (n + kChunk - 1) / kChunk;
  const int64_t work = std::min(n, kChunk) * std::max<int64_t>(pb.T, 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work);
  at::parallel_for(0, pb.rows.count * nchunk, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t r = k / nchunk, i0 = (k - r * nchunk) * kChunk;
      fn(r, i0, std::min(kChunk, n - i0));
    }
  });
}

template <typename S>
void fwd_typed(const Problem& pb, const at::Tensor& y) {
  using A = acc_type<S>;
  const std::vector<A> alpha = coefficients<A>(pb.T);
  const S* x = pb.src.data_ptr<S>();
  S* out = y.data_ptr<S>();
  const Rows& rows = pb.rows;
  for_each_chunk(pb, [&](int64_t r, int64_t i0, int64_t n) {
    alignas(64) A acc[kChunk];
    const S* xr = x + rows.offset(r) + i0 * rows.s;
    chunk_sum<S, A>(acc, xr, pb.T, pb.st, n, rows.s, alpha.data());
    S* yr = out + r * rows.n + i0;
    for (int64_t i = 0; i < n; ++i) yr[i] = from_acc<S>(acc[i]);
  });
}

template <typename S>
void bwd_typed(const Problem& pb, const at::Tensor& dx) {
  using A = acc_type<S>;
  const std::vector<A> alpha = coefficients<A>(pb.T);
  const S* dy = pb.src.data_ptr<S>();
  S* out = dx.data_ptr<S>();
  const Rows& rows = pb.rows;
  for_each_chunk(pb, [&](int64_t r, int64_t i0, int64_t n) {
    alignas(64) A g[kChunk];
    accumulate<S, A>(g, dy + rows.offset(r) + i0 * rows.s, n, rows.s, A(1), true);
    const int64_t o = r * rows.n + i0;  // rows never cross a p: o and o + n - 1 share o / Q
    S* base = out + (o / pb.Q) * pb.T * pb.Q + o % pb.Q;
    for (int64_t t = 0; t < pb.T; ++t) scale_store<S, A>(base + t * pb.Q, pb.dx_s, g, n, alpha[t]);
  });
}

void fwd(const Problem& pb, const at::Tensor& y) {
  FXK_DISPATCH_FLOATING(pb.src.scalar_type(), "dynamic_image_fwd", [&] { fwd_typed<scalar_t>(pb, y); });
}

void bwd(const Problem& pb, const at::Tensor& dx) {
  FXK_DISPATCH_FLOATING(pb.src.scalar_type(), "dynamic_image_bwd", [&] { bwd_typed<scalar_t>(pb, dx); });
}

inline CpuKernels make_cpu_kernels() { return CpuKernels{&fwd, &bwd}; }

}  // namespace
}  // namespace dynamic_image
}  // namespace fxk

#pragma GCC diagnostic pop

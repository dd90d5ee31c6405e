// Spatial-correlation CPU kernels (fxkernels/ops/corr/README.md, "Backend contract"). Included once per ISA
// variant (corr_cpu.cpp: baseline, corr_cpu_avx2.cpp: AVX2+FMA, which defines FXK_CORR_FMA); everything here has
// internal linkage, so the variants never mix. Index math from corr_math.h (shared with the CUDA kernels).
//
// Layout: f1 and f2 are first copied to channels-last (B, H, W, C) in the accumulation type A (float, or double
// for float64), so every dot product / axpy runs over C contiguously. Along a row, o(q) = (q - R) * d only pairs
// positions of the same residue r = w mod d: on the residue-r sub-row (positions r + d*i) the displacements form
// a band of width P (q = j - i + R), so for a pair of rows (h, h + o(p)) the work is a banded product of two
// small (n x C) matrices. It is done in register tiles: forward MR x NR dot products (vectors over C, one
// horizontal sum per tile entry), backward MR output rows x vectors of C (broadcast coefficient times row).
// Only displacements inside the map are visited (ranges clipped analytically), tiles only where the band is; a
// non-finite value reaches only the positions whose displacements land on it (see finite_flags).
//
// Parallel over (b, h) rows with at::parallel_for: every output row (out[b, :, h, :], df1[b, :, h, :],
// df2[b, :, h, :]) is owned by one task, each sum runs in a fixed order (p, then residue tile, then j / i), so
// results are deterministic and independent of the thread count; no atomics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/cpu_vec.h"

#include "corr/corr.h"
#include "corr/corr_math.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace corr {
namespace {

// acc + a * b (fused in the AVX2+FMA build).
#if defined(FXK_CORR_FMA)
FXK_HD_INLINE Vec<float>::type madd(Vec<float>::type a, Vec<float>::type b, Vec<float>::type acc) {
  return _mm256_fmadd_ps(a, b, acc);
}
FXK_HD_INLINE Vec<double>::type madd(Vec<double>::type a, Vec<double>::type b, Vec<double>::type acc) {
  return _mm256_fmadd_pd(a, b, acc);
}
#else
template <typename V>
FXK_HD_INLINE V madd(V a, V b, V acc) {
  return acc + a * b;
}
#endif

// Sum of the lanes, pairwise in a fixed order.
template <typename A>
FXK_HD_INLINE A hsum(const typename Vec<A>::type& v) {
  constexpr int L = Vec<A>::L;
  A t[L];
  std::memcpy(t, &v, sizeof(t));
  for (int w = L / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  return t[0];
}

// Forward register tile: res[k][l] = dot(a[k], b[l]) over C, k < MR, l < NR.
constexpr int kFwdMR = 3, kFwdNR = 4;

template <typename A, int MR, int NR>
FXK_HD_INLINE void dot_tile(const A* const* a, const A* const* b, int C, A (*res)[NR]) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  V acc[MR][NR];
  for (int k = 0; k < MR; ++k)
    for (int l = 0; l < NR; ++l) acc[k][l] = V{};
  int c = 0;
  for (; c + L <= C; c += L) {
    V av[MR];
    for (int k = 0; k < MR; ++k) av[k] = vload<V>(a[k] + c);
    for (int l = 0; l < NR; ++l) {
      const V bv = vload<V>(b[l] + c);
      for (int k = 0; k < MR; ++k) acc[k][l] = madd(av[k], bv, acc[k][l]);
    }
  }
  if constexpr (std::is_same<A, float>::value && NR == 4) {
    // four horizontal sums at once: halves, then two shuffle-add rounds (a fixed order)
    typedef float V4 __attribute__((vector_size(16)));
    for (int k = 0; k < MR; ++k) {
      V4 y[4];
      for (int l = 0; l < 4; ++l)
        y[l] = __builtin_shufflevector(acc[k][l], acc[k][l], 0, 1, 2, 3) +
               __builtin_shufflevector(acc[k][l], acc[k][l], 4, 5, 6, 7);
      const V4 a = __builtin_shufflevector(y[0], y[1], 0, 4, 1, 5) + __builtin_shufflevector(y[0], y[1], 2, 6, 3, 7);
      const V4 b = __builtin_shufflevector(y[2], y[3], 0, 4, 1, 5) + __builtin_shufflevector(y[2], y[3], 2, 6, 3, 7);
      const V4 r = __builtin_shufflevector(a, b, 0, 1, 4, 5) + __builtin_shufflevector(a, b, 2, 3, 6, 7);
      std::memcpy(res[k], &r, sizeof(r));
    }
  } else {
    for (int k = 0; k < MR; ++k)
      for (int l = 0; l < NR; ++l) res[k][l] = hsum<A>(acc[k][l]);
  }
  for (; c < C; ++c)
    for (int k = 0; k < MR; ++k)
      for (int l = 0; l < NR; ++l) res[k][l] += a[k][c] * b[l][c];
}

// Backward register tile: out[k][c] += sum_{s < ns} coef[k * ldc + s] * src[s][c] for k < 4 rows, c in [0, C),
// two vectors of C at a time (the 4 x 2 accumulators are named variables so they stay in registers over the s
// loop), then one vector, then a scalar tail.
constexpr int kBwdMR = 4;

template <typename A>
FXK_HD_INLINE void axpy_chunk2(A* const* out, const A* const* src, const A* coef, int ldc, int ns, int c) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  V a00 = vload<V>(out[0] + c), a01 = vload<V>(out[0] + c + L);
  V a10 = vload<V>(out[1] + c), a11 = vload<V>(out[1] + c + L);
  V a20 = vload<V>(out[2] + c), a21 = vload<V>(out[2] + c + L);
  V a30 = vload<V>(out[3] + c), a31 = vload<V>(out[3] + c + L);
  const A* c0 = coef;
  const A* c1 = coef + ldc;
  const A* c2 = coef + 2 * ldc;
  const A* c3 = coef + 3 * ldc;
  for (int s = 0; s < ns; ++s) {
    const V x0 = vload<V>(src[s] + c), x1 = vload<V>(src[s] + c + L);
    const V k0 = V{} + c0[s], k1 = V{} + c1[s], k2 = V{} + c2[s], k3 = V{} + c3[s];
    a00 = madd(k0, x0, a00);
    a01 = madd(k0, x1, a01);
    a10 = madd(k1, x0, a10);
    a11 = madd(k1, x1, a11);
    a20 = madd(k2, x0, a20);
    a21 = madd(k2, x1, a21);
    a30 = madd(k3, x0, a30);
    a31 = madd(k3, x1, a31);
  }
  vstore(out[0] + c, a00);
  vstore(out[0] + c + L, a01);
  vstore(out[1] + c, a10);
  vstore(out[1] + c + L, a11);
  vstore(out[2] + c, a20);
  vstore(out[2] + c + L, a21);
  vstore(out[3] + c, a30);
  vstore(out[3] + c + L, a31);
}

template <typename A>
FXK_HD_INLINE void axpy_chunk1(A* const* out, const A* const* src, const A* coef, int ldc, int ns, int c) {
  using V = typename Vec<A>::type;
  V a0 = vload<V>(out[0] + c), a1 = vload<V>(out[1] + c), a2 = vload<V>(out[2] + c), a3 = vload<V>(out[3] + c);
  for (int s = 0; s < ns; ++s) {
    const V x = vload<V>(src[s] + c);
    a0 = madd(V{} + coef[s], x, a0);
    a1 = madd(V{} + coef[ldc + s], x, a1);
    a2 = madd(V{} + coef[2 * ldc + s], x, a2);
    a3 = madd(V{} + coef[3 * ldc + s], x, a3);
  }
  vstore(out[0] + c, a0);
  vstore(out[1] + c, a1);
  vstore(out[2] + c, a2);
  vstore(out[3] + c, a3);
}

template <typename A>
FXK_HD_INLINE void axpy_tile(A* const* out, const A* const* src, const A* coef, int ldc, int ns, int C) {
  constexpr int L = Vec<A>::L;
  int c = 0;
  for (; c + 2 * L <= C; c += 2 * L) axpy_chunk2<A>(out, src, coef, ldc, ns, c);
  for (; c + L <= C; c += L) axpy_chunk1<A>(out, src, coef, ldc, ns, c);
  for (; c < C; ++c)
    for (int k = 0; k < kBwdMR; ++k) {
      A a = out[k][c];
      for (int s = 0; s < ns; ++s) a += coef[k * ldc + s] * src[s][c];
      out[k][c] = a;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Layout changes

// Rows [r0, r1) of sample b of src (B, C, H, W) in T (any strides) -> dst (r1 - r0, W, C) in A, channels-last.
// Each task copies the rows it reads into its own buffer (L2-sized for FlowNetC maps), so the channels-last
// copies never go through memory.
// In tiles of kTile channels x kTile positions, so both sides touch whole cache lines (a plain strided loop would
// write with a stride of C elements, which aliases onto a few L1 sets).
constexpr int64_t kTile = 16;

template <typename T, typename A>
void rows_channels_last(const T* FXK_RESTRICT sp, const int64_t* st, int64_t b, int64_t r0, int64_t r1, int64_t C,
                        int64_t W, A* FXK_RESTRICT dst) {
  A tmp[kTile][kTile];
  for (int64_t h = r0; h < r1; ++h)
    for (int64_t w0 = 0; w0 < W; w0 += kTile) {
      const int64_t nw = std::min(kTile, W - w0);
      for (int64_t c0 = 0; c0 < C; c0 += kTile) {
        const int64_t nc = std::min(kTile, C - c0);
        const T* FXK_RESTRICT s = sp + b * st[0] + c0 * st[1] + h * st[2] + w0 * st[3];
        for (int64_t cc = 0; cc < nc; ++cc)
          for (int64_t ww = 0; ww < nw; ++ww) tmp[cc][ww] = to_acc<A>(s[cc * st[1] + ww * st[3]]);
        A* FXK_RESTRICT o = dst + ((h - r0) * W + w0) * C + c0;
        for (int64_t ww = 0; ww < nw; ++ww)
          for (int64_t cc = 0; cc < nc; ++cc) o[ww * C + cc] = tmp[cc][ww];
      }
    }
}

// Tasks: (b, chunk of rows). Chunks only split samples when there are too few of them to keep every thread busy.
struct RowTasks {
  int64_t per_b = 1, rows = 1;
};
inline RowTasks row_tasks(int64_t B, int64_t H) {
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  RowTasks t;
  t.per_b = std::min<int64_t>(H, std::max<int64_t>(1, (want + B - 1) / B));
  t.rows = (H + t.per_b - 1) / t.per_b;
  t.per_b = (H + t.rows - 1) / t.rows;
  return t;
}

// The (b, h) row of an output (B, C, H, W) contiguous in T <- acc (W, C) in A, rounded once.
template <typename T, typename A>
void store_row(T* FXK_RESTRICT out, const A* FXK_RESTRICT acc, int64_t b, int64_t h, int64_t C, int64_t H,
               int64_t W) {
  T* FXK_RESTRICT o = out + (b * C * H + h) * W;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t w = 0; w < W; ++w) o[c * H * W + w] = from_acc<T>(acc[w * C + c]);
}

// j range [jlo, jhi) of the band of sub-row position i (n positions): j = i + q - R for q in fwd_range.
FXK_HD_INLINE void band_j(int i, int n, int P, int& jlo, int& jhi) {
  int lo, hi;
  fwd_range(i, n, P, 1, lo, hi);
  jlo = i + lo - P / 2;
  jhi = i + hi - P / 2;
}
// i range [ilo, ihi) of the band of sub-row position j: i = j - q + R for q in bwd_range.
FXK_HD_INLINE void band_i(int j, int n, int P, int& ilo, int& ihi) {
  int lo, hi;
  bwd_range(j, n, P, 1, lo, hi);
  ilo = j + P / 2 - hi + 1;
  ihi = j + P / 2 - lo + 1;
}

// ---------------------------------------------------------------------------------------------------------
// Forward

template <typename T, typename A>
void fwd_impl(const Problem& pb, const at::Tensor& out) {
  const int64_t B = pb.B, H = pb.H, W = pb.W;
  const int C = static_cast<int>(pb.C), P = pb.P, d = pb.d, Hi = static_cast<int>(H), Wi = static_cast<int>(W);
  const int64_t HW = H * W, PP = int64_t{P} * P;
  const T* s1p = pb.f1.const_data_ptr<T>();
  const T* s2p = pb.f2.const_data_ptr<T>();
  const int64_t st1[4] = {pb.f1.stride(0), pb.f1.stride(1), pb.f1.stride(2), pb.f1.stride(3)};
  const int64_t st2[4] = {pb.f2.stride(0), pb.f2.stride(1), pb.f2.stride(2), pb.f2.stride(3)};
  const RowTasks rt = row_tasks(B, H);
  const int64_t reach = int64_t{P / 2} * d;  // |o(p)| <= reach
  T* op = out.mutable_data_ptr<T>();
  constexpr int MR = kFwdMR, NR = kFwdNR;
  at::parallel_for(0, B * rt.per_b, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> buf1, buf2;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / rt.per_b, h0 = (t % rt.per_b) * rt.rows, h1 = std::min(H, h0 + rt.rows);
      const int64_t e0 = std::max<int64_t>(0, h0 - reach), e1 = std::min(H, h1 + reach);
      buf1.resize(static_cast<size_t>((h1 - h0) * W * C));
      buf2.resize(static_cast<size_t>((e1 - e0) * W * C));
      rows_channels_last<T, A>(s1p, st1, b, h0, h1, C, W, buf1.data());
      rows_channels_last<T, A>(s2p, st2, b, e0, e1, C, W, buf2.data());
      for (int h = static_cast<int>(h0); h < h1; ++h) {
      T* FXK_RESTRICT ob = op + b * PP * HW + int64_t{h} * W;  // out[b, pq, h, w] = ob[pq * HW + w]
      for (int64_t pq = 0; pq < PP; ++pq) std::fill(ob + pq * HW, ob + pq * HW + W, T(0));
      const A* r1 = buf1.data() + (h - h0) * W * C;
      int plo, phi;
      fwd_range(h, Hi, P, d, plo, phi);
      for (int p = plo; p < phi; ++p) {
        const A* r2 = buf2.data() + (h + offset(p, P, d) - e0) * W * C;
        T* FXK_RESTRICT obp = ob + int64_t{p} * P * HW;
        for (int r = 0; r < d && r < Wi; ++r) {
          const int n = residue_count(Wi, r, d);
          for (int i0 = 0; i0 < n; i0 += MR) {
            const int mi = std::min(MR, n - i0);
            int jlo, jhi, unused;
            band_j(i0, n, P, jlo, unused);
            band_j(i0 + mi - 1, n, P, unused, jhi);
            const A* a[MR];
            for (int k = 0; k < MR; ++k) a[k] = r1 + int64_t{r + d * (i0 + std::min(k, mi - 1))} * C;
            for (int j0 = jlo; j0 < jhi; j0 += NR) {
              const int nj = std::min(NR, jhi - j0);
              const A* bp[NR];
              for (int l = 0; l < NR; ++l) bp[l] = r2 + int64_t{r + d * (j0 + std::min(l, nj - 1))} * C;
              A res[MR][NR];
              dot_tile<A, MR, NR>(a, bp, C, res);
              for (int k = 0; k < mi; ++k)
                for (int l = 0; l < nj; ++l) {
                  const int i = i0 + k, q = band_q(i, j0 + l, P);
                  if (q >= 0 && q < P) obp[int64_t{q} * HW + r + d * i] = from_acc<T>(res[k][l]);
                }
            }
          }
        }
      }
      }
    }
  });
}

// Non-finite data in the backward tiles: a register tile shares its source rows between MR output positions
// whose bands differ at the edges, with zero coefficients where a position's displacement leaves the patch; a zero
// times an infinite or NaN source value would put NaN into a position that no displacement reaches. So every
// source position gets a finiteness flag (one vector pass over its C values: a sum of v * 0 is 0 unless some v is
// not finite), and a tile whose source rows are not all finite takes the exact path: each position over its own
// band only.
template <typename A>
void finite_flags(const A* FXK_RESTRICT buf, int64_t positions, int C, std::vector<uint8_t>& flags) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  flags.resize(static_cast<size_t>(positions));
  for (int64_t q = 0; q < positions; ++q) {
    const A* FXK_RESTRICT v = buf + q * C;
    V zv = V{};
    int c = 0;
    for (; c + L <= C; c += L) zv += vload<V>(v + c) * A(0);
    A z = hsum<A>(zv);
    for (; c < C; ++c) z += v[c] * A(0);
    flags[q] = static_cast<uint8_t>(z == A(0));
  }
}

// out[c] += coef[s] * src[s][c] for s in [s0, s1), c < C (the exact path of one output position).
template <typename A>
FXK_HD_INLINE void axpy_row(A* FXK_RESTRICT out, const A* const* src, const A* coef, int s0, int s1, int C) {
  for (int s = s0; s < s1; ++s) {
    const A k = coef[s];
    const A* FXK_RESTRICT x = src[s];
    for (int c = 0; c < C; ++c) out[c] += k * x[c];
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward: task (b, h) computes the rows df1[b, :, h, :] and df2[b, :, h, :] (both gathers).

template <typename T, typename A>
void bwd_impl(const Problem& pb, const at::Tensor& df1, const at::Tensor& df2) {
  const int64_t B = pb.B, H = pb.H, W = pb.W;
  const int C = static_cast<int>(pb.C), P = pb.P, d = pb.d, Hi = static_cast<int>(H), Wi = static_cast<int>(W);
  const T* s1p = pb.f1.const_data_ptr<T>();
  const T* s2p = pb.f2.const_data_ptr<T>();
  const int64_t st1[4] = {pb.f1.stride(0), pb.f1.stride(1), pb.f1.stride(2), pb.f1.stride(3)};
  const int64_t st2[4] = {pb.f2.stride(0), pb.f2.stride(1), pb.f2.stride(2), pb.f2.stride(3)};
  const RowTasks rt = row_tasks(B, H);
  const int64_t reach = int64_t{P / 2} * d;  // |o(p)| <= reach
  const T* gp = pb.dout.const_data_ptr<T>();
  const int64_t g0 = pb.dout.stride(0), g1 = pb.dout.stride(1), g2 = pb.dout.stride(2), g3 = pb.dout.stride(3);
  T* d1p = df1.mutable_data_ptr<T>();
  T* d2p = df2.mutable_data_ptr<T>();
  constexpr int MR = kBwdMR;
  const int ldc = P + MR;  // the band of MR consecutive sub-row positions spans at most P + MR - 1 positions
  at::parallel_for(0, B * rt.per_b, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> acc1(static_cast<size_t>(W * C)), acc2(static_cast<size_t>(W * C)),
        scratch(static_cast<size_t>(C)), coef(static_cast<size_t>(MR * ldc)), buf1, buf2;
    std::vector<const A*> srcv(static_cast<size_t>(ldc));
    std::vector<uint8_t> fin1, fin2;  // finiteness of the positions of buf1 / buf2
    A* cf = coef.data();
    const A** src = srcv.data();
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / rt.per_b, h0 = (t % rt.per_b) * rt.rows, h1 = std::min(H, h0 + rt.rows);
      const int64_t e0 = std::max<int64_t>(0, h0 - reach), e1 = std::min(H, h1 + reach);
      buf1.resize(static_cast<size_t>((e1 - e0) * W * C));
      buf2.resize(static_cast<size_t>((e1 - e0) * W * C));
      rows_channels_last<T, A>(s1p, st1, b, e0, e1, C, W, buf1.data());
      rows_channels_last<T, A>(s2p, st2, b, e0, e1, C, W, buf2.data());
      finite_flags<A>(buf1.data(), (e1 - e0) * W, C, fin1);
      finite_flags<A>(buf2.data(), (e1 - e0) * W, C, fin2);
      const T* gb = gp + b * g0;
      for (int h = static_cast<int>(h0); h < h1; ++h) {
      std::fill(acc1.begin(), acc1.end(), A(0));
      std::fill(acc2.begin(), acc2.end(), A(0));
      int plo, phi;
      // df1[b, :, h, w] = sum_{p, q inside} dout[b, pq, h, w] * f2[b, :, h + o(p), w + o(q)]: output positions i
      // of the residue-r sub-row, sum over its band j.
      fwd_range(h, Hi, P, d, plo, phi);
      for (int p = plo; p < phi; ++p) {
        const A* r2 = buf2.data() + (h + offset(p, P, d) - e0) * W * C;
        const uint8_t* f2r = fin2.data() + (h + offset(p, P, d) - e0) * W;
        const T* gbp = gb + int64_t{p} * P * g1 + int64_t{h} * g2;
        for (int r = 0; r < d && r < Wi; ++r) {
          const int n = residue_count(Wi, r, d);
          for (int i0 = 0; i0 < n; i0 += MR) {
            const int mi = std::min(MR, n - i0);
            int jlo, jhi, unused;
            band_j(i0, n, P, jlo, unused);
            band_j(i0 + mi - 1, n, P, unused, jhi);
            const int ns = jhi - jlo;
            if (ns <= 0) continue;
            bool finite = true;
            for (int s = 0; s < ns; ++s) {
              src[s] = r2 + int64_t{r + d * (jlo + s)} * C;
              finite = finite && f2r[r + d * (jlo + s)] != 0;
            }
            A* o[MR];
            for (int k = 0; k < MR; ++k) {
              const int i = i0 + k;
              o[k] = k < mi ? acc1.data() + int64_t{r + d * i} * C : scratch.data();
              for (int s = 0; s < ns; ++s) {
                const int q = band_q(i, jlo + s, P);
                cf[k * ldc + s] = (k < mi && q >= 0 && q < P)
                                      ? to_acc<A>(gbp[int64_t{q} * g1 + int64_t{r + d * i} * g3])
                                      : A(0);
              }
            }
            if (finite) {
              axpy_tile<A>(o, src, cf, ldc, ns, C);
            } else {
              for (int k = 0; k < mi; ++k) {
                int lo, hi;
                band_j(i0 + k, n, P, lo, hi);
                axpy_row<A>(o[k], src, cf + k * ldc, lo - jlo, hi - jlo, C);
              }
            }
          }
        }
      }
      // df2[b, :, h, x] = sum_{p, q inside} dout[b, pq, h - o(p), x - o(q)] * f1[b, :, h - o(p), x - o(q)]: output
      // positions j of the residue-r sub-row, sum over its band i (rows hs = h - o(p)).
      bwd_range(h, Hi, P, d, plo, phi);
      for (int p = plo; p < phi; ++p) {
        const int hs = h - offset(p, P, d);
        const A* r1 = buf1.data() + (hs - e0) * W * C;
        const uint8_t* f1r = fin1.data() + (hs - e0) * W;
        const T* gbp = gb + int64_t{p} * P * g1 + int64_t{hs} * g2;
        for (int r = 0; r < d && r < Wi; ++r) {
          const int n = residue_count(Wi, r, d);
          for (int j0 = 0; j0 < n; j0 += MR) {
            const int mj = std::min(MR, n - j0);
            int ilo, ihi, unused;
            band_i(j0, n, P, ilo, unused);
            band_i(j0 + mj - 1, n, P, unused, ihi);
            const int ns = ihi - ilo;
            if (ns <= 0) continue;
            bool finite = true;
            for (int s = 0; s < ns; ++s) {
              src[s] = r1 + int64_t{r + d * (ilo + s)} * C;
              finite = finite && f1r[r + d * (ilo + s)] != 0;
            }
            A* o[MR];
            for (int k = 0; k < MR; ++k) {
              const int j = j0 + k;
              o[k] = k < mj ? acc2.data() + int64_t{r + d * j} * C : scratch.data();
              for (int s = 0; s < ns; ++s) {
                const int i = ilo + s, q = band_q(i, j, P);
                cf[k * ldc + s] = (k < mj && q >= 0 && q < P)
                                      ? to_acc<A>(gbp[int64_t{q} * g1 + int64_t{r + d * i} * g3])
                                      : A(0);
              }
            }
            if (finite) {
              axpy_tile<A>(o, src, cf, ldc, ns, C);
            } else {
              for (int k = 0; k < mj; ++k) {
                int lo, hi;
                band_i(j0 + k, n, P, lo, hi);
                axpy_row<A>(o[k], src, cf + k * ldc, lo - ilo, hi - ilo, C);
              }
            }
          }
        }
      }
      store_row<T, A>(d1p, acc1.data(), b, h, C, H, W);
      store_row<T, A>(d2p, acc2.data(), b, h, C, H, W);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Entry points of this ISA variant (dtype dispatch).

void fwd_kernel(const Problem& pb, const at::Tensor& out) {
  FXK_DISPATCH_FLOATING(pb.f1.scalar_type(), "fxkernels.corr_fwd", [&] { fwd_impl<scalar_t, acc_t>(pb, out); });
}
void bwd_kernel(const Problem& pb, const at::Tensor& df1, const at::Tensor& df2) {
  FXK_DISPATCH_FLOATING(pb.f1.scalar_type(), "fxkernels.corr_bwd",
                        [&] { bwd_impl<scalar_t, acc_t>(pb, df1, df2); });
}

inline CpuKernels make_cpu_kernels() { return CpuKernels{&fwd_kernel, &bwd_kernel}; }

}  // namespace
}  // namespace corr
}  // namespace fxk

#pragma GCC diagnostic pop

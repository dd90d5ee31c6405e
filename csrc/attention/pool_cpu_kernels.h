// attention_pool CPU kernels (fxkernels/ops/attention/README.md, "attention_pool"). Included once per ISA variant
// (pool_cpu.cpp: baseline, pool_cpu_avx2.cpp: AVX2+FMA, which defines FXK_APOOL_FMA); everything here has
// internal linkage, so the variants never mix.
//
// x is read in its token layout: a row (one token of one head) is a contiguous hd vector, so a depthwise tap is
// an elementwise product of two hd vectors (weight row, x row), vectorised over hd with the sum over the taps
// kept in registers (tap_sum).
//   forward   per output row: z = sum over the valid taps of wt[tap] * x[row(tap)] (the cls row: z = x row),
//             then the LayerNorm of z in the same pass; stats (mean, rstd) saved. Parallel over output rows.
//   backward  phase 1, over a fixed partition of the output rows into tasks (a function of the problem size
//             only, not of the thread count): z recomputed, dz = LayerNorm backward (or dy), kept in a buffer;
//             the task's partial sums of dw (dz * x rows), dnw (dy * xhat), dnb (dy) in its own slot; the slots
//             are then added in task order. Phase 2, over input rows: dx[row] = sum over the output rows whose
//             taps read it of wt[tap] * dz (owner computes). Deterministic, no atomics.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "common/cpu_vec.h"

#include "attention/pool.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace attn_pool {
namespace {

// acc + a * b (fused in the AVX2+FMA build).
#if defined(FXK_APOOL_FMA)
inline __attribute__((always_inline)) Vec<float>::type madd(Vec<float>::type a, Vec<float>::type b,
                                                            Vec<float>::type acc) {
  return _mm256_fmadd_ps(a, b, acc);
}
inline __attribute__((always_inline)) Vec<double>::type madd(Vec<double>::type a, Vec<double>::type b,
                                                             Vec<double>::type acc) {
  return _mm256_fmadd_pd(a, b, acc);
}
#else
template <typename V>
inline __attribute__((always_inline)) V madd(V a, V b, V acc) {
  return acc + a * b;
}
#endif

// Sum of the lanes, pairwise in a fixed order.
template <typename A>
inline A hsum(const typename Vec<A>::type& v) {
  constexpr int L = Vec<A>::L;
  A t[L];
  std::memcpy(t, &v, sizeof(t));
  for (int w = L / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  return t[0];
}

// out[:hd] = sum_{j < n} w[j][:hd] * r[j][:hd] (0 for n = 0), the j-sum in registers, 4 vectors of hd at a time.
template <typename A>
inline void tap_sum(int64_t hd, int n, const A* const* w, const A* const* r, A* out) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  int64_t d = 0;
  for (; d + 4 * L <= hd; d += 4 * L) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int j = 0; j < n; ++j) {
      const A* wj = w[j] + d;
      const A* rj = r[j] + d;
      a0 = madd(vload<V>(wj), vload<V>(rj), a0);
      a1 = madd(vload<V>(wj + L), vload<V>(rj + L), a1);
      a2 = madd(vload<V>(wj + 2 * L), vload<V>(rj + 2 * L), a2);
      a3 = madd(vload<V>(wj + 3 * L), vload<V>(rj + 3 * L), a3);
    }
    vstore(out + d, a0);
    vstore(out + d + L, a1);
    vstore(out + d + 2 * L, a2);
    vstore(out + d + 3 * L, a3);
  }
  for (; d + L <= hd; d += L) {
    V a0 = {};
    for (int j = 0; j < n; ++j) a0 = madd(vload<V>(w[j] + d), vload<V>(r[j] + d), a0);
    vstore(out + d, a0);
  }
  for (; d < hd; ++d) {
    A s = 0;
    for (int j = 0; j < n; ++j) s += w[j][d] * r[j][d];
    out[d] = s;
  }
}

// acc[:hd] += a[:hd] * b[:hd]
template <typename A>
inline void add_product(int64_t hd, const A* a, const A* b, A* acc) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  int64_t d = 0;
  for (; d + L <= hd; d += L) vstore(acc + d, madd(vload<V>(a + d), vload<V>(b + d), vload<V>(acc + d)));
  for (; d < hd; ++d) acc[d] += a[d] * b[d];
}

// (sum_d a[d], sum_d a[d] * b[d]) in a fixed order (lanes, then the tail); b = nullptr: only the first.
template <typename A>
inline void row_sums(int64_t hd, const A* a, const A* b, A& s1, A& s2) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  V v1 = {}, v2 = {};
  int64_t d = 0;
  for (; d + L <= hd; d += L) {
    const V va = vload<V>(a + d);
    v1 += va;
    if (b != nullptr) v2 = madd(va, vload<V>(b + d), v2);
  }
  s1 = hsum<A>(v1);
  s2 = b != nullptr ? hsum<A>(v2) : A(0);
  for (; d < hd; ++d) {
    s1 += a[d];
    if (b != nullptr) s2 += a[d] * b[d];
  }
}

// mean and 1 / sqrt(var + eps) of z[:hd] (biased variance, two passes, as torch's layer_norm).
template <typename A>
inline void ln_stats(int64_t hd, const A* z, double eps, A& mean, A& rstd) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  A s, unused;
  row_sums<A>(hd, z, nullptr, s, unused);
  mean = s / A(hd);
  V vm = {};
  vm += mean;
  V q = {};
  int64_t d = 0;
  for (; d + L <= hd; d += L) {
    const V e = vload<V>(z + d) - vm;
    q = madd(e, e, q);
  }
  A var = hsum<A>(q);
  for (; d < hd; ++d) var += (z[d] - mean) * (z[d] - mean);
  rstd = A(1) / std::sqrt(var / A(hd) + A(eps));
}

// out = (z - mean) * rstd * nw + nb
template <typename A>
inline void ln_apply(int64_t hd, const A* z, A mean, A rstd, const A* nw, const A* nb, A* out) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  V vm = {}, vr = {};
  vm += mean;
  vr += rstd;
  int64_t d = 0;
  for (; d + L <= hd; d += L)
    vstore(out + d, madd((vload<V>(z + d) - vm) * vr, vload<V>(nw + d), vload<V>(nb + d)));
  for (; d < hd; ++d) out[d] = (z[d] - mean) * rstd * nw[d] + nb[d];
}

// LayerNorm backward of one row: xhat = (z - mean) * rstd, g = dy * nw,
//   dz = rstd * (g - mean(g) - xhat * mean(g * xhat));  dnw += dy * xhat;  dnb += dy.
// gb: scratch of hd.
template <typename A>
inline void ln_backward(int64_t hd, const A* z, const A* dy, const A* nw, A mean, A rstd, A* gb, A* dz, A* dnw,
                        A* dnb) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  V vm = {}, vr = {};
  vm += mean;
  vr += rstd;
  int64_t d = 0;
  for (; d + L <= hd; d += L) {  // gb = xhat first, then g = dy * nw goes to dz
    const V xh = (vload<V>(z + d) - vm) * vr, dyv = vload<V>(dy + d);
    vstore(gb + d, xh);
    vstore(dz + d, dyv * vload<V>(nw + d));
    vstore(dnw + d, madd(dyv, xh, vload<V>(dnw + d)));
    vstore(dnb + d, vload<V>(dnb + d) + dyv);
  }
  for (; d < hd; ++d) {
    const A xh = (z[d] - mean) * rstd;
    gb[d] = xh;
    dz[d] = dy[d] * nw[d];
    dnw[d] += dy[d] * xh;
    dnb[d] += dy[d];
  }
  A sg, sgx;
  row_sums<A>(hd, dz, gb, sg, sgx);
  const A m1 = sg / A(hd), m2 = sgx / A(hd);
  V v1 = {}, v2 = {};
  v1 += m1;
  v2 += m2;
  d = 0;
  for (; d + L <= hd; d += L) vstore(dz + d, vr * (vload<V>(dz + d) - v1 - vload<V>(gb + d) * v2));
  for (; d < hd; ++d) dz[d] = rstd * (dz[d] - m1 - gb[d] * m2);
}

template <typename T, typename A>
inline void load_row(int64_t hd, const T* src, A* dst) {
  if constexpr (std::is_same<T, A>::value) {
    std::memcpy(dst, src, sizeof(A) * hd);
  } else {
    for (int64_t d = 0; d < hd; ++d) dst[d] = to_acc<A>(src[d]);
  }
}

template <typename T, typename A>
inline void store_row(int64_t hd, const A* src, T* dst) {
  if constexpr (std::is_same<T, A>::value) {
    std::memcpy(dst, src, sizeof(A) * hd);
  } else {
    for (int64_t d = 0; d < hd; ++d) dst[d] = from_acc<T>(src[d]);
  }
}

// The taps of grid coordinate (u0, u1, u2) from the three axis tables: weight rows w[j] = wt + tap*hd and source
// rows r[j] = base + (c + (i0*N1 + i1)*N2 + i2) * row_stride, (N1, N2) the source grid's H, W. Returns the count.
template <typename A>
inline int gather_taps(const AxisTaps* ax, int u0, int u1, int u2, int64_t N1, int64_t N2, int k1, int k2,
                       const A* wt, int64_t hd, const A* base, int64_t row_stride, int c, const A** w,
                       const A** r) {
  const AxisTaps &a0 = ax[0], &a1 = ax[1], &a2 = ax[2];
  int n = 0;
  for (int j0 = 0; j0 < a0.cnt[u0]; ++j0) {
    const int d0 = a0.tap[u0 * a0.k + j0], i0 = a0.idx[u0 * a0.k + j0];
    for (int j1 = 0; j1 < a1.cnt[u1]; ++j1) {
      const int d1 = a1.tap[u1 * a1.k + j1], i1 = a1.idx[u1 * a1.k + j1];
      const int64_t row01 = (static_cast<int64_t>(i0) * N1 + i1) * N2;
      const int64_t tap01 = (static_cast<int64_t>(d0) * k1 + d1) * k2;
      for (int j2 = 0; j2 < a2.cnt[u2]; ++j2) {
        const int d2 = a2.tap[u2 * a2.k + j2], i2 = a2.idx[u2 * a2.k + j2];
        w[n] = wt + (tap01 + d2) * hd;
        r[n] = base + (c + row01 + i2) * row_stride;
        ++n;
      }
    }
  }
  return n;
}

// Output row o >= c of a (b, h) plane: its taps into the x rows at xbh.
template <typename A>
inline int taps_of_output(const Problem& pb, int64_t o, const A* wt, const A* xbh, const A** w, const A** r) {
  const int64_t g = o - pb.c, hw = static_cast<int64_t>(pb.Ho) * pb.Wo;
  const int ot = static_cast<int>(g / hw), oh = static_cast<int>((g % hw) / pb.Wo), ow = static_cast<int>(g % pb.Wo);
  return gather_taps<A>(pb.fwd, ot, oh, ow, pb.H, pb.W, pb.kh, pb.kw, wt, pb.hd, xbh, pb.sxl, pb.c, w, r);
}

// Input row n >= c of a (b, h) plane: the taps of the output rows (dz rows at dzbh, contiguous) that read it.
template <typename A>
inline int taps_of_input(const Problem& pb, int64_t n, const A* wt, const A* dzbh, const A** w, const A** r) {
  const int64_t g = n - pb.c, hw = static_cast<int64_t>(pb.H) * pb.W;
  const int it = static_cast<int>(g / hw), ih = static_cast<int>((g % hw) / pb.W), iw = static_cast<int>(g % pb.W);
  return gather_taps<A>(pb.bwd, it, ih, iw, pb.Ho, pb.Wo, pb.kh, pb.kw, wt, pb.hd, dzbh, pb.hd, pb.c, w, r);
}

// Rows per parallel_for chunk: about 64k multiply-adds.
inline int64_t row_grain(const Problem& pb) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, pb.taps() * pb.hd));
}

template <typename T, typename A>
void fwd_typed(const Problem& pb, const at::Tensor& y, const at::Tensor& stats) {
  const int64_t hd = pb.hd, Lo = pb.Lo;
  const A* xa = pb.xa.data_ptr<A>();
  const A* wt = pb.wt.data_ptr<A>();
  const A* nw = pb.norm ? pb.nw.data_ptr<A>() : nullptr;
  const A* nb = pb.norm ? pb.nb.data_ptr<A>() : nullptr;
  T* yp = y.data_ptr<T>();
  A* sp = pb.norm ? stats.data_ptr<A>() : nullptr;
  at::parallel_for(0, pb.rows(), row_grain(pb), [&](int64_t r0, int64_t r1) {
    std::vector<const A*> w(pb.taps()), r(pb.taps());
    std::vector<A> zb(hd), ob(hd);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t bh = row / Lo, o = row - bh * Lo;
      const A* xbh = xa + (bh / pb.nh) * pb.sxb + (bh % pb.nh) * pb.sxh;
      const A* z = zb.data();
      if (o < pb.c) {
        z = xbh + o * pb.sxl;
      } else {
        const int n = taps_of_output<A>(pb, o, wt, xbh, w.data(), r.data());
        tap_sum<A>(hd, n, w.data(), r.data(), zb.data());
      }
      T* yr = yp + row * hd;
      if (!pb.norm) {
        store_row<T, A>(hd, z, yr);
        continue;
      }
      A mean, rstd;
      ln_stats<A>(hd, z, pb.eps, mean, rstd);
      sp[2 * row] = mean;
      sp[2 * row + 1] = rstd;
      if constexpr (std::is_same<T, A>::value) {
        ln_apply<A>(hd, z, mean, rstd, nw, nb, yr);
      } else {
        ln_apply<A>(hd, z, mean, rstd, nw, nb, ob.data());
        store_row<T, A>(hd, ob.data(), yr);
      }
    }
  });
}

// The fixed partition of the backward's reductions: tasks of `rows_per_task` consecutive output rows (flat over
// (b, h, o)), at most 256 tasks; depends on the problem only, so the sums do not change with the thread count.
inline int64_t rows_per_task(int64_t rows) { return std::max<int64_t>(64, (rows + 255) / 256); }

template <typename T, typename A>
void bwd_typed(const Problem& pb, const at::Tensor& dy, const at::Tensor& stats, const Grads& g) {
  const int64_t hd = pb.hd, Lo = pb.Lo, R = pb.rows(), taps = pb.taps();
  const A* xa = pb.xa.data_ptr<A>();
  const A* wt = pb.wt.data_ptr<A>();
  const A* nw = pb.norm ? pb.nw.data_ptr<A>() : nullptr;
  const A* sp = pb.norm ? stats.data_ptr<A>() : nullptr;
  const T* dyp = dy.data_ptr<T>();
  const int64_t sdb = dy.stride(0), sdh = dy.stride(1), sdl = dy.stride(2);
  const auto acc_opts = pb.xa.options().dtype(c10::CppTypeToScalarType<A>::value);

  // phase 1: dz rows (B*nh*Lo, hd) and the per-task partial sums [dw (taps, hd) | dnw (hd) | dnb (hd)]
  at::Tensor dzt = at::empty({R, hd}, acc_opts);
  A* dzp = dzt.data_ptr<A>();
  const int64_t chunk = rows_per_task(R), ntask = (R + chunk - 1) / chunk;
  const int64_t P = taps * hd + (pb.norm ? 2 * hd : 0);
  at::Tensor part = at::empty({ntask, P}, acc_opts);
  A* pp = part.data_ptr<A>();
  at::parallel_for(0, ntask, 1, [&](int64_t t0, int64_t t1) {
    std::vector<const A*> w(taps), r(taps);
    std::vector<A> zb(hd), db(hd), gb(hd);
    for (int64_t task = t0; task < t1; ++task) {
      A* dwp = pp + task * P;
      A* dnwp = dwp + taps * hd;
      A* dnbp = dnwp + hd;
      std::fill(dwp, dwp + P, A(0));
      for (int64_t row = task * chunk; row < std::min(R, (task + 1) * chunk); ++row) {
        const int64_t bh = row / Lo, o = row - bh * Lo, b = bh / pb.nh, h = bh % pb.nh;
        const A* xbh = xa + b * pb.sxb + h * pb.sxh;
        A* dz = dzp + row * hd;
        int n = 0;
        const A* z = zb.data();
        if (o < pb.c) {
          z = xbh + o * pb.sxl;
        } else {
          n = taps_of_output<A>(pb, o, wt, xbh, w.data(), r.data());
        }
        if (pb.norm) {
          load_row<T, A>(hd, dyp + b * sdb + h * sdh + o * sdl, db.data());
          if (o >= pb.c) tap_sum<A>(hd, n, w.data(), r.data(), zb.data());
          ln_backward<A>(hd, z, db.data(), nw, sp[2 * row], sp[2 * row + 1], gb.data(), dz, dnwp, dnbp);
        } else {
          load_row<T, A>(hd, dyp + b * sdb + h * sdh + o * sdl, dz);
        }
        for (int j = 0; j < n; ++j) add_product<A>(hd, dz, r[j], dwp + (w[j] - wt));
      }
    }
  });
  // the task slots added in task order
  A* dwt = g.dwt.data_ptr<A>();
  A* dnw = pb.norm ? g.dnw.data_ptr<A>() : nullptr;
  A* dnb = pb.norm ? g.dnb.data_ptr<A>() : nullptr;
  at::parallel_for(0, P, 1024, [&](int64_t e0, int64_t e1) {
    std::vector<A> s(pp + e0, pp + e1);
    for (int64_t task = 1; task < ntask; ++task) {
      const A* src = pp + task * P;
      for (int64_t e = e0; e < e1; ++e) s[e - e0] += src[e];
    }
    for (int64_t e = e0; e < e1; ++e) {
      if (e < taps * hd) {
        dwt[e] = s[e - e0];
      } else if (e < taps * hd + hd) {
        dnw[e - taps * hd] = s[e - e0];
      } else {
        dnb[e - taps * hd - hd] = s[e - e0];
      }
    }
  });

  // phase 2: dx rows, each from the dz rows whose taps read it
  T* dxp = g.dx.data_ptr<T>();
  const int64_t L = pb.L;
  at::parallel_for(0, pb.B * pb.nh * L, row_grain(pb), [&](int64_t r0, int64_t r1) {
    std::vector<const A*> w(taps), r(taps);
    std::vector<A> ob(hd);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t bh = row / L, n = row - bh * L;
      const A* dzbh = dzp + bh * Lo * hd;
      T* dxr = dxp + row * hd;
      if (n < pb.c) {
        store_row<T, A>(hd, dzbh + n * hd, dxr);
        continue;
      }
      const int nt = taps_of_input<A>(pb, n, wt, dzbh, w.data(), r.data());
      if constexpr (std::is_same<T, A>::value) {
        tap_sum<A>(hd, nt, w.data(), r.data(), dxr);
      } else {
        tap_sum<A>(hd, nt, w.data(), r.data(), ob.data());
        store_row<T, A>(hd, ob.data(), dxr);
      }
    }
  });
}

void cpu_fwd(const Problem& pb, const at::Tensor& y, const at::Tensor& stats) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "attention_pool_fwd_cpu",
                        [&] { fwd_typed<scalar_t, acc_t>(pb, y, stats); });
}

void cpu_bwd(const Problem& pb, const at::Tensor& dy, const at::Tensor& stats, const Grads& g) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "attention_pool_bwd_cpu",
                        [&] { bwd_typed<scalar_t, acc_t>(pb, dy, stats, g); });
}

CpuKernels make_cpu_kernels() { return CpuKernels{&cpu_fwd, &cpu_bwd}; }

}  // namespace
}  // namespace attn_pool
}  // namespace fxk

#pragma GCC diagnostic pop

// Row math of the attention_pool CPU kernels (pool_cpu_kernels.h): a row is one hd vector in the accumulation
// type A, vectorised with the 32-byte vectors of common/cpu_vec.h. Included once per ISA variant with the kernels
// (FXK_APOOL_FMA in the AVX2+FMA build); internal linkage.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/common.h"
#include "common/cpu_vec.h"

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

// out[:hd] = sum_{j < n} w[j][:hd] * (r[j] + off)[:hd] (0 for n = 0), the j-sum in registers, 4 vectors of hd at
// a time.
template <typename A>
inline void tap_sum(int64_t hd, int n, const A* const* w, const A* const* r, int64_t off, A* out) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  int64_t d = 0;
  for (; d + 4 * L <= hd; d += 4 * L) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int j = 0; j < n; ++j) {
      const A* wj = w[j] + d;
      const A* rj = r[j] + off + d;
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
    for (int j = 0; j < n; ++j) a0 = madd(vload<V>(w[j] + d), vload<V>(r[j] + off + d), a0);
    vstore(out + d, a0);
  }
  for (; d < hd; ++d) {
    A s = 0;
    for (int j = 0; j < n; ++j) s += w[j][d] * r[j][off + d];
    out[d] = s;
  }
}

// Two rows with the same weights (neighbours along w with the same taps): out0 = sum_j w[j] * (r[j] + off0),
// out1 = sum_j w[j] * (r[j] + off1); each weight vector is loaded once for both.
template <typename A>
inline void tap_sum2(int64_t hd, int n, const A* const* w, const A* const* r, int64_t off0, int64_t off1, A* out0,
                     A* out1) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  int64_t d = 0;
  for (; d + 4 * L <= hd; d += 4 * L) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
    for (int j = 0; j < n; ++j) {
      const A* wj = w[j] + d;
      const A* x0 = r[j] + off0 + d;
      const A* x1 = r[j] + off1 + d;
      const V w0 = vload<V>(wj), w1 = vload<V>(wj + L), w2 = vload<V>(wj + 2 * L), w3 = vload<V>(wj + 3 * L);
      a0 = madd(w0, vload<V>(x0), a0);
      a1 = madd(w1, vload<V>(x0 + L), a1);
      a2 = madd(w2, vload<V>(x0 + 2 * L), a2);
      a3 = madd(w3, vload<V>(x0 + 3 * L), a3);
      b0 = madd(w0, vload<V>(x1), b0);
      b1 = madd(w1, vload<V>(x1 + L), b1);
      b2 = madd(w2, vload<V>(x1 + 2 * L), b2);
      b3 = madd(w3, vload<V>(x1 + 3 * L), b3);
    }
    vstore(out0 + d, a0);
    vstore(out0 + d + L, a1);
    vstore(out0 + d + 2 * L, a2);
    vstore(out0 + d + 3 * L, a3);
    vstore(out1 + d, b0);
    vstore(out1 + d + L, b1);
    vstore(out1 + d + 2 * L, b2);
    vstore(out1 + d + 3 * L, b3);
  }
  for (; d + L <= hd; d += L) {
    V a0 = {}, b0 = {};
    for (int j = 0; j < n; ++j) {
      const V wv = vload<V>(w[j] + d);
      a0 = madd(wv, vload<V>(r[j] + off0 + d), a0);
      b0 = madd(wv, vload<V>(r[j] + off1 + d), b0);
    }
    vstore(out0 + d, a0);
    vstore(out1 + d, b0);
  }
  for (; d < hd; ++d) {
    A s0 = 0, s1 = 0;
    for (int j = 0; j < n; ++j) {
      s0 += w[j][d] * r[j][off0 + d];
      s1 += w[j][d] * r[j][off1 + d];
    }
    out0[d] = s0;
    out1[d] = s1;
  }
}

// acc[j][:hd] += sum_{k < cnt} (a + k * sa)[:hd] * (r[j] + k * sb)[:hd] for j < n: the k-sum of a run of rows in
// registers, two j at a time sharing the loads of a, so each acc row is loaded and stored once per run.
template <typename A>
inline void add_products_run(int64_t hd, int n, A* const* acc, const A* const* r, int64_t sb, const A* a,
                             int64_t sa, int cnt) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  int j = 0;
  for (; j + 1 < n; j += 2) {
    A* c0 = acc[j];
    A* c1 = acc[j + 1];
    const A* r0 = r[j];
    const A* r1 = r[j + 1];
    int64_t d = 0;
    for (; d + 4 * L <= hd; d += 4 * L) {
      V p0 = vload<V>(c0 + d), p1 = vload<V>(c0 + d + L), p2 = vload<V>(c0 + d + 2 * L);
      V p3 = vload<V>(c0 + d + 3 * L), q0 = vload<V>(c1 + d), q1 = vload<V>(c1 + d + L);
      V q2 = vload<V>(c1 + d + 2 * L), q3 = vload<V>(c1 + d + 3 * L);
      for (int k = 0; k < cnt; ++k) {
        const A* ak = a + k * sa + d;
        const A* x0 = r0 + k * sb + d;
        const A* x1 = r1 + k * sb + d;
        const V a0 = vload<V>(ak), a1 = vload<V>(ak + L), a2 = vload<V>(ak + 2 * L), a3 = vload<V>(ak + 3 * L);
        p0 = madd(a0, vload<V>(x0), p0);
        p1 = madd(a1, vload<V>(x0 + L), p1);
        p2 = madd(a2, vload<V>(x0 + 2 * L), p2);
        p3 = madd(a3, vload<V>(x0 + 3 * L), p3);
        q0 = madd(a0, vload<V>(x1), q0);
        q1 = madd(a1, vload<V>(x1 + L), q1);
        q2 = madd(a2, vload<V>(x1 + 2 * L), q2);
        q3 = madd(a3, vload<V>(x1 + 3 * L), q3);
      }
      vstore(c0 + d, p0);
      vstore(c0 + d + L, p1);
      vstore(c0 + d + 2 * L, p2);
      vstore(c0 + d + 3 * L, p3);
      vstore(c1 + d, q0);
      vstore(c1 + d + L, q1);
      vstore(c1 + d + 2 * L, q2);
      vstore(c1 + d + 3 * L, q3);
    }
    for (; d + L <= hd; d += L) {
      V p0 = vload<V>(c0 + d), q0 = vload<V>(c1 + d);
      for (int k = 0; k < cnt; ++k) {
        const V a0 = vload<V>(a + k * sa + d);
        p0 = madd(a0, vload<V>(r0 + k * sb + d), p0);
        q0 = madd(a0, vload<V>(r1 + k * sb + d), q0);
      }
      vstore(c0 + d, p0);
      vstore(c1 + d, q0);
    }
    for (; d < hd; ++d)
      for (int k = 0; k < cnt; ++k) {
        c0[d] += a[k * sa + d] * r0[k * sb + d];
        c1[d] += a[k * sa + d] * r1[k * sb + d];
      }
  }
  if (j < n) {
    A* c0 = acc[j];
    const A* r0 = r[j];
    int64_t d = 0;
    for (; d + 4 * L <= hd; d += 4 * L) {
      V p0 = vload<V>(c0 + d), p1 = vload<V>(c0 + d + L), p2 = vload<V>(c0 + d + 2 * L);
      V p3 = vload<V>(c0 + d + 3 * L);
      for (int k = 0; k < cnt; ++k) {
        const A* ak = a + k * sa + d;
        const A* x0 = r0 + k * sb + d;
        p0 = madd(vload<V>(ak), vload<V>(x0), p0);
        p1 = madd(vload<V>(ak + L), vload<V>(x0 + L), p1);
        p2 = madd(vload<V>(ak + 2 * L), vload<V>(x0 + 2 * L), p2);
        p3 = madd(vload<V>(ak + 3 * L), vload<V>(x0 + 3 * L), p3);
      }
      vstore(c0 + d, p0);
      vstore(c0 + d + L, p1);
      vstore(c0 + d + 2 * L, p2);
      vstore(c0 + d + 3 * L, p3);
    }
    for (; d + L <= hd; d += L) {
      V p0 = vload<V>(c0 + d);
      for (int k = 0; k < cnt; ++k) p0 = madd(vload<V>(a + k * sa + d), vload<V>(r0 + k * sb + d), p0);
      vstore(c0 + d, p0);
    }
    for (; d < hd; ++d)
      for (int k = 0; k < cnt; ++k) c0[d] += a[k * sa + d] * r0[k * sb + d];
  }
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

// dst[:hd] = src[d * step] (a row of x, whose hd axis may be strided)
template <typename T, typename A>
inline void load_strided_row(int64_t hd, const T* src, int64_t step, A* dst) {
  if (step == 1) {
    load_row<T, A>(hd, src, dst);
  } else {
    for (int64_t d = 0; d < hd; ++d) dst[d] = to_acc<A>(src[d * step]);
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

}  // namespace
}  // namespace attn_pool
}  // namespace fxk

#pragma GCC diagnostic pop

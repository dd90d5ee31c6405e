// Compact softmax cross-entropy CPU kernels (fxkernels/ops/compact_softmax_ce/README.md, "Math", "Backend
// contract"). Included once per ISA variant (compact_softmax_ce_cpu.cpp: baseline, 16-byte SSE2 vectors;
// compact_softmax_ce_cpu_avx2.cpp: AVX2+FMA, FXK_CPU_VEC_BYTES = 32); everything here has internal linkage, so
// the variants never mix. The inputs were validated by the host code (compact_softmax_ce_cpu.cpp) before.
//
// One row per work item (at::parallel_for over rows). A row is read in place when it is contiguous in the
// accumulation type A (fp32 logits, fp64 logits), else (strided logits, fp16 / bf16) first converted into a
// contiguous A buffer of the work item. The sweeps run over it in GCC vectors of L = FXK_CPU_VEC_BYTES / sizeof(A)
// lanes: lane l of the chunk at column c holds column c + l; the chunk holding the target and the last, partial
// chunk (copied into a padded vector) are masked to the real non-target columns. Sweep 1: the non-target
// maximum m' (exact whatever the order; NaNs are skipped there and reach the sums). Sweep 2: s', t', a' with
// the vector exp (common/cpu_vexp.h, one per element), one vector accumulator each, then the lanes added in lane
// order; so every sum's order depends only on C (and the ISA variant), never on the thread count. Backward,
// sweep 3: the gradient of every column with one vector exp per element, the target column written afterwards.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "common/common.h"
#include "common/cpu_vexp.h"
#include "compact_softmax_ce/compact_softmax_ce.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace compact_softmax_ce {
namespace {

constexpr int kVB = FXK_CPU_VEC_BYTES;

// The vector of accumulation type A, its lane count, and the integer vector of the same lane width (masks).
template <typename A>
struct CeVec {
  using IE = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;
  typedef A V __attribute__((vector_size(kVB)));
  typedef IE I __attribute__((vector_size(kVB)));
  typedef A U __attribute__((vector_size(kVB), aligned(sizeof(A)), __may_alias__));  // unaligned access
  static constexpr int L = kVB / static_cast<int>(sizeof(A));
};

template <typename A>
FXK_HD_INLINE typename CeVec<A>::V vld(const A* p) {
  return *reinterpret_cast<const typename CeVec<A>::U*>(p);
}
template <typename A>
FXK_HD_INLINE void vst(A* p, const typename CeVec<A>::V& v) {
  *reinterpret_cast<typename CeVec<A>::U*>(p) = v;
}
template <typename A>
FXK_HD_INLINE typename CeVec<A>::V vsplat(A x) {
  return typename CeVec<A>::V{} + x;
}
// The n < L columns at p in a vector, the other lanes set to fill.
template <typename A>
FXK_HD_INLINE typename CeVec<A>::V vld_part(const A* p, int64_t n, A fill) {
  A t[CeVec<A>::L];
  for (int l = 0; l < CeVec<A>::L; ++l) t[l] = fill;
  std::memcpy(t, p, static_cast<size_t>(n) * sizeof(A));
  return vld(t);
}
// The lanes of the chunk at column c that are real non-target columns: c + l < C and c + l != y.
template <typename A>
FXK_HD_INLINE typename CeVec<A>::I keep_lanes(int64_t c, int64_t C, int64_t y) {
  using I = typename CeVec<A>::I;
  using IE = typename CeVec<A>::IE;
  constexpr int L = CeVec<A>::L;
  I lane;
  for (int l = 0; l < L; ++l) lane[l] = l;
  const IE n = static_cast<IE>(std::min<int64_t>(C - c, L));
  const IE ry = (y >= c && y < c + L) ? static_cast<IE>(y - c) : IE(-1);
  return (lane < (I{} + n)) & (lane != (I{} + ry));
}
// Sum of the lanes in lane order; maximum of the lanes (NaN lanes skipped).
template <typename A>
FXK_HD_INLINE A hsum(const typename CeVec<A>::V& v) {
  A s = v[0];
  for (int l = 1; l < CeVec<A>::L; ++l) s += v[l];
  return s;
}
template <typename A>
FXK_HD_INLINE A hmax(const typename CeVec<A>::V& v) {
  A m = v[0];
  for (int l = 1; l < CeVec<A>::L; ++l) m = v[l] > m ? v[l] : m;
  return m;
}

// One exponential per element: every non-target term is exp(z_c - m2) with m2 the non-target maximum (so p' keeps
// full precision however far the target logit is above the others), and the all-class sum is rebuilt from it:
// s = s2 exp(m2 - m) + exp(z_y - m) with m = max(m2, z_y) (exp(m2 - m) <= 1: nothing overflows).
template <typename A>
struct RowStats {
  A m, ls;    // max_c z_c, log sum_c exp(z_c - m)
  A m2, ls2;  // max_{c != y} z_c, log sum_{c != y} exp(z_c - m2)
  A S;        // sum_{c != y} p'_c log p'_c
  A kl;       // KL(u'||p') + KL(p'||u') = E_{p'}[z] - mean_{c != y} z
  A rp;       // sum_{c != y} p_c, so p_c = rp p'_c for c != y
  A py;       // p_y
};

// The statistics of the contiguous row z[0 .. C) in A with target y.
template <typename A>
inline RowStats<A> row_stats(const A* FXK_RESTRICT z, int64_t C, int64_t y) {
  using V = typename CeVec<A>::V;
  constexpr int L = CeVec<A>::L;
  const int64_t Cf = C / L * L, cy = y / L * L;  // the full chunks; the chunk holding y
  const A ninf = -std::numeric_limits<A>::infinity();
  const V vninf = vsplat<A>(ninf);
  // sweep 1: m2 = max_{c != y} z_c, four accumulators (a maximum is exact: the order does not matter)
  V mx[4] = {vninf, vninf, vninf, vninf};
  int64_t c = 0;
  for (; c + 4 * L <= Cf; c += 4 * L) {
    V v[4];
    for (int k = 0; k < 4; ++k) v[k] = vld(z + c + k * L);
    if (cy >= c && cy < c + 4 * L) {
      const int k = static_cast<int>((cy - c) / L);
      v[k] = keep_lanes<A>(cy, C, y) ? v[k] : vninf;
    }
    for (int k = 0; k < 4; ++k) mx[k] = v[k] > mx[k] ? v[k] : mx[k];
  }
  for (; c < Cf; c += L) {
    V v = vld(z + c);
    if (c == cy) v = keep_lanes<A>(c, C, y) ? v : vninf;
    mx[0] = v > mx[0] ? v : mx[0];
  }
  if (Cf < C) {
    const V v = keep_lanes<A>(Cf, C, y) ? vld_part(z + Cf, C - Cf, ninf) : vninf;
    mx[0] = v > mx[0] ? v : mx[0];
  }
  for (int k = 1; k < 4; ++k) mx[0] = mx[k] > mx[0] ? mx[k] : mx[0];
  const A m2 = hmax<A>(mx[0]);
  // sweep 2: s2 = sum_{c != y} e_c, t2 = sum e_c d_c, a2 = sum d_c with d_c = z_c - m2, e_c = exp(d_c)
  V s2v = V{}, t2v = V{}, a2v = V{};
  for (c = 0; c < Cf; c += L) {
    V d = vld(z + c) - m2, e = VExpT<A, kVB>::exp(d);
    if (c == cy) {
      const auto keep = keep_lanes<A>(c, C, y);
      d = keep ? d : V{};
      e = keep ? e : V{};
    }
    s2v += e;
    t2v += e * d;
    a2v += d;
  }
  if (Cf < C) {
    const auto keep = keep_lanes<A>(Cf, C, y);
    V d = vld_part(z + Cf, C - Cf, A(0)) - m2, e = VExpT<A, kVB>::exp(d);
    d = keep ? d : V{};
    e = keep ? e : V{};
    s2v += e;
    t2v += e * d;
    a2v += d;
  }
  const A s2 = hsum<A>(s2v), t2 = hsum<A>(t2v), a2 = hsum<A>(a2v);
  const A zy = z[y];
  const A m = (zy > m2 || zy != zy) ? zy : m2;
  const A f = s2 * std::exp(m2 - m), ey = std::exp(zy - m), s = f + ey;
  const A K = static_cast<A>(C - 1);
  const A ls2 = std::log(s2), mean_p = t2 / s2;
  return {m, std::log(s), m2, ls2, mean_p - ls2, mean_p - a2 / K, f / s, ey / s};
}

// The gradient row dr[0 .. C) = g dl/dz of the contiguous row z with target y (sweep 3).
template <typename T, typename A>
inline void grad_row(const A* FXK_RESTRICT z, int64_t C, int64_t y, const RowStats<A>& st, A g, A hb, A invK,
                     T* FXK_RESTRICT dr) {
  using V = typename CeVec<A>::V;
  constexpr int L = CeVec<A>::L;
  const auto col = [&](V zv) {
    const V lq = (zv - st.m2) - st.ls2, q = VExpT<A, kVB>::exp(lq);
    const V r = st.rp * q + hb * (q - invK + q * (lq - st.S));
    return g * r;
  };
  const int64_t Cf = C / L * L;
  for (int64_t c = 0; c < Cf; c += L) {
    const V o = col(vld(z + c));
    if constexpr (std::is_same_v<T, A>) {
      vst(dr + c, o);
    } else {
      for (int l = 0; l < L; ++l) dr[c + l] = from_acc<T, A>(o[l]);
    }
  }
  if (Cf < C) {
    A t[L];
    vst(t, col(vld_part(z + Cf, C - Cf, A(0))));
    for (int64_t c = Cf; c < C; ++c) dr[c] = from_acc<T, A>(t[c - Cf]);
  }
  dr[y] = from_acc<T, A>(g * (st.py - A(1)));
}

// The row n of logits as a contiguous A row: in place, or converted into buf.
template <typename T, typename A>
FXK_HD_INLINE const A* row_ptr(const T* z, int64_t n, int64_t sn, int64_t sc, int64_t C, A* buf) {
  const T* zr = z + n * sn;
  if constexpr (std::is_same_v<T, A>) {
    if (sc == 1) return zr;
  }
  for (int64_t c = 0; c < C; ++c) buf[c] = to_acc<A>(zr[c * sc]);
  return buf;
}

template <typename T>
constexpr bool kInPlace = std::is_same_v<T, acc_type<T>>;

void fwd_kernel(const at::Tensor& logits, const at::Tensor& target, double beta, const at::Tensor& rows) {
  const int64_t N = logits.size(0), C = logits.size(1), sn = logits.stride(0), sc = logits.stride(1);
  FXK_DISPATCH_FLOATING(logits.scalar_type(), "compact_softmax_ce_fwd", [&] {
    const scalar_t* z = logits.const_data_ptr<scalar_t>();
    const int64_t* yp = target.const_data_ptr<int64_t>();
    acc_t* o = rows.mutable_data_ptr<acc_t>();
    const acc_t hb = static_cast<acc_t>(beta) / 2;
    const bool copy = !(kInPlace<scalar_t> && sc == 1);
    at::parallel_for(0, N, std::max<int64_t>(1, 32768 / C), [&](int64_t b, int64_t e) {
      std::vector<acc_t> buf(copy ? C : 0);
      for (int64_t n = b; n < e; ++n) {
        const acc_t* zr = row_ptr<scalar_t, acc_t>(z, n, sn, sc, C, buf.data());
        const int64_t t = yp[n];
        const RowStats<acc_t> st = row_stats<acc_t>(zr, C, t);
        o[n] = (st.m - zr[t]) + st.ls + hb * st.kl;
      }
    });
  });
}

void bwd_kernel(const at::Tensor& g, const at::Tensor& logits, const at::Tensor& target, double beta,
                const at::Tensor& dz) {
  const int64_t N = logits.size(0), C = logits.size(1), sn = logits.stride(0), sc = logits.stride(1);
  FXK_DISPATCH_FLOATING(logits.scalar_type(), "compact_softmax_ce_bwd", [&] {
    const scalar_t* z = logits.const_data_ptr<scalar_t>();
    const int64_t* yp = target.const_data_ptr<int64_t>();
    const acc_t* gp = g.const_data_ptr<acc_t>();
    scalar_t* d = dz.mutable_data_ptr<scalar_t>();
    const acc_t hb = static_cast<acc_t>(beta) / 2, invK = acc_t(1) / static_cast<acc_t>(C - 1);
    const bool copy = !(kInPlace<scalar_t> && sc == 1);
    at::parallel_for(0, N, std::max<int64_t>(1, 16384 / C), [&](int64_t b, int64_t e) {
      std::vector<acc_t> buf(copy ? C : 0);
      for (int64_t n = b; n < e; ++n) {
        const acc_t* zr = row_ptr<scalar_t, acc_t>(z, n, sn, sc, C, buf.data());
        const int64_t t = yp[n];
        const RowStats<acc_t> st = row_stats<acc_t>(zr, C, t);
        grad_row<scalar_t, acc_t>(zr, C, t, st, gp[n], hb, invK, d + n * C);
      }
    });
  });
}

inline CpuKernels make_cpu_kernels() { return CpuKernels{&fwd_kernel, &bwd_kernel}; }

}  // namespace
}  // namespace compact_softmax_ce
}  // namespace fxk

#pragma GCC diagnostic pop

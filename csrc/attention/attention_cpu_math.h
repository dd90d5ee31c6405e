// Register-tiled GEMM micro-kernels, a vector exp and the per-row softmax / bias helpers of the attention CPU
// kernels. GCC vector extensions of FXK_CPU_VEC_BYTES bytes (16 = SSE2 in the baseline build, 32 = AVX2+FMA,
// 64 = AVX-512 or its emulation on AVX2): the same source for every ISA variant. Internal linkage only (see
// attention_cpu_kernels.h).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/common.h"
#include "common/cpu_vexp.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace attn {
namespace {

constexpr int kVB = FXK_CPU_VEC_BYTES;
// Keys per tile of both passes: a multiple of every NR (8 .. 32).
constexpr int kBN = 64;

template <typename E, int VB>
struct VecT {
  typedef E type __attribute__((vector_size(VB)));
};

// Tile geometry for accumulation type A: VL lanes per vector, micro-tiles of MR rows x NR = 2 vectors (12
// accumulators of the 16 registers of SSE2 / AVX2, 16 of the 32 of AVX-512).
template <typename A>
struct Geo {
  using V = typename VecT<A, kVB>::type;
  static constexpr int VL = kVB / static_cast<int>(sizeof(A));
  static constexpr int NR = 2 * VL;
  static constexpr int MR = kVB >= 64 ? 8 : 6;
};

// Unaligned vector access: a copy of the vector type with the element's alignment, allowed to alias it (plain
// vmovups in and out of registers; a memcpy through a local made GCC bounce the GEMM accumulators via the stack).
template <typename V, typename E>
struct Unaligned {
  typedef E type __attribute__((vector_size(sizeof(V)), aligned(sizeof(E)), __may_alias__));
};
template <typename V, typename E>
FXK_HD_INLINE V vload(const E* p) {
  return *reinterpret_cast<const typename Unaligned<V, E>::type*>(p);
}
template <typename V, typename E>
FXK_HD_INLINE void vstore(E* p, const V& v) {
  *reinterpret_cast<typename Unaligned<V, E>::type*>(p) = v;
}
template <typename V, typename E>
FXK_HD_INLINE V vsplat(E x) {
  return V{} + x;
}
template <typename A, typename V>
FXK_HD_INLINE A hsum(const V& v) {
  A s = A(0);
  for (int l = 0; l < int(sizeof(V) / sizeof(A)); ++l) s += v[l];
  return s;
}
template <typename A, typename V>
FXK_HD_INLINE A hmax(const V& v) {
  A m = v[0];
  for (int l = 1; l < int(sizeof(V) / sizeof(A)); ++l) m = v[l] > m ? v[l] : m;
  return m;
}

// exp of every lane (common/cpu_vexp.h: the extension-wide vector exp, at this build's vector width).
template <typename A>
using VExp = VExpT<A, kVB>;

// ------------------------------------------------------------------------------------------------- GEMM
// C[M, NR] (+)= sum_k a[r * sam + k * sak] * b[k * ldb + 0 .. NR), M <= MR rows in registers.
template <typename A, int M, bool kAcc>
FXK_HD_INLINE void micro(int K, const A* FXK_RESTRICT a, int64_t sam, int64_t sak, const A* FXK_RESTRICT b,
                         int64_t ldb, A* FXK_RESTRICT c, int64_t ldc) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  V acc0[M], acc1[M];
  for (int r = 0; r < M; ++r) {
    acc0[r] = kAcc ? vload<V>(c + r * ldc) : V{};
    acc1[r] = kAcc ? vload<V>(c + r * ldc + VL) : V{};
  }
  for (int k = 0; k < K; ++k) {
    const V b0 = vload<V>(b + k * ldb), b1 = vload<V>(b + k * ldb + VL);
    const A* ak = a + k * sak;
    for (int r = 0; r < M; ++r) {
      const A av = ak[r * sam];
      acc0[r] += av * b0;
      acc1[r] += av * b1;
    }
  }
  for (int r = 0; r < M; ++r) {
    vstore(c + r * ldc, acc0[r]);
    vstore(c + r * ldc + VL, acc1[r]);
  }
}

template <typename A, bool kAcc, int R>
FXK_HD_INLINE void micro_tail(int rows, int K, const A* a, int64_t sam, int64_t sak, const A* b, int64_t ldb, A* c,
                              int64_t ldc) {
  if (rows == R) {
    micro<A, R, kAcc>(K, a, sam, sak, b, ldb, c, ldc);
  } else if constexpr (R > 1) {
    micro_tail<A, kAcc, R - 1>(rows, K, a, sam, sak, b, ldb, c, ldc);
  }
}

// C[M, npan * NR] (+)= A[M, K] B[K, npan * NR]: A element (r, k) at a[r * sam + k * sak]; B in panels of NR
// columns, panel p at b + p * pstride with rows ldb apart; C rows ldc apart. Panel-major order: one B panel
// stays in L1 while the row blocks of A stream past it.
template <typename A, bool kAcc>
inline void gemm(int M, int npan, int K, const A* a, int64_t sam, int64_t sak, const A* b, int64_t ldb,
                 int64_t pstride, A* c, int64_t ldc) {
  constexpr int MR = Geo<A>::MR, NR = Geo<A>::NR;
  for (int p = 0; p < npan; ++p) {
    const A* bp = b + p * pstride;
    A* cp = c + p * NR;
    int i = 0;
    for (; i + MR <= M; i += MR) micro<A, MR, kAcc>(K, a + i * sam, sam, sak, bp, ldb, cp + i * ldc, ldc);
    if (i < M) micro_tail<A, kAcc, MR - 1>(M - i, K, a + i * sam, sam, sak, bp, ldb, cp + i * ldc, ldc);
  }
}

// ----------------------------------------------------------------------------------------------- rows
// The grid keys of a tile in runs of constant t: keys x .. x + len of the tile are grid tokens g = j0 + x - c with
// t = jt and (h, w) positions off .. off + len of the HW plane. The same for every row of a block.
struct Run {
  int x, len, jt, off;
};
struct TileRuns {
  int n = 0;
  bool cls = false;   // key 0 of the tile is the cls column (no bias)
  Run run[kBN + 1];  // at most one run per key
  TileRuns(bool bias, int64_t j0, int nv, int c, int64_t HW) {
    if (!bias) return;
    int x = 0;
    if (j0 < c) {
      cls = true;
      x = 1;
    }
    while (x < nv) {
      const int64_t g = j0 + x - c, jt = g / HW, off = g - jt * HW;
      const int len = static_cast<int>(std::min<int64_t>(HW - off, nv - x));
      run[n++] = Run{x, len, static_cast<int>(jt), static_cast<int>(off)};
      x += len;
    }
  }
};

// s[x] = s[x] * scale + bias(x) over the tile's keys: bt[jt] + bhw[h * Wk + w] on grid keys, none on the cls key.
template <typename A>
FXK_HD_INLINE void scale_bias_row(A* FXK_RESTRICT s, const TileRuns& tr, A scale, const A* FXK_RESTRICT bt,
                                  const A* FXK_RESTRICT bhw) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  if (tr.cls) s[0] *= scale;
  for (int k = 0; k < tr.n; ++k) {
    const Run& ru = tr.run[k];
    const A base = bt[ru.jt];
    const A* FXK_RESTRICT bw = bhw + ru.off;
    A* FXK_RESTRICT sx = s + ru.x;
    int y = 0;
    for (; y + VL <= ru.len; y += VL) vstore(sx + y, vload<V>(sx + y) * scale + (vload<V>(bw + y) + base));
    for (; y < ru.len; ++y) sx[y] = sx[y] * scale + (bw[y] + base);
  }
}

// The bias gradient of one grid row from its dS over the tile's keys: dt[t] += sum over the t-run,
// dhw[h * Wk + w] += dS (the h and w parts are summed out of dhw once per row).
template <typename A>
FXK_HD_INLINE void bias_grad_row(const A* FXK_RESTRICT ds, const TileRuns& tr, A* FXK_RESTRICT dt,
                                 A* FXK_RESTRICT dhw) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  for (int k = 0; k < tr.n; ++k) {
    const Run& ru = tr.run[k];
    const A* FXK_RESTRICT dx = ds + ru.x;
    A* FXK_RESTRICT dw = dhw + ru.off;
    V acc = V{};
    int y = 0;
    for (; y + VL <= ru.len; y += VL) {
      const V d = vload<V>(dx + y);
      vstore(dw + y, vload<V>(dw + y) + d);
      acc += d;
    }
    A sum = hsum<A>(acc);
    for (; y < ru.len; ++y) {
      dw[y] += dx[y];
      sum += dx[y];
    }
    dt[ru.jt] += sum;
  }
}

// max over s[0 .. n), n a multiple of VL.
template <typename A>
FXK_HD_INLINE A row_max(const A* s, int n) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  V m = vsplat<V>(-std::numeric_limits<A>::infinity());
  for (int x = 0; x < n; x += VL) {
    const V v = vload<V>(s + x);
    m = v > m ? v : m;
  }
  return hmax<A>(m);
}

// s[x] = exp(s[x] - shift) for x < n (a multiple of VL); returns the sum.
template <typename A>
FXK_HD_INLINE A exp_row(A* s, int n, A shift) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  V acc = V{};
  for (int x = 0; x < n; x += VL) {
    const V e = VExp<A>::exp(vload<V>(s + x) - shift);
    vstore(s + x, e);
    acc += e;
  }
  return hsum<A>(acc);
}

// ds[x] = p[x] * (ds[x] - delta) for x < n (a multiple of VL); ds holds dP on entry.
template <typename A>
FXK_HD_INLINE void softmax_grad_row(const A* FXK_RESTRICT p, A* FXK_RESTRICT ds, int n, A delta) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  for (int x = 0; x < n; x += VL) vstore(ds + x, vload<V>(p + x) * (vload<V>(ds + x) - delta));
}

}  // namespace
}  // namespace attn
}  // namespace fxk

#pragma GCC diagnostic pop

// The short-sequence ("packed") path of the attention CPU kernels, for Lq <= kShortL and Lk <= kShortL (STT's
// divided attention: (B*F, 8, 49, 49, 64) per frame, (B*N, 8, 17, 17, 64) per patch). Same math as
// attention_cpu_fwd.h / attention_cpu_bwd.h (fxkernels/ops/attention/README.md), but one task owns a whole head:
// its K / V copies are made in the task's scratch (no per-call pack buffer over every head), all its query rows
// meet its one key tile at once (no online softmax), and the backward writes dq, dk, dv and drel of the head
// directly (no partial dk, dv buffers and no second summing phase). Results depend on the shape only.
// Internal linkage only (see attention_cpu_kernels.h).
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention/attention_cpu_common.h"

namespace fxk {
namespace attn {
namespace {

constexpr int64_t kShortL = kBN;  // one key tile
inline bool packed_fits(const Problem& pb) { return pb.Lq <= kShortL && pb.Lk <= kShortL; }

// One head's operands in A where they are copied (fp16 / bf16 inputs, or hd not a multiple of NR: padded to Dp
// columns), K / V as transposed panels (the S and dP GEMMs), score tiles of (Lq, kBN), the output rows, and the
// bias tables and their gradients per query row.
template <typename A>
struct PackedScratch {
  std::vector<A> qb, dob, kt, vt, kr, vr, s, ds, o, o2, bt, bhw, dt, dhw;
  PackedScratch(const Problem& pb, int64_t Dp, bool bwd) {
    constexpr int NR = Geo<A>::NR;
    const int64_t L = kShortL, panels = ceil_div64(pb.Lk, NR) * Dp * NR, HW = int64_t(pb.Hk) * pb.Wk;
    qb.resize(L * Dp);
    kt.resize(panels);
    s.resize(L * kBN);
    o.resize(L * Dp);
    if (bwd) {
      dob.resize(L * Dp);
      vt.resize(panels);
      kr.resize(L * Dp);
      ds.resize(L * kBN);
      o2.resize(L * Dp);
    } else {
      vr.resize(L * Dp);
    }
    if (pb.rel.defined()) {
      bt.resize(L * pb.Tk);
      bhw.resize(L * HW);
    }
    if (bwd && pb.need_rel) {
      dt.resize(L * pb.Tk);
      dhw.resize(L * HW);
    }
  }
};

// Rows of an operand: row r at p + r * ld.
template <typename A>
struct Rows {
  const A* p;
  int64_t ld;
};

// The n rows of src (rows sl apart) as GEMM operands: src itself when `direct` (T is A and hd is a multiple of
// NR, so whole panels of columns lie inside each row), else a copy in A padded to Dp columns.
template <typename T, typename A>
inline Rows<A> rows_of(const T* src, int64_t sl, int n, int64_t hd, int64_t Dp, bool direct, A* copy) {
  if constexpr (std::is_same<T, A>::value) {
    if (direct) return {src, sl};
  }
  load_rows(src, sl, 0, n, hd, Dp, copy);
  return {copy, Dp};
}

// C[M, VL] = A[M, K] B[K, VL]: one vector of columns (the half-empty last key panel), 2 * MR rows in registers.
template <typename A, int M>
FXK_HD_INLINE void micro_half(int K, const A* FXK_RESTRICT a, int64_t sam, int64_t sak, const A* FXK_RESTRICT b,
                              int64_t ldb, A* FXK_RESTRICT c, int64_t ldc) {
  using V = typename Geo<A>::V;
  V acc[M];
  for (int r = 0; r < M; ++r) acc[r] = V{};
  for (int k = 0; k < K; ++k) {
    const V b0 = vload<V>(b + k * ldb);
    const A* ak = a + k * sak;
    for (int r = 0; r < M; ++r) acc[r] += ak[r * sam] * b0;
  }
  for (int r = 0; r < M; ++r) vstore(c + r * ldc, acc[r]);
}

template <typename A, int R>
FXK_HD_INLINE void micro_half_tail(int rows, int K, const A* a, int64_t sam, int64_t sak, const A* b, int64_t ldb,
                                   A* c, int64_t ldc) {
  if (rows == R) {
    micro_half<A, R>(K, a, sam, sak, b, ldb, c, ldc);
  } else if constexpr (R > 1) {
    micro_half_tail<A, R - 1>(rows, K, a, sam, sak, b, ldb, c, ldc);
  }
}

// Score tiles over the nv keys of one head: S[n, w] = A[n, K] Kt[K, w] with the key panels of NR columns; a last
// panel holding at most VL keys is computed one vector wide (STT's 17 keys: 24 columns instead of 32, 49 keys: 56
// instead of 64). Returns w, the computed width (a multiple of VL; the caller masks keys nv .. w).
template <typename A>
inline int gemm_keys(int n, int nv, int K, const A* a, int64_t sam, const A* kt, int64_t Dp, A* s) {
  constexpr int NR = Geo<A>::NR, VL = Geo<A>::VL, MH = 2 * Geo<A>::MR;
  const int full = nv / NR, rem = nv - full * NR;
  const bool half = rem > 0 && rem <= VL;
  gemm<A, false>(n, full + (rem > 0 && !half), K, a, sam, 1, kt, NR, Dp * NR, s, kBN);
  if (!half) return (full + (rem > 0)) * NR;
  const A* bp = kt + full * Dp * NR;
  A* cp = s + full * NR;
  int i = 0;
  for (; i + MH <= n; i += MH) micro_half<A, MH>(K, a + i * sam, sam, 1, bp, NR, cp + i * kBN, kBN);
  if (i < n) micro_half_tail<A, MH - 1>(n - i, K, a + i * sam, sam, 1, bp, NR, cp + i * kBN, kBN);
  return full * NR + VL;
}

// K (and V) of a head as transposed panels of NR keys (panel p at dst + p * Dp * NR, element (d, l) at d * NR + l):
// only the Lk x hd real entries are written, row by row of the source (one sequential read stream). The padding (keys
// Lk .. and columns hd .. Dp) stays the zeros the scratch was made with: Lk and hd are the same for every head
// of a call, so nothing else is ever written there.
template <typename T, typename A>
inline void pack_head_panels(const T* src, int64_t sl, int64_t Lk, int64_t hd, int64_t Dp, A* dst) {
  constexpr int NR = Geo<A>::NR;
  for (int64_t j0 = 0; j0 < Lk; j0 += NR) {
    const int n = static_cast<int>(std::min<int64_t>(NR, Lk - j0));
    const T* s0 = src + j0 * sl;
    A* p = dst + (j0 / NR) * Dp * NR;
    for (int l = 0; l < n; ++l) {
      const T* row = s0 + l * sl;
      for (int64_t d = 0; d < hd; ++d) p[d * NR + l] = to_acc<A>(row[d]);
    }
  }
}

// sum_d x[d] * (y[d] - z[d]) over d < n (z may be null: y alone), in vectors of VL then the tail.
template <typename A>
FXK_HD_INLINE A dot_diff(const A* FXK_RESTRICT x, const A* FXK_RESTRICT y, const A* FXK_RESTRICT z, int64_t n) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  V acc = V{};
  int64_t d = 0;
  if (z) {
    for (; d + VL <= n; d += VL) acc += vload<V>(x + d) * (vload<V>(y + d) - vload<V>(z + d));
  } else {
    for (; d + VL <= n; d += VL) acc += vload<V>(x + d) * vload<V>(y + d);
  }
  A r = hsum<A>(acc);
  for (; d < n; ++d) r += x[d] * (y[d] - (z ? z[d] : A(0)));
  return r;
}

// x[0 .. n) *= f, n a multiple of VL.
template <typename A>
FXK_HD_INLINE void scale_row(A* x, int n, A f) {
  using V = typename Geo<A>::V;
  constexpr int VL = Geo<A>::VL;
  for (int y = 0; y < n; y += VL) vstore(x + y, vload<V>(x + y) * f);
}

// s row r = scale q_r.k + bias over the nv keys, -inf on the padding up to w.
template <typename A>
inline void scores_row(const Problem& pb, const TileRuns& tr, bool bias, int r, int nv, int w, A scale,
                       PackedScratch<A>& ws, A* sr) {
  const int64_t HW = int64_t(pb.Hk) * pb.Wk;
  if (bias && r >= pb.c) {
    scale_bias_row(sr, tr, scale, ws.bt.data() + r * pb.Tk, ws.bhw.data() + r * HW);
  } else {
    scale_row(sr, w, scale);
  }
  for (int x = nv; x < w; ++x) sr[x] = -std::numeric_limits<A>::infinity();
}

// dst rows (hd apart, type T) = src rows (ld apart) * f + [residual rows] res.
template <typename T, typename A>
inline void store_rows(const Problem& pb, int n, int64_t hd, const A* src, int64_t ld, A f, const Rows<A>& res,
                       bool residual, T* dst) {
  for (int r = 0; r < n; ++r) {
    const A* sr = src + r * ld;
    const A* rr = res.p + r * res.ld;
    T* d = dst + r * hd;
    if (residual && pb.residual(r)) {
      for (int64_t x = 0; x < hd; ++x) d[x] = from_acc<T>(sr[x] * f + rr[x]);
    } else {
      for (int64_t x = 0; x < hd; ++x) d[x] = from_acc<T>(sr[x] * f);
    }
  }
}

template <typename T, typename A>
void packed_fwd_head(const Problem& pb, int64_t bh, PackedScratch<A>& ws, int64_t Dp, T* out, A* lse) {
  constexpr int NR = Geo<A>::NR;
  const int64_t b = bh / pb.nh, h = bh - b * pb.nh, hd = pb.hd;
  const int n = static_cast<int>(pb.Lq), nv = static_cast<int>(pb.Lk);
  const int pd = static_cast<int>(Dp / NR);
  const bool direct = std::is_same<T, A>::value && hd % NR == 0;
  const A scale = static_cast<A>(pb.scale);
  const bool bias = pb.rel.defined();
  const Rows<A> qa = rows_of(pb.q.const_data_ptr<T>() + b * pb.sq.b + h * pb.sq.h, pb.sq.l, n, hd, Dp, direct,
                             ws.qb.data());
  const Rows<A> va = rows_of(pb.v.const_data_ptr<T>() + b * pb.sv.b + h * pb.sv.h, pb.sv.l, nv, hd, Dp, direct,
                             ws.vr.data());
  pack_head_panels(pb.k.const_data_ptr<T>() + b * pb.sk.b + h * pb.sk.h, pb.sk.l, pb.Lk, hd, Dp, ws.kt.data());
  if (bias) bias_tables(pb, pb.rel.const_data_ptr<A>() + b * pb.srel.b + h * pb.srel.h, 0, n, ws.bt.data(),
                        ws.bhw.data());
  const TileRuns tr(bias, 0, nv, pb.c, int64_t(pb.Hk) * pb.Wk);
  A* s = ws.s.data();
  // S: [n, w] = [n, hd] @ [hd, w]
  const int w = gemm_keys(n, nv, static_cast<int>(hd), qa.p, qa.ld, ws.kt.data(), Dp, s);
  A* ls = lse + bh * pb.Lq;
  for (int r = 0; r < n; ++r) {
    A* sr = s + r * kBN;
    scores_row(pb, tr, bias, r, nv, w, scale, ws, sr);
    const A mx = row_max(sr, w);
    const A sum = exp_row(sr, w, mx);
    ls[r] = mx + std::log(sum);
    scale_row(sr, w, A(1) / sum);  // P, normalised before the product (one tile: nothing to rescale later)
  }
  T* dst = out + bh * pb.Lq * hd;
  // O: [n, Dp] = [n, nv] @ [nv, Dp], into the output rows themselves when they are A
  A* o = direct ? reinterpret_cast<A*>(dst) : ws.o.data();
  const int64_t ldo = direct ? hd : Dp;
  gemm<A, false>(n, pd, nv, s, kBN, 1, va.p, va.ld, NR, o, ldo);
  if (direct) {
    if (pb.add_q) store_rows(pb, n, hd, o, ldo, A(1), qa, true, dst);
  } else {
    store_rows(pb, n, hd, o, ldo, A(1), qa, true, dst);
  }
}

template <typename T, typename A>
void packed_fwd_impl(const Problem& pb, const at::Tensor& out, const at::Tensor& lse) {
  const int64_t Dp = ceil_div64(pb.hd, Geo<A>::NR) * Geo<A>::NR;
  T* o = out.mutable_data_ptr<T>();
  A* ls = lse.mutable_data_ptr<A>();
  run_tasks(
      pb.heads(), [&] { return PackedScratch<A>(pb, Dp, false); },
      [&](int64_t bh, PackedScratch<A>& ws) { packed_fwd_head<T, A>(pb, bh, ws, Dp, o, ls); });
}

// drel row of query r from its per-key-bin sums: [dt | sum_w dhw | sum_h dhw].
template <typename A>
inline void write_drel_row(const Problem& pb, const A* dtr, const A* dhw, A* dr) {
  const int Tk = pb.Tk, Hk = pb.Hk, Wk = pb.Wk;
  for (int t = 0; t < Tk; ++t) dr[t] = dtr[t];
  for (int y = 0; y < Hk; ++y) {
    A a = A(0);
    for (int x = 0; x < Wk; ++x) a += dhw[y * Wk + x];
    dr[Tk + y] = a;
  }
  A* drw = dr + Tk + Hk;
  for (int x = 0; x < Wk; ++x) drw[x] = dhw[x];
  for (int y = 1; y < Hk; ++y)
    for (int x = 0; x < Wk; ++x) drw[x] += dhw[y * Wk + x];
}

template <typename T, typename A>
void packed_bwd_head(const Problem& pb, int64_t bh, PackedScratch<A>& ws, int64_t Dp, const Grads& g) {
  constexpr int NR = Geo<A>::NR;
  const int64_t b = bh / pb.nh, h = bh - b * pb.nh, hd = pb.hd, HW = int64_t(pb.Hk) * pb.Wk;
  const int n = static_cast<int>(pb.Lq), nv = static_cast<int>(pb.Lk);
  const int pd = static_cast<int>(Dp / NR);
  const bool direct = std::is_same<T, A>::value && hd % NR == 0;
  const A scale = static_cast<A>(pb.scale);
  const bool bias = pb.rel.defined();
  A *s = ws.s.data(), *ds = ws.ds.data();
  const T* kh = pb.k.const_data_ptr<T>() + b * pb.sk.b + h * pb.sk.h;
  const Rows<A> qa = rows_of(pb.q.const_data_ptr<T>() + b * pb.sq.b + h * pb.sq.h, pb.sq.l, n, hd, Dp, direct,
                             ws.qb.data());
  const Rows<A> da = rows_of(pb.dout.const_data_ptr<T>() + b * pb.sdo.b + h * pb.sdo.h, pb.sdo.l, n, hd, Dp,
                             direct, ws.dob.data());
  const Rows<A> ka = rows_of(kh, pb.sk.l, nv, hd, Dp, direct, ws.kr.data());
  pack_head_panels(kh, pb.sk.l, pb.Lk, hd, Dp, ws.kt.data());
  pack_head_panels(pb.v.const_data_ptr<T>() + b * pb.sv.b + h * pb.sv.h, pb.sv.l, pb.Lk, hd, Dp, ws.vt.data());
  if (bias) bias_tables(pb, pb.rel.const_data_ptr<A>() + b * pb.srel.b + h * pb.srel.h, 0, n, ws.bt.data(),
                        ws.bhw.data());
  if (pb.need_rel) {
    std::fill(ws.dt.begin(), ws.dt.end(), A(0));
    std::fill(ws.dhw.begin(), ws.dhw.end(), A(0));
  }
  const TileRuns tr(bias, 0, nv, pb.c, HW);
  // S, dP: [n, w] = [n, hd] @ [hd, w]
  const int w = gemm_keys(n, nv, static_cast<int>(hd), qa.p, qa.ld, ws.kt.data(), Dp, s);
  gemm_keys(n, nv, static_cast<int>(hd), da.p, da.ld, ws.vt.data(), Dp, ds);
  const T* oh = pb.out.const_data_ptr<T>() + b * pb.so.b + h * pb.so.h;
  const A* lh = pb.lse.const_data_ptr<A>() + b * pb.slse.b + h * pb.slse.h;
  for (int r = 0; r < n; ++r) {
    const T* orow = oh + r * pb.so.l;
    const A* dor = da.p + r * da.ld;
    const A* qr = qa.p + r * qa.ld;
    A delta = A(0);
    if constexpr (std::is_same<T, A>::value) {
      delta = dot_diff<A>(dor, orow, pb.residual(r) ? qr : nullptr, hd);
    } else if (pb.residual(r)) {
      for (int64_t d = 0; d < hd; ++d) delta += dor[d] * (to_acc<A>(orow[d]) - qr[d]);
    } else {
      for (int64_t d = 0; d < hd; ++d) delta += dor[d] * to_acc<A>(orow[d]);
    }
    A* sr = s + r * kBN;
    A* dsr = ds + r * kBN;
    scores_row(pb, tr, bias, r, nv, w, scale, ws, sr);
    exp_row(sr, w, lh[r * pb.slse.l]);  // P
    softmax_grad_row(sr, dsr, w, delta);
    if (pb.need_rel && r >= pb.c) bias_grad_row(dsr, tr, ws.dt.data() + r * pb.Tk, ws.dhw.data() + r * HW);
    scale_row(dsr, w, scale);  // dq and dk both take scale dS
  }
  T* dqh = g.dq.mutable_data_ptr<T>() + bh * pb.Lq * hd;
  T* dkh = g.dk.mutable_data_ptr<T>() + bh * pb.Lk * hd;
  T* dvh = g.dv.mutable_data_ptr<T>() + bh * pb.Lk * hd;
  const int64_t ldo = direct ? hd : Dp;
  A* dq = direct ? reinterpret_cast<A*>(dqh) : ws.o.data();
  // dq: [n, Dp] = [n, nv] @ [nv, Dp]
  gemm<A, false>(n, pd, nv, ds, kBN, 1, ka.p, ka.ld, NR, dq, ldo);
  if (!direct || pb.add_q) store_rows(pb, n, hd, dq, ldo, A(1), da, true, dqh);
  if (pb.need_rel) {
    for (int r = pb.c; r < n; ++r) {
      A* dr = g.drel.mutable_data_ptr<A>() + (bh * (pb.Lq - pb.c) + r - pb.c) * pb.rel_width();
      write_drel_row(pb, ws.dt.data() + r * pb.Tk, ws.dhw.data() + r * HW, dr);
    }
  }
  // dk, dv: [nv, Dp] = [nv, n] @ [n, Dp] (dS^T and P^T read from the row-major tiles)
  A* dk = direct ? reinterpret_cast<A*>(dkh) : ws.o.data();
  A* dv = direct ? reinterpret_cast<A*>(dvh) : ws.o2.data();
  gemm<A, false>(nv, pd, n, ds, 1, kBN, qa.p, qa.ld, NR, dk, ldo);
  gemm<A, false>(nv, pd, n, s, 1, kBN, da.p, da.ld, NR, dv, ldo);
  if (!direct) {
    store_rows(pb, nv, hd, dk, ldo, A(1), da, false, dkh);
    store_rows(pb, nv, hd, dv, ldo, A(1), da, false, dvh);
  }
}

template <typename T, typename A>
void packed_bwd_impl(const Problem& pb, const Grads& g) {
  const int64_t Dp = ceil_div64(pb.hd, Geo<A>::NR) * Geo<A>::NR;
  run_tasks(
      pb.heads(), [&] { return PackedScratch<A>(pb, Dp, true); },
      [&](int64_t bh, PackedScratch<A>& ws) { packed_bwd_head<T, A>(pb, bh, ws, Dp, g); });
}

}  // namespace
}  // namespace attn
}  // namespace fxk

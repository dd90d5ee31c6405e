// Backward pass of the attention CPU kernels (fxkernels/ops/attention/README.md, "Backward"), P recomputed from lse:
//   delta_i = dO_i.(O_i - r_i q_i),  dS_ij = P_ij (dO_i.v_j - delta_i),  dq_i = scale sum_j dS_ij k_j + r_i dO_i,
//   dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij dO_i,  drel[i, jt | Tk+jh | Tk+Hk+jw] += dS_ij  (i, j >= c)
// One pass over (query block, key tile) pairs computes every gradient from one recomputed S / P / dS tile (5 GEMMs,
// one exp per score). Tasks = chunks of consecutive query blocks of one head: a chunk owns its rows of dq and drel
// and its own partial dk, dv (Lk, Dp) buffers; a second phase sums the partials of each key row over the chunks in
// chunk order. The chunks depend on the shape only, so the sums, like everything else, are independent of the
// thread count; no atomics. Internal linkage only (see attention_cpu_kernels.h).
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention/attention_cpu_common.h"

namespace fxk {
namespace attn {
namespace {

// Query chunks per head: enough tasks for the threads of a big machine when there are few heads (mvit_v2_s
// stage 1 has one), bounded by the memory of the partial dk, dv buffers.
constexpr int64_t kBwdTasks = 32;
constexpr int64_t kMaxPartialBytes = int64_t(64) << 20;
// Query blocks that go through each key tile together: the tile's K / V copies and its rows of the partial dk, dv
// stay in cache for kGroup blocks (with Lk = 1569 the per-head copies and partials are 3 MB, past L2).
constexpr int kGroup = 4;
constexpr int kRows = kGroup * kBM;

struct Chunks {
  int64_t nqb = 0, per = 0, n = 0;  // query blocks per head, blocks per chunk, chunks per head
};

inline Chunks make_chunks(const Problem& pb, int64_t Dp, int64_t elem_bytes) {
  Chunks ch;
  ch.nqb = ceil_div64(pb.Lq, kBM);
  const int64_t heads = pb.heads();
  const int64_t per_set = 2 * pb.Lk * Dp * elem_bytes;  // one chunk's dk + dv partials
  int64_t want = std::min(ch.nqb, std::max<int64_t>(1, ceil_div64(kBwdTasks, heads)));
  while (want > 1 && heads * want * per_set > kMaxPartialBytes) --want;
  ch.per = ceil_div64(ch.nqb, want);
  ch.n = ceil_div64(ch.nqb, ch.per);
  return ch;
}

template <typename A>
struct BwdScratch {
  std::vector<A> qb, dob, dq, s, ds, delta, lse, bt, bhw, dt, dhw;
  BwdScratch(const Problem& pb, int64_t Dp) {
    const int64_t HW = int64_t(pb.Hk) * pb.Wk;
    qb.resize(kRows * Dp);
    dob.resize(kRows * Dp);
    dq.resize(kRows * Dp);
    s.resize(kBM * kBN);
    ds.resize(kBM * kBN);
    delta.resize(kRows);
    lse.resize(kRows);
    if (pb.rel.defined()) {
      bt.resize(kRows * pb.Tk);
      bhw.resize(kRows * HW);
    }
    if (pb.need_rel) {
      dt.resize(kRows * pb.Tk);
      dhw.resize(kRows * HW);
    }
  }
};

// Query rows i0 .. i0 + n (n <= kRows) of head bh: their dq and drel rows, and their terms of the chunk's partials
// dkp, dvp. Key tiles outer, the row blocks of kBM inner.
template <typename T, typename A>
void bwd_block(const Problem& pb, const Packs<A>& pk, int64_t bh, int64_t i0, int n, BwdScratch<A>& ws, A* dkp,
               A* dvp, const Grads& g) {
  constexpr int NR = Geo<A>::NR;
  const int64_t Dp = pk.Dp, Lk = pb.Lk, hd = pb.hd, HW = int64_t(pb.Hk) * pb.Wk;
  const int64_t b = bh / pb.nh, h = bh - b * pb.nh;
  const int c = pb.c, Tk = pb.Tk, Hk = pb.Hk, Wk = pb.Wk;
  const A scale = static_cast<A>(pb.scale);
  const A inf = std::numeric_limits<A>::infinity();
  A *qb = ws.qb.data(), *dob = ws.dob.data(), *dq = ws.dq.data(), *s = ws.s.data(), *ds = ws.ds.data();
  load_rows(pb.q.const_data_ptr<T>() + b * pb.sq.b + h * pb.sq.h, pb.sq.l, i0, n, hd, Dp, qb);
  load_rows(pb.dout.const_data_ptr<T>() + b * pb.sdo.b + h * pb.sdo.h, pb.sdo.l, i0, n, hd, Dp, dob);
  const T* oh = pb.out.const_data_ptr<T>() + b * pb.so.b + h * pb.so.h;
  const A* lh = pb.lse.const_data_ptr<A>() + b * pb.slse.b + h * pb.slse.h;
  for (int r = 0; r < n; ++r) {
    const int64_t i = i0 + r;
    const T* orow = oh + i * pb.so.l;
    const A* dor = dob + r * Dp;
    const A* qr = qb + r * Dp;
    A acc = A(0);
    if (pb.residual(i)) {
      for (int64_t d = 0; d < hd; ++d) acc += dor[d] * (to_acc<A>(orow[d]) - qr[d]);
    } else {
      for (int64_t d = 0; d < hd; ++d) acc += dor[d] * to_acc<A>(orow[d]);
    }
    ws.delta[r] = acc;
    ws.lse[r] = lh[i * pb.slse.l];
  }
  const bool bias = pb.rel.defined();
  if (bias) bias_tables(pb, pb.rel.const_data_ptr<A>() + b * pb.srel.b + h * pb.srel.h, i0, n, ws.bt.data(),
                        ws.bhw.data());
  if (pb.need_rel) {
    std::fill(ws.dt.begin(), ws.dt.end(), A(0));
    std::fill(ws.dhw.begin(), ws.dhw.end(), A(0));
  }
  const A* kt = pk.kt_of(bh);
  const A* vt = pk.vt_of(bh);
  const A* kr = pk.kr_of(bh);
  const int pd = static_cast<int>(Dp / NR);
  for (int64_t j0 = 0; j0 < Lk; j0 += kBN) {
    const int nv = static_cast<int>(std::min<int64_t>(kBN, Lk - j0));
    const int np = (nv + NR - 1) / NR, w = np * NR;
    const TileRuns tr(bias, j0, nv, c, HW);
    for (int r0 = 0; r0 < n; r0 += kBM) {  // the blocks of kBM rows
      const int m = std::min(kBM, n - r0);
      const A* qm = qb + r0 * Dp;
      const A* dom = dob + r0 * Dp;
      // S, dP: [m, w] = [m, Dp] @ [Dp, w]
      gemm<A, false>(m, np, static_cast<int>(Dp), qm, Dp, 1, kt + (j0 / NR) * Dp * NR, NR, Dp * NR, s, kBN);
      gemm<A, false>(m, np, static_cast<int>(Dp), dom, Dp, 1, vt + (j0 / NR) * Dp * NR, NR, Dp * NR, ds, kBN);
      for (int rr = 0; rr < m; ++rr) {
        const int r = r0 + rr;
        A* sr = s + rr * kBN;
        A* dsr = ds + rr * kBN;
        const bool grid_row = i0 + r >= c;
        if (bias && grid_row) {
          scale_bias_row(sr, tr, scale, ws.bt.data() + r * Tk, ws.bhw.data() + r * HW);
        } else {
          for (int x = 0; x < nv; ++x) sr[x] *= scale;
        }
        for (int x = nv; x < w; ++x) sr[x] = -inf;
        exp_row(sr, w, ws.lse[r]);  // P
        softmax_grad_row(sr, dsr, w, ws.delta[r]);
        if (pb.need_rel && grid_row) bias_grad_row(dsr, tr, ws.dt.data() + r * Tk, ws.dhw.data() + r * HW);
      }
      // dq: [m, Dp] (+)= [m, nv] @ [nv, Dp]
      if (j0 == 0)
        gemm<A, false>(m, pd, nv, ds, kBN, 1, kr + j0 * Dp, Dp, NR, dq + r0 * Dp, Dp);
      else
        gemm<A, true>(m, pd, nv, ds, kBN, 1, kr + j0 * Dp, Dp, NR, dq + r0 * Dp, Dp);
      // dk, dv partials: [nv, Dp] += [nv, m] @ [m, Dp] (dS^T and P^T read from the row-major tiles)
      gemm<A, true>(nv, pd, m, ds, 1, kBN, qm, Dp, NR, dkp + j0 * Dp, Dp);
      gemm<A, true>(nv, pd, m, s, 1, kBN, dom, Dp, NR, dvp + j0 * Dp, Dp);
    }
  }
  for (int r = 0; r < n; ++r) {
    const int64_t i = i0 + r;
    const A* dqr = dq + r * Dp;
    const A* dor = dob + r * Dp;
    T* dst = g.dq.mutable_data_ptr<T>() + (bh * pb.Lq + i) * hd;
    if (pb.residual(i)) {
      for (int64_t d = 0; d < hd; ++d) dst[d] = from_acc<T>(dqr[d] * scale + dor[d]);
    } else {
      for (int64_t d = 0; d < hd; ++d) dst[d] = from_acc<T>(dqr[d] * scale);
    }
    if (!pb.need_rel || i < c) continue;
    A* dr = g.drel.mutable_data_ptr<A>() + ((bh * (pb.Lq - c)) + i - c) * pb.rel_width();
    const A* dtr = ws.dt.data() + r * Tk;
    const A* dhw = ws.dhw.data() + r * HW;
    for (int t = 0; t < Tk; ++t) dr[t] = dtr[t];
    for (int y = 0; y < Hk; ++y) {
      A acc = A(0);
      for (int x = 0; x < Wk; ++x) acc += dhw[y * Wk + x];
      dr[Tk + y] = acc;
    }
    A* drw = dr + Tk + Hk;
    for (int x = 0; x < Wk; ++x) drw[x] = dhw[x];
    for (int y = 1; y < Hk; ++y)
      for (int x = 0; x < Wk; ++x) drw[x] += dhw[y * Wk + x];
  }
}

template <typename T, typename A>
void bwd_impl(const Problem& pb, const Grads& g) {
  constexpr int NR = Geo<A>::NR;
  const Packs<A> pk = make_packs<T, A>(pb, /*kt=*/true, /*vt=*/true, /*kr=*/true, /*vr=*/false);
  const int64_t Dp = pk.Dp, Lk = pb.Lk, hd = pb.hd, heads = pb.heads();
  const Chunks ch = make_chunks(pb, Dp, sizeof(A));
  const int64_t set = 2 * Lk * Dp;  // one chunk's partials: dk then dv, (Lk, Dp) each
  const auto acc = std::is_same<A, double>::value ? at::kDouble : at::kFloat;
  const at::Tensor part = at::empty({heads * ch.n * set}, pb.q.options().dtype(acc));
  A* pp = part.mutable_data_ptr<A>();
  run_tasks(
      heads * ch.n, [&] { return BwdScratch<A>(pb, Dp); },
      [&](int64_t t, BwdScratch<A>& ws) {
        const int64_t bh = t / ch.n, k = t - bh * ch.n;
        A* dkp = pp + t * set;
        A* dvp = dkp + Lk * Dp;
        std::memset(dkp, 0, sizeof(A) * set);
        const int64_t i_end = std::min(pb.Lq, (k + 1) * ch.per * kBM);
        for (int64_t i0 = k * ch.per * kBM; i0 < i_end; i0 += kRows) {
          const int n = static_cast<int>(std::min<int64_t>(kRows, i_end - i0));
          bwd_block<T, A>(pb, pk, bh, i0, n, ws, dkp, dvp, g);
        }
      });
  // dk_j = scale sum_chunks dk partial_j, dv_j = sum_chunks dv partial_j, chunks in order; blocks of NR key rows
  const int64_t nkb = ceil_div64(Lk, NR);
  const A scale = static_cast<A>(pb.scale);
  T* dk = g.dk.mutable_data_ptr<T>();
  T* dv = g.dv.mutable_data_ptr<T>();
  run_tasks(
      heads * nkb, [&] { return std::vector<A>(2 * Dp); },
      [&](int64_t t, std::vector<A>& sum) {
        const int64_t bh = t / nkb, j0 = (t - bh * nkb) * NR, j1 = std::min(Lk, j0 + NR);
        for (int64_t j = j0; j < j1; ++j) {
          A* sk = sum.data();
          A* sv = sk + Dp;
          std::fill(sum.begin(), sum.end(), A(0));
          for (int64_t k = 0; k < ch.n; ++k) {
            const A* src = pp + (bh * ch.n + k) * set + j * Dp;
            for (int64_t d = 0; d < hd; ++d) sk[d] += src[d];
            for (int64_t d = 0; d < hd; ++d) sv[d] += src[Lk * Dp + d];
          }
          T* dkr = dk + (bh * Lk + j) * hd;
          T* dvr = dv + (bh * Lk + j) * hd;
          for (int64_t d = 0; d < hd; ++d) dkr[d] = from_acc<T>(sk[d] * scale);
          for (int64_t d = 0; d < hd; ++d) dvr[d] = from_acc<T>(sv[d]);
        }
      });
}

}  // namespace
}  // namespace attn
}  // namespace fxk

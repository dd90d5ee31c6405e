// Forward pass of the attention CPU kernels (fxkernels/ops/attention/README.md, "Kernel"):
//   S_ij = scale q_i.k_j + [i>=c][j>=c] bias_ij,  O_i = sum_j softmax_j(S)_ij v_j + r_i q_i,  lse_i = logsumexp_j S_ij
// One task = one block of kBM query rows of one head; it loops over key tiles of kBN with an online softmax
// (running max m_i and sum l_i, O rescaled when the max grows): S, P exist only as one (kBM, kBN) tile.
// Internal linkage only (see attention_cpu_kernels.h).
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "attention/attention_cpu_common.h"

namespace fxk {
namespace attn {
namespace {

template <typename A>
struct FwdScratch {
  std::vector<A> qb, o, s, m, l, bt, bhw;
  FwdScratch(const Problem& pb, int64_t Dp) {
    const int64_t HW = int64_t(pb.Hk) * pb.Wk;
    qb.resize(kBM * Dp);
    o.resize(kBM * Dp);
    s.resize(kBM * kBN);
    m.resize(kBM);
    l.resize(kBM);
    if (pb.rel.defined()) {
      bt.resize(kBM * pb.Tk);
      bhw.resize(kBM * HW);
    }
  }
};

// Query rows i0 .. i0 + n of head bh -> out rows (contiguous (B, nh, Lq, hd)) and lse.
template <typename T, typename A>
void fwd_block(const Problem& pb, const Packs<A>& pk, int64_t bh, int64_t i0, int n, FwdScratch<A>& ws, T* out,
               A* lse) {
  constexpr int NR = Geo<A>::NR;
  const int64_t Dp = pk.Dp, Lk = pb.Lk, hd = pb.hd, HW = int64_t(pb.Hk) * pb.Wk;
  const int64_t b = bh / pb.nh, h = bh - b * pb.nh;
  const int c = pb.c, Tk = pb.Tk;
  const A scale = static_cast<A>(pb.scale);
  const A inf = std::numeric_limits<A>::infinity();
  A *qb = ws.qb.data(), *o = ws.o.data(), *s = ws.s.data(), *m = ws.m.data(), *l = ws.l.data();
  load_rows(pb.q.const_data_ptr<T>() + b * pb.sq.b + h * pb.sq.h, pb.sq.l, i0, n, hd, Dp, qb);
  const bool bias = pb.rel.defined();
  if (bias) bias_tables(pb, pb.rel.const_data_ptr<A>() + b * pb.srel.b + h * pb.srel.h, i0, n, ws.bt.data(),
                        ws.bhw.data());
  const A* kt = pk.kt_of(bh);
  const A* vr = pk.vr_of(bh);
  for (int64_t j0 = 0; j0 < Lk; j0 += kBN) {
    const int nv = static_cast<int>(std::min<int64_t>(kBN, Lk - j0));
    const int np = (nv + NR - 1) / NR, w = np * NR;
    const bool first = j0 == 0;
    const TileRuns tr(bias, j0, nv, c, HW);
    // [n, w] = [n, Dp] @ [Dp, w]
    gemm<A, false>(n, np, static_cast<int>(Dp), qb, Dp, 1, kt + (j0 / NR) * Dp * NR, NR, Dp * NR, s, kBN);
    for (int r = 0; r < n; ++r) {
      A* sr = s + r * kBN;
      if (bias && i0 + r >= c) {
        scale_bias_row(sr, tr, scale, ws.bt.data() + r * Tk, ws.bhw.data() + r * HW);
      } else {
        for (int x = 0; x < nv; ++x) sr[x] *= scale;
      }
      for (int x = nv; x < w; ++x) sr[x] = -inf;  // padded keys: p = 0
      const A mx = row_max(sr, w);
      const A mnew = first ? mx : std::max(m[r], mx);
      const A sum = exp_row(sr, w, mnew);
      if (first) {
        l[r] = sum;
      } else {
        const A alpha = std::exp(m[r] - mnew);
        l[r] = l[r] * alpha + sum;
        if (alpha != A(1)) {
          A* orow = o + r * Dp;
          for (int64_t d = 0; d < Dp; ++d) orow[d] *= alpha;
        }
      }
      m[r] = mnew;
    }
    // [n, Dp] (+)= [n, nv] @ [nv, Dp]
    if (first)
      gemm<A, false>(n, static_cast<int>(Dp / NR), nv, s, kBN, 1, vr + j0 * Dp, Dp, NR, o, Dp);
    else
      gemm<A, true>(n, static_cast<int>(Dp / NR), nv, s, kBN, 1, vr + j0 * Dp, Dp, NR, o, Dp);
  }
  for (int r = 0; r < n; ++r) {
    const int64_t i = i0 + r;
    const A inv = A(1) / l[r];
    const A* orow = o + r * Dp;
    const A* qrow = qb + r * Dp;
    T* dst = out + (bh * pb.Lq + i) * hd;
    if (pb.residual(i)) {
      for (int64_t d = 0; d < hd; ++d) dst[d] = from_acc<T>(orow[d] * inv + qrow[d]);
    } else {
      for (int64_t d = 0; d < hd; ++d) dst[d] = from_acc<T>(orow[d] * inv);
    }
    lse[bh * pb.Lq + i] = m[r] + std::log(l[r]);
  }
}

template <typename T, typename A>
void fwd_impl(const Problem& pb, const at::Tensor& out, const at::Tensor& lse) {
  const Packs<A> pk = make_packs<T, A>(pb, /*kt=*/true, /*vt=*/false, /*kr=*/false, /*vr=*/true);
  const int64_t nqb = ceil_div64(pb.Lq, kBM);
  T* o = out.mutable_data_ptr<T>();
  A* ls = lse.mutable_data_ptr<A>();
  run_tasks(
      pb.heads() * nqb, [&] { return FwdScratch<A>(pb, pk.Dp); },
      [&](int64_t t, FwdScratch<A>& ws) {
        const int64_t bh = t / nqb, i0 = (t - bh * nqb) * kBM;
        const int n = static_cast<int>(std::min<int64_t>(kBM, pb.Lq - i0));
        fwd_block<T, A>(pb, pk, bh, i0, n, ws, o, ls);
      });
}

}  // namespace
}  // namespace attn
}  // namespace fxk

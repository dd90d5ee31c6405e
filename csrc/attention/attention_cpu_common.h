// Shared parts of the attention CPU passes: the task scheduler, the per-head K / V packs, row loads and the
// per-row bias tables. Internal linkage only (see attention_cpu_kernels.h).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "attention/attention_cpu_math.h"
#include "attention/attention_host.h"

namespace fxk {
namespace attn {
namespace {

// Query rows per block of both passes (kBN, the keys per tile, is in attention_cpu_math.h).
constexpr int kBM = 48;

inline int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

// body(task, scratch) for every task in [0, n): each intra-op thread makes its scratch once and takes the next
// task from a shared counter (a dynamic schedule keeps both cores busy when one is slowed down by other work).
// A task's results never depend on which thread ran it.
template <typename Make, typename Body>
void run_tasks(int64_t n, Make make, Body body) {
  if (n <= 0) return;
  const int64_t nth = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nth, 1, [&](int64_t, int64_t) {
    auto ws = make();
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= n) break;
      body(t, ws);
    }
  });
}

// dst[r * Dp + d] = src row i0 + r (rows sl apart) in A, d < hd; zeros for hd <= d < Dp.
template <typename T, typename A>
inline void load_rows(const T* src, int64_t sl, int64_t i0, int n, int64_t hd, int64_t Dp, A* dst) {
  for (int r = 0; r < n; ++r) {
    const T* row = src + (i0 + r) * sl;
    A* d = dst + r * Dp;
    for (int64_t x = 0; x < hd; ++x) d[x] = to_acc<A>(row[x]);
    for (int64_t x = hd; x < Dp; ++x) d[x] = A(0);
  }
}

// Per-head copies of K and V in A, zero-padded to Dp columns (and to whole panels of keys):
//   kt, vt  [heads][npk][Dp][NR]: the transposed panels that S = Q K^T and dP = dO V^T stream through,
//   kr, vr  [heads][Lk][Dp]:      the rows that O += P V and dQ += dS K read.
template <typename A>
struct Packs {
  int64_t Dp = 0, npk = 0, Lk = 0;
  at::Tensor buf;
  A *kt = nullptr, *vt = nullptr, *kr = nullptr, *vr = nullptr;
  int64_t panel_elems() const { return npk * Dp * Geo<A>::NR; }
  int64_t row_elems() const { return Lk * Dp; }
  const A* kt_of(int64_t bh) const { return kt + bh * panel_elems(); }
  const A* vt_of(int64_t bh) const { return vt + bh * panel_elems(); }
  const A* kr_of(int64_t bh) const { return kr + bh * row_elems(); }
  const A* vr_of(int64_t bh) const { return vr + bh * row_elems(); }
};

template <typename T, typename A>
inline void pack_panel(const T* src, int64_t sl, int64_t Lk, int64_t hd, int64_t Dp, int64_t j0, A* dst) {
  constexpr int NR = Geo<A>::NR;
  for (int l = 0; l < NR; ++l) {
    const int64_t j = j0 + l;
    if (j < Lk) {
      const T* row = src + j * sl;
      for (int64_t d = 0; d < hd; ++d) dst[d * NR + l] = to_acc<A>(row[d]);
      for (int64_t d = hd; d < Dp; ++d) dst[d * NR + l] = A(0);
    } else {
      for (int64_t d = 0; d < Dp; ++d) dst[d * NR + l] = A(0);
    }
  }
}

template <typename T, typename A>
Packs<A> make_packs(const Problem& pb, bool kt, bool vt, bool kr, bool vr) {
  constexpr int NR = Geo<A>::NR;
  Packs<A> pk;
  pk.Dp = ceil_div64(pb.hd, NR) * NR;
  pk.npk = ceil_div64(pb.Lk, NR);
  pk.Lk = pb.Lk;
  const int64_t heads = pb.heads(), pe = pk.panel_elems(), re = pk.row_elems();
  const int64_t total = heads * ((kt + vt) * pe + (kr + vr) * re);
  const auto acc = std::is_same<A, double>::value ? at::kDouble : at::kFloat;
  pk.buf = at::empty({total}, pb.q.options().dtype(acc));
  A* p = pk.buf.template mutable_data_ptr<A>();
  auto take = [&](bool on, int64_t n) {
    A* r = on ? p : nullptr;
    if (on) p += heads * n;
    return r;
  };
  pk.kt = take(kt, pe);
  pk.vt = take(vt, pe);
  pk.kr = take(kr, re);
  pk.vr = take(vr, re);
  const T* kp = pb.k.const_data_ptr<T>();
  const T* vp = pb.v.const_data_ptr<T>();
  const int64_t nh = pb.nh, Lk = pb.Lk, hd = pb.hd, Dp = pk.Dp;
  // one task = one panel of NR keys of one head, all four copies
  run_tasks(
      heads * pk.npk, [] { return 0; },
      [&](int64_t t, int&) {
        const int64_t bh = t / pk.npk, jp = t - bh * pk.npk, b = bh / nh, h = bh - b * nh;
        const T* kh = kp + b * pb.sk.b + h * pb.sk.h;
        const T* vh = vp + b * pb.sv.b + h * pb.sv.h;
        const int64_t j0 = jp * NR;
        const int n = static_cast<int>(std::min<int64_t>(NR, Lk - j0));
        if (pk.kt) pack_panel(kh, pb.sk.l, Lk, hd, Dp, j0, pk.kt + bh * pe + jp * Dp * NR);
        if (pk.vt) pack_panel(vh, pb.sv.l, Lk, hd, Dp, j0, pk.vt + bh * pe + jp * Dp * NR);
        if (pk.kr) load_rows(kh, pb.sk.l, j0, n, hd, Dp, pk.kr + bh * re + j0 * Dp);
        if (pk.vr) load_rows(vh, pb.sv.l, j0, n, hd, Dp, pk.vr + bh * re + j0 * Dp);
      });
  return pk;
}

// The bias of the grid rows i = i0 + r >= c of a block from their rel rows [rt | rh | rw]:
// bt[r * Tk + t] = rt[t], bhw[r * HW + h * Wk + w] = rh[h] + rw[w] (bias(i, j) = bt[jt] + bhw[jh * Wk + jw]).
template <typename A>
inline void bias_tables(const Problem& pb, const A* rel_head, int64_t i0, int n, A* bt, A* bhw) {
  const int Tk = pb.Tk, Hk = pb.Hk, Wk = pb.Wk;
  const int64_t HW = int64_t(Hk) * Wk;
  for (int r = 0; r < n; ++r) {
    const int64_t i = i0 + r;
    if (i < pb.c) continue;
    const A* rr = rel_head + (i - pb.c) * pb.srel.l;
    for (int t = 0; t < Tk; ++t) bt[r * Tk + t] = rr[t];
    A* bw = bhw + r * HW;
    const A* rh = rr + Tk;
    const A* rw = rr + Tk + Hk;
    for (int y = 0; y < Hk; ++y)
      for (int x = 0; x < Wk; ++x) bw[y * Wk + x] = rh[y] + rw[x];
  }
}

}  // namespace
}  // namespace attn
}  // namespace fxk

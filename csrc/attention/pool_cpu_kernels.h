// attention_pool CPU kernels (fxkernels/ops/attention/README.md, "attention_pool"). Included once per ISA variant
// (pool_cpu.cpp: baseline, pool_cpu_avx2.cpp: AVX2+FMA, which defines FXK_APOOL_FMA); everything here has
// internal linkage, so the variants never mix.
//
// x is read in its token layout: a row (one token of one head) is an hd vector, so a depthwise tap is an
// elementwise product of two hd vectors (weight row, x row), vectorised over hd with the sum over the taps in
// registers (pool_cpu_math.h). Work unit: a tile of output positions (kTB t x one h x kWB w) of one (b, h) plane.
// A tile first stages the x rows its taps read (converted to A, a few hundred KB at most) into a compact buffer:
// in the qkv layout an x row is 1/3 of its memory span, and reading the taps straight from x ran 2x slower (the
// prefetchers pull the q / v rows in between, which crowds L2); each x row is staged by about kh tiles.
//   forward   per output row: z = sum over the valid taps of wt[tap] * x[row(tap)] (the cls row: z = x row),
//             then the LayerNorm of z in the same pass; stats (mean, rstd) saved. Parallel over tiles.
//   backward  phase 1, over a fixed partition of the tiles into tasks (a function of the problem size only, not of
//             the thread count): z recomputed, dz = LayerNorm backward (or dy), kept in a buffer; the task's
//             partial sums of dw (dz * x rows), dnw (dy * xhat), dnb (dy) in its own slot; the slots are then
//             added in task order. dw is summed over a run of w neighbours with the same taps in registers
//             (each dw row loaded and stored once per run, not once per output row). Phase 2, over tiles of input
//             positions: dx[row] = sum over the output rows whose taps read it of wt[tap] * dz (owner computes);
//             along w the inputs are walked in stride classes (w, w + sw, ...: same taps, outputs shifted by one).
//             Deterministic, no atomics.
// Neighbours along w with the same taps (interior positions) are computed in pairs, sharing the weight loads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "attention/pool.h"
#include "attention/pool_cpu_math.h"
#include "common/checks.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace attn_pool {
namespace {

// Tiles of a (GT, GH, GW) grid: kTB t x 1 h x wb w, ordered (t block, w block, h) with h fastest (neighbouring
// tiles share kh - 1 of their kh input grid rows). The plane's cls rows belong to its tile 0.
constexpr int kTB = 8;

struct Tiling {
  int GT, GH, GW, wb, ntb, nwb;
  int64_t per_plane;
  Tiling(int gt, int gh, int gw, int wb_)
      : GT(gt), GH(gh), GW(gw), wb(wb_), ntb((gt + kTB - 1) / kTB), nwb((gw + wb_ - 1) / wb_),
        per_plane(static_cast<int64_t>(ntb) * nwb * gh) {}
  struct Box {
    int t0, t1, h, w0, w1;
  };
  Box box(int64_t tile) const {
    const int h = static_cast<int>(tile % GH), rest = static_cast<int>(tile / GH);
    const int tb = rest / nwb, w0 = (rest % nwb) * wb;
    return {tb * kTB, std::min(GT, tb * kTB + kTB), h, w0, std::min(GW, w0 + wb)};
  }
};

// Columns per tile: 16 fp32 / 8 fp64 at hd = 96, fewer for wider rows (the staged rows stay within L2).
template <typename A>
int tile_w(int64_t hd) {
  return static_cast<int>(std::max<int64_t>(4, std::min<int64_t>(64 / sizeof(A), 6144 / (hd * sizeof(A)))));
}

// pair[u]: coordinates u and u + ps of an axis have the same taps (count and offsets d) in table a.
inline std::vector<char> pairable(const AxisTaps& a, int ps = 1) {
  const int n = static_cast<int>(a.cnt.size());
  std::vector<char> p(n, 0);
  for (int u = 0; u + ps < n; ++u) {
    bool same = a.cnt[u] == a.cnt[u + ps];
    for (int j = 0; same && j < a.cnt[u]; ++j) same = a.tap[u * a.k + j] == a.tap[(u + ps) * a.k + j];
    p[u] = same;
  }
  return p;
}

// The x rows one output tile reads, staged in A: for the input grid rows ih of the tile (at most kh), the rows
// (it, ih, iw) of its staged coordinates it = list[0][s0], iw = list[2][s2] at
//   buf[((ih % kh) * n0 + s0) * n2 + s2) * hd + d].
// Consecutive tiles of one (t block, w block) differ in h only: the grid rows both read stay (a ring over ih % kh),
// so each x row is staged about once. Dense rows in A (x contiguous over its last two axes) are read in place.
template <typename A>
struct Stage {
  std::vector<int> slot[3], list[3], ring;  // ring[ih % kh] = the grid row staged there (-1: none)
  std::vector<A> buf;
  const A* direct = nullptr;  // dense rows already in A (x contiguous over (L, hd)): the taps read x itself
  int64_t key_bh = -1;
  int key_t0 = -1, key_w0 = -1;
  explicit Stage(const Problem& pb) : ring(pb.kh, -1) {
    slot[0].assign(pb.T, -1);
    slot[2].assign(pb.W, -1);
  }
  // the input coordinates read by output coordinates [u0, u1) of axis ax, in increasing order
  void select(int ax, const AxisTaps& a, int u0, int u1) {
    for (int i : list[ax]) slot[ax][i] = -1;
    list[ax].clear();
    int lo = static_cast<int>(slot[ax].size()), hi = -1;
    for (int u = u0; u < u1; ++u)
      for (int j = 0; j < a.cnt[u]; ++j) {
        const int i = a.idx[u * a.k + j];
        slot[ax][i] = 0;
        lo = std::min(lo, i);
        hi = std::max(hi, i);
      }
    for (int i = lo; i <= hi; ++i)
      if (slot[ax][i] == 0) {
        slot[ax][i] = static_cast<int>(list[ax].size());
        list[ax].push_back(i);
      }
  }
  // consecutive staged w coordinates: the rows of output w + 1 sit sw rows after those of output w (same taps)
  bool w_dense() const {
    return direct != nullptr || list[2].empty() || list[2].back() - list[2].front() + 1 == int(list[2].size());
  }
  // stage what output tile bx of plane bh (x rows at xbh) reads
  template <typename T>
  void fill(const Problem& pb, const T* xbh, int64_t bh, const Tiling::Box& bx) {
    if constexpr (std::is_same<T, A>::value) {
      // no copy needed when the rows are dense: staging pays only in strided layouts such as qkv's (above)
      if (pb.sxd == 1 && pb.sxl == pb.hd) {
        direct = xbh;
        return;
      }
    }
    direct = nullptr;
    if (bh != key_bh || bx.t0 != key_t0 || bx.w0 != key_w0) {
      select(0, pb.fwd[0], bx.t0, bx.t1);
      select(2, pb.fwd[2], bx.w0, bx.w1);
      buf.resize(static_cast<size_t>(pb.kh) * list[0].size() * list[2].size() * pb.hd);
      std::fill(ring.begin(), ring.end(), -1);
      key_bh = bh;
      key_t0 = bx.t0;
      key_w0 = bx.w0;
    }
    const AxisTaps& a1 = pb.fwd[1];
    const size_t n0 = list[0].size(), n2 = list[2].size();
    for (int j = 0; j < a1.cnt[bx.h]; ++j) {
      const int ih = a1.idx[bx.h * a1.k + j], r = ih % pb.kh;
      if (ring[r] == ih) continue;
      ring[r] = ih;
      A* dst = buf.data() + static_cast<size_t>(r) * n0 * n2 * pb.hd;
      for (int it : list[0]) {
        const T* line = xbh + (pb.c + (static_cast<int64_t>(it) * pb.H + ih) * pb.W) * pb.sxl;
        for (int iw : list[2]) {
          load_strided_row<T, A>(pb.hd, line + iw * pb.sxl, pb.sxd, dst);
          dst += pb.hd;
        }
      }
    }
  }
  // the taps of output (ot, oh, ow) of the staged tile: weight rows w[j], staged x rows r[j]; returns the count
  int taps(const Problem& pb, int ot, int oh, int ow, const A* wt, const A** w, const A** r) const {
    const AxisTaps &a0 = pb.fwd[0], &a1 = pb.fwd[1], &a2 = pb.fwd[2];
    int n = 0;
    if (direct != nullptr) {
      for (int j1 = 0; j1 < a1.cnt[oh]; ++j1) {
        const int d1 = a1.tap[oh * a1.k + j1], ih = a1.idx[oh * a1.k + j1];
        for (int j0 = 0; j0 < a0.cnt[ot]; ++j0) {
          const int d0 = a0.tap[ot * a0.k + j0], it = a0.idx[ot * a0.k + j0];
          const int64_t tap01 = (static_cast<int64_t>(d0) * pb.kh + d1) * pb.kw;
          const A* line = direct + (pb.c + (static_cast<int64_t>(it) * pb.H + ih) * pb.W) * pb.hd;
          for (int j2 = 0; j2 < a2.cnt[ow]; ++j2) {
            w[n] = wt + (tap01 + a2.tap[ow * a2.k + j2]) * pb.hd;
            r[n] = line + static_cast<int64_t>(a2.idx[ow * a2.k + j2]) * pb.hd;
            ++n;
          }
        }
      }
      return n;
    }
    const int64_t n0 = static_cast<int64_t>(list[0].size()), n2 = static_cast<int64_t>(list[2].size());
    for (int j1 = 0; j1 < a1.cnt[oh]; ++j1) {
      const int d1 = a1.tap[oh * a1.k + j1], s1 = a1.idx[oh * a1.k + j1] % pb.kh;
      for (int j0 = 0; j0 < a0.cnt[ot]; ++j0) {
        const int d0 = a0.tap[ot * a0.k + j0], s0 = slot[0][a0.idx[ot * a0.k + j0]];
        const int64_t tap01 = (static_cast<int64_t>(d0) * pb.kh + d1) * pb.kw, row01 = (s1 * n0 + s0) * n2;
        for (int j2 = 0; j2 < a2.cnt[ow]; ++j2) {
          w[n] = wt + (tap01 + a2.tap[ow * a2.k + j2]) * pb.hd;
          r[n] = buf.data() + (row01 + slot[2][a2.idx[ow * a2.k + j2]]) * pb.hd;
          ++n;
        }
      }
    }
    return n;
  }
};

// The taps of input (it, ih, iw): the dz rows (contiguous, cls rows first, at dzbh) of the outputs that read it.
template <typename A>
inline int taps_of_input(const Problem& pb, int it, int ih, int iw, const A* wt, const A* dzbh, const A** w,
                         const A** r) {
  const AxisTaps &a0 = pb.bwd[0], &a1 = pb.bwd[1], &a2 = pb.bwd[2];
  int n = 0;
  for (int j0 = 0; j0 < a0.cnt[it]; ++j0) {
    const int d0 = a0.tap[it * a0.k + j0], o0 = a0.idx[it * a0.k + j0];
    for (int j1 = 0; j1 < a1.cnt[ih]; ++j1) {
      const int d1 = a1.tap[ih * a1.k + j1], o1 = a1.idx[ih * a1.k + j1];
      const int64_t tap01 = (static_cast<int64_t>(d0) * pb.kh + d1) * pb.kw;
      const int64_t row01 = pb.c + (static_cast<int64_t>(o0) * pb.Ho + o1) * pb.Wo;
      for (int j2 = 0; j2 < a2.cnt[iw]; ++j2) {
        w[n] = wt + (tap01 + a2.tap[iw * a2.k + j2]) * pb.hd;
        r[n] = dzbh + (row01 + a2.idx[iw * a2.k + j2]) * pb.hd;
        ++n;
      }
    }
  }
  return n;
}

// The positions [u0, u1) of a grid line, walked in ps classes (u0 + r, u0 + r + ps, ...), each in runs of equal
// taps (pair[u]: u and u + ps have the same taps): the tap lists are built once per run (build(u) -> count) and
// shifted by `step` elements per position of the class (-1: no constant shift, built for every position); then
// two(n, off0, off1, u) for pairs (u, u + ps), one(n, off, u) for the rest.
template <typename Build, typename One, typename Two>
inline void walk_line(int u0, int u1, int ps, const std::vector<char>& pair, int64_t step, Build&& build, One&& one,
                      Two&& two) {
  for (int c = 0; c < ps; ++c)
    for (int u = u0 + c; u < u1;) {
      int e = u + ps;
      while (e < u1 && pair[e - ps]) e += ps;
      if (step < 0) {
        for (int k = u; k < e; k += ps) one(build(k), int64_t(0), k);
      } else {
        const int n = build(u);
        int k = u;
        for (; k + ps < e; k += 2 * ps) two(n, (k - u) / ps * step, (k + ps - u) / ps * step, k);
        if (k < e) one(n, (k - u) / ps * step, k);
      }
      u = e;
    }
}

// Per-thread scratch: tap lists of a pair of rows and row buffers.
template <typename A>
struct Scratch {
  std::vector<const A*> w, r0, r1;
  std::vector<A*> acc;
  std::vector<A> z0, z1, b0, b1;
  Scratch(int taps, int64_t hd)
      : w(taps), r0(taps), r1(taps), acc(taps), z0(hd), z1(hd), b0(hd), b1(hd) {}
};

template <typename T, typename A>
void fwd_typed(const Problem& pb, const at::Tensor& y, const at::Tensor& stats) {
  const int64_t hd = pb.hd, Lo = pb.Lo;
  const T* xp = pb.x.data_ptr<T>();
  const A* wt = pb.wt.data_ptr<A>();
  const A* nw = pb.norm ? pb.nw.data_ptr<A>() : nullptr;
  const A* nb = pb.norm ? pb.nb.data_ptr<A>() : nullptr;
  T* yp = y.data_ptr<T>();
  A* sp = pb.norm ? stats.data_ptr<A>() : nullptr;
  const Tiling tl(pb.To, pb.Ho, pb.Wo, tile_w<A>(hd));
  const std::vector<char> pair = pairable(pb.fwd[2]);
  at::parallel_for(0, pb.B * pb.nh * tl.per_plane, 1, [&](int64_t u0, int64_t u1) {
    Stage<A> sg(pb);
    Scratch<A> s(pb.taps(), hd);
    auto finish = [&](int64_t row, const A* z, A* ob) {  // y row (and stats) from z
      T* yr = yp + row * hd;
      if (!pb.norm) {
        store_row<T, A>(hd, z, yr);
        return;
      }
      A mean, rstd;
      ln_stats<A>(hd, z, pb.eps, mean, rstd);
      sp[2 * row] = mean;
      sp[2 * row + 1] = rstd;
      if constexpr (std::is_same<T, A>::value) {
        ln_apply<A>(hd, z, mean, rstd, nw, nb, yr);
      } else {
        ln_apply<A>(hd, z, mean, rstd, nw, nb, ob);
        store_row<T, A>(hd, ob, yr);
      }
    };
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t bh = u / tl.per_plane, tile = u % tl.per_plane;
      const T* xbh = xp + (bh / pb.nh) * pb.sxb + (bh % pb.nh) * pb.sxh;
      for (int o = 0; tile == 0 && o < pb.c; ++o) {
        load_strided_row<T, A>(hd, xbh + o * pb.sxl, pb.sxd, s.z0.data());
        finish(bh * Lo + o, s.z0.data(), s.b0.data());
      }
      const Tiling::Box bx = tl.box(tile);
      sg.fill(pb, xbh, bh, bx);
      const int64_t step = sg.w_dense() ? pb.sw * hd : -1;
      for (int ot = bx.t0; ot < bx.t1; ++ot) {
        const int64_t line = bh * Lo + pb.c + (static_cast<int64_t>(ot) * pb.Ho + bx.h) * pb.Wo;
        walk_line(
            bx.w0, bx.w1, 1, pair, step,
            [&](int ow) { return sg.taps(pb, ot, bx.h, ow, wt, s.w.data(), s.r0.data()); },
            [&](int n, int64_t off, int ow) {
              tap_sum<A>(hd, n, s.w.data(), s.r0.data(), off, s.z0.data());
              finish(line + ow, s.z0.data(), s.b0.data());
            },
            [&](int n, int64_t off0, int64_t off1, int ow) {
              tap_sum2<A>(hd, n, s.w.data(), s.r0.data(), off0, off1, s.z0.data(), s.z1.data());
              finish(line + ow, s.z0.data(), s.b0.data());
              finish(line + ow + 1, s.z1.data(), s.b1.data());
            });
      }
    }
  });
}

// The fixed partition of the backward's reductions: tasks of `units_per_task` consecutive tiles (flat over
// (b, h, tile)), at most 256 tasks; it depends on the problem only, so the sums do not change with the thread count.
inline int64_t units_per_task(int64_t units) { return std::max<int64_t>(1, (units + 255) / 256); }

// Backward phase 1 (see the top): dz rows into dzp, the task's partial sums into part = [dw | dnw | dnb].
template <typename T, typename A>
void bwd_dz_partials(const Problem& pb, const at::Tensor& dy, const at::Tensor& stats, A* dzp, A* pp, int64_t P,
                     int64_t ntask, int64_t per_task, const Tiling& tl) {
  const int64_t hd = pb.hd, Lo = pb.Lo, taps = pb.taps(), units = pb.B * pb.nh * tl.per_plane;
  const T* xp = pb.x.data_ptr<T>();
  const A* wt = pb.wt.data_ptr<A>();
  const A* nw = pb.norm ? pb.nw.data_ptr<A>() : nullptr;
  const A* sp = pb.norm ? stats.data_ptr<A>() : nullptr;
  const T* dyp = dy.data_ptr<T>();
  const int64_t sdb = dy.stride(0), sdh = dy.stride(1), sdl = dy.stride(2), sdd = dy.stride(3);
  const std::vector<char> pair = pairable(pb.fwd[2]);
  at::parallel_for(0, ntask, 1, [&](int64_t t0, int64_t t1) {
    Stage<A> sg(pb);
    Scratch<A> s(static_cast<int>(taps), hd);
    std::vector<A> gb(hd);
    for (int64_t task = t0; task < t1; ++task) {
      A* dwp = pp + task * P;
      A* dnwp = dwp + taps * hd;
      A* dnbp = dnwp + hd;
      std::fill(dwp, dwp + P, A(0));
      for (int64_t u = task * per_task; u < std::min(units, (task + 1) * per_task); ++u) {
        const int64_t bh = u / tl.per_plane, tile = u % tl.per_plane, b = bh / pb.nh, h = bh % pb.nh;
        const T* xbh = xp + b * pb.sxb + h * pb.sxh;
        const T* dybh = dyp + b * sdb + h * sdh;
        // dz of output row o from its z (norm) and dy
        auto dz_row = [&](int64_t o, const A* z, A* db) {
          const int64_t row = bh * Lo + o;
          A* dz = dzp + row * hd;
          if (!pb.norm) {
            load_strided_row<T, A>(hd, dybh + o * sdl, sdd, dz);
            return dz;
          }
          load_strided_row<T, A>(hd, dybh + o * sdl, sdd, db);
          ln_backward<A>(hd, z, db, nw, sp[2 * row], sp[2 * row + 1], gb.data(), dz, dnwp, dnbp);
          return dz;
        };
        for (int o = 0; tile == 0 && o < pb.c; ++o) {
          load_strided_row<T, A>(hd, xbh + o * pb.sxl, pb.sxd, s.z0.data());
          dz_row(o, s.z0.data(), s.b0.data());
        }
        const Tiling::Box bx = tl.box(tile);
        sg.fill(pb, xbh, bh, bx);
        // a run of w neighbours with the same taps: tap lists built once, its rows' x shifted by `step`
        const int64_t step = sg.w_dense() ? pb.sw * hd : -1;
        for (int ot = bx.t0; ot < bx.t1; ++ot) {
          const int64_t line = pb.c + (static_cast<int64_t>(ot) * pb.Ho + bx.h) * pb.Wo;
          const A* dzline = dzp + (bh * Lo + line) * hd;  // the dz rows of this grid line, consecutive in w
          for (int u = bx.w0; u < bx.w1;) {
            int e = u + 1;
            while (step >= 0 && e < bx.w1 && pair[e - 1]) ++e;
            const int64_t st = step >= 0 ? step : 0;
            const int n = sg.taps(pb, ot, bx.h, u, wt, s.w.data(), s.r0.data());
            int k = u;
            for (; k + 1 < e; k += 2) {
              if (pb.norm)
                tap_sum2<A>(hd, n, s.w.data(), s.r0.data(), (k - u) * st, (k + 1 - u) * st, s.z0.data(),
                            s.z1.data());
              dz_row(line + k, s.z0.data(), s.b0.data());
              dz_row(line + k + 1, s.z1.data(), s.b1.data());
            }
            if (k < e) {
              if (pb.norm) tap_sum<A>(hd, n, s.w.data(), s.r0.data(), (k - u) * st, s.z0.data());
              dz_row(line + k, s.z0.data(), s.b0.data());
            }
            // dw[tap] += dz * x over the run's rows
            for (int j = 0; j < n; ++j) s.acc[j] = dwp + (s.w[j] - wt);
            add_products_run<A>(hd, n, s.acc.data(), s.r0.data(), st, dzline + u * hd, hd, e - u);
            u = e;
          }
        }
      }
    }
  });
}

template <typename T, typename A>
void bwd_typed(const Problem& pb, const at::Tensor& dy, const at::Tensor& stats, const Grads& g) {
  const int64_t hd = pb.hd, Lo = pb.Lo, taps = pb.taps();
  const A* wt = pb.wt.data_ptr<A>();
  const auto acc_opts = pb.wt.options();

  // phase 1: dz rows (B*nh*Lo, hd) and the per-task partial sums [dw (taps, hd) | dnw (hd) | dnb (hd)]
  at::Tensor dzt = at::empty({pb.rows(), hd}, acc_opts);
  A* dzp = dzt.data_ptr<A>();
  const Tiling out(pb.To, pb.Ho, pb.Wo, tile_w<A>(hd));
  const int64_t units = pb.B * pb.nh * out.per_plane, per_task = units_per_task(units);
  const int64_t ntask = (units + per_task - 1) / per_task;
  const int64_t P = taps * hd + (pb.norm ? 2 * hd : 0);
  at::Tensor part = at::empty({ntask, P}, acc_opts);
  A* pp = part.data_ptr<A>();
  bwd_dz_partials<T, A>(pb, dy, stats, dzp, pp, P, ntask, per_task, out);

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
  const Tiling in(pb.T, pb.H, pb.W, tile_w<A>(hd));
  // inputs w and w + sw with equal taps are read by the same outputs shifted by one: walk w in sw classes
  const int ps = static_cast<int>(pb.sw);
  const std::vector<char> pair = pairable(pb.bwd[2], ps);
  const int64_t step = hd;
  at::parallel_for(0, pb.B * pb.nh * in.per_plane, 1, [&](int64_t u0, int64_t u1) {
    Scratch<A> s(static_cast<int>(taps), hd);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t bh = u / in.per_plane, tile = u % in.per_plane;
      const A* dzbh = dzp + bh * Lo * hd;
      T* dxbh = dxp + bh * L * hd;
      for (int n = 0; tile == 0 && n < pb.c; ++n) store_row<T, A>(hd, dzbh + n * hd, dxbh + n * hd);
      const Tiling::Box bx = in.box(tile);
      for (int it = bx.t0; it < bx.t1; ++it) {
        T* line = dxbh + (pb.c + (static_cast<int64_t>(it) * pb.H + bx.h) * pb.W) * hd;
        walk_line(
            bx.w0, bx.w1, ps, pair, step,
            [&](int iw) { return taps_of_input<A>(pb, it, bx.h, iw, wt, dzbh, s.w.data(), s.r0.data()); },
            [&](int n, int64_t off, int iw) {
              T* dx0 = line + iw * hd;
              if constexpr (std::is_same<T, A>::value) {  // straight into dx
                tap_sum<A>(hd, n, s.w.data(), s.r0.data(), off, dx0);
              } else {
                tap_sum<A>(hd, n, s.w.data(), s.r0.data(), off, s.z0.data());
                store_row<T, A>(hd, s.z0.data(), dx0);
              }
            },
            [&](int n, int64_t off0, int64_t off1, int iw) {
              T* dx0 = line + iw * hd;
              if constexpr (std::is_same<T, A>::value) {
                tap_sum2<A>(hd, n, s.w.data(), s.r0.data(), off0, off1, dx0, dx0 + ps * hd);
              } else {
                tap_sum2<A>(hd, n, s.w.data(), s.r0.data(), off0, off1, s.z0.data(), s.z1.data());
                store_row<T, A>(hd, s.z0.data(), dx0);
                store_row<T, A>(hd, s.z1.data(), dx0 + ps * hd);
              }
            });
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

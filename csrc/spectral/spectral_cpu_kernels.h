// Spectral-filter CPU kernels (fxkernels/ops/spectral/README.md, "Backend contract"). Included once per ISA
// variant (spectral_cpu.cpp: baseline, spectral_cpu_avx2.cpp: AVX2+FMA); everything here has internal linkage,
// so the variants never mix.
//
// Work unit: a block of NB consecutive flat positions p = h * W + w of one (b, c) plane (NB = two 32-byte
// vectors of the accumulation type A: 16 fp32 / 8 fp64 columns). Each block gathers its x (dy) columns and filter
// values through their strides into small local buffers in A, and writes only its own output columns.
//   fast path   the real DFT of the block as small GEMMs with dense coefficient matrices (4 x 2-vector register
//               tiles): P = Ana x, Z = F P (complex_mul), y = Syn Z (+ residual); backward G = Syn^T dy,
//               dF from G and Ana x (filter_grad), dx = Ana^T (F^T G) (spectrum_grad).
//   emulation   (fxkernels._C._set_cpu_emulate_threads(n > 0), a test hook) the CUDA kernels' per-column code
//               of spectral_math.h on vectors of columns: the CPU tests run the device math.
// Parallel over blocks with at::parallel_for; each output element belongs to one block and every sum runs in a
// fixed order, so results are deterministic and independent of the thread count; no atomics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/cpu_vec.h"

#include "common/cuda_emulation.h"
#include "spectral/spectral.h"
#include "spectral/spectral_math.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace spectral {
namespace {

// Lane offsets of one block: element offset of position p0 + l (clamped to the last valid lane) in a tensor
// with strides (sh, sw) over (H, W).
template <int L>
struct Lanes {
  int64_t p0 = 0;
  int n = 0;  // valid lanes
  int64_t h[L], w[L];
  Lanes(int64_t p0_, int n_, int64_t W) : p0(p0_), n(n_) {
    int64_t hh = p0 / W, ww = p0 - hh * W;  // one division, then step along the row (a division per lane cost
    for (int l = 0; l < L; ++l) {           // more than the DFT itself)
      h[l] = hh;
      w[l] = ww;
      if (l + 1 < n && ++ww == W) {
        ww = 0;
        ++hh;
      }
    }
  }
  void offsets(const Strides& s, int64_t* off) const {
    for (int l = 0; l < L; ++l) off[l] = h[l] * s.h + w[l] * s.w;
  }
  // The valid lanes sit at consecutive addresses of a tensor with strides s (then gathers are plain copies).
  bool unit(const Strides& s, int64_t W) const { return s.w == 1 && (h[n - 1] == h[0] || s.h == W); }
};

// Element offset of (plane bc, position p) in a tensor with strides s.
inline int64_t element_offset(const Problem& pb, const Strides& s, int64_t bc, int64_t p) {
  const int64_t h = p / pb.W;
  return (bc / pb.C) * s.b + (bc % pb.C) * s.c + h * s.h + (p - h * pb.W) * s.w;
}

// Where the thread's next tile of NT positions starts, relative to the tile (bc, p0), in a tensor with strides s:
// the next run of the plane, or the start of the next plane (0 after the last tile).
struct NextTile {
  int64_t bc = -1, p0 = 0;
  NextTile(const Problem& pb, int64_t bc_, int64_t p0_, int NT) {
    const int64_t HW = pb.H * pb.W;
    bc = bc_;
    p0 = p0_ + NT;
    if (p0 >= HW) {
      ++bc;
      p0 = 0;
    }
    if (bc >= pb.B * pb.C) bc = -1;
  }
  int64_t ahead(const Problem& pb, const Strides& s, int64_t bc0, int64_t p00) const {
    return bc < 0 ? 0 : element_offset(pb, s, bc, p0) - element_offset(pb, s, bc0, p00);
  }
};

// buf[i * ld + l] = base[i * step + off[l]] in A, for i < n_i and the n valid lanes l < n; lanes n..nz-1 are zeroed.
// With unit-stride lanes and ahead != 0, each row's copy is preceded by a prefetch of the same row of the thread's
// next tile, which starts `ahead` elements further (a tile reads dozens of short row runs at once, which the
// hardware prefetchers follow poorly: this took the forward from 8.5 to 6.4 ms at MTSTWN's first shape).
// `unit`: the lanes are at consecutive addresses (Lanes::unit): plain copies.
template <int L, typename T, typename A>
inline void gather(const T* base, int64_t step, const int64_t* off, bool unit, int n_i, A* buf, int n, int ld = L,
                   int64_t ahead = 0, int nz = L) {
  for (int i = 0; i < n_i; ++i) {
    A* dst = buf + i * ld;
    if (unit) {
      const T* src = base + i * step + off[0];
      if (ahead != 0)
        for (int o = 0; o < int(sizeof(T)) * L; o += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(src + ahead) + o);
      if constexpr (std::is_same<T, A>::value) {
        std::memcpy(dst, src, sizeof(A) * n);  // vector moves (a scalar loop here was the bottleneck)
      } else {
        for (int l = 0; l < n; ++l) dst[l] = to_acc<A>(src[l]);
      }
    } else {
      for (int l = 0; l < n; ++l) dst[l] = to_acc<A>(base[i * step + off[l]]);
    }
    for (int l = n; l < nz; ++l) dst[l] = A(0);
  }
}

// Rows r < n_rows of the (b, c) plane of a canonical tensor (x, dy, residual: rows are time steps) at the lanes
// of a tile -> buf (see gather: ld = L, lanes n..nz-1 zeroed, `ahead` for the prefetch of the next tile).
template <int L, typename T, typename A>
inline void gather_plane(const Problem& pb, const at::Tensor& t, const Strides& s, int64_t bc, const Lanes<L>& ln,
                         int n_rows, A* buf, int64_t ahead = 0, int nz = L) {
  int64_t off[L];
  ln.offsets(s, off);
  gather<L>(t.data_ptr<T>() + (bc / pb.C) * s.b + (bc % pb.C) * s.c, s.t, off, ln.unit(s, pb.W), n_rows, buf, ln.n, L,
            ahead, nz);
}

// The filter of a tile: fr[k * L + l], fi[k * L + l] = filt[b, c, k, p0 + l, 0 / 1] for k < M.
template <int L, typename T, typename A>
inline void gather_filter(const Problem& pb, int64_t bc, const Lanes<L>& ln, A* fr, A* fi, int64_t ahead = 0,
                          int nz = L) {
  int64_t off[L];
  ln.offsets(pb.sf, off);
  const T* fp = pb.filt.data_ptr<T>() + (bc / pb.C) * pb.sf.b + (bc % pb.C) * pb.sf.c;
  const bool unit = ln.unit(pb.sf, pb.W);
  gather<L>(fp, pb.sf.t, off, unit, pb.M, fr, ln.n, L, ahead, nz);
  gather<L>(fp + pb.sf.ri, pb.sf.t, off, unit, pb.M, fi, ln.n, L, ahead, nz);
}

// out[t * HW + p0 + l] = v[l] for the valid lanes (contiguous (T, H*W) plane of y / dx).
template <int L, typename T, typename A>
inline void store_plane(T* out, int64_t HW, int t, const Lanes<L>& ln, const A* v) {
  T* o = out + t * HW + ln.p0;
  if constexpr (std::is_same<T, A>::value) {
    std::memcpy(o, v, sizeof(A) * ln.n);
  } else {
    for (int l = 0; l < ln.n; ++l) o[l] = from_acc<T>(v[l]);
  }
}

// dst[off[l]] = v[l] for the n valid lanes (a plain copy for unit-stride lanes, see Lanes::unit).
template <int L, typename A>
inline void scatter_row(A* dst, const int64_t* off, bool unit, int n, const A* v) {
  if (unit) {
    std::memcpy(dst + off[0], v, sizeof(A) * n);
  } else {
    for (int l = 0; l < n; ++l) dst[off[l]] = v[l];
  }
}

template <typename T, typename A, int KMAX>
void fwd_columns(const Problem& pb, const Twiddles<A>& tw, int64_t bc, int64_t p0, int n, T* y) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  const int Tn = pb.T, M = pb.M;
  const int64_t HW = pb.H * pb.W;
  const Lanes<L> ln(p0, n, pb.W);
  alignas(32) A xb[kMaxT * L], fb[2 * KMAX * L];

  gather_plane<L, T>(pb, pb.x, pb.sx, bc, ln, Tn, xb);
  gather_filter<L, T>(pb, bc, ln, fb, fb + KMAX * L);  // real parts (k, l), then the imaginary parts

  V xr[KMAX], xi[KMAX];
  analysis<KMAX, V, A>([&](int t) { return vload<V>(xb + t * L); }, Tn, M, 0, tw.c, tw.s, xr, xi);
  for (int k = 0; k < M; ++k)
    apply_filter<V, A>(k, Tn, tw.inv_t, vload<V>(fb + k * L), vload<V>(fb + (KMAX + k) * L), xr[k], xi[k]);

  alignas(32) A rb[kMaxT * L];
  const bool has_res = pb.residual.defined();
  if (has_res) {
    gather_plane<L, T>(pb, pb.residual, pb.sr, bc, ln, Tn, rb);
  }
  T* yp = y + bc * Tn * HW;
  for (int t = 0; t < Tn; ++t) {
    V v = synthesis<KMAX, V, A>(t, Tn, M, tw.c, tw.s, xr, xi);
    if (has_res) v += vload<V>(rb + t * L);
    alignas(32) A tmp[L];
    vstore<V>(tmp, v);
    store_plane<L>(yp, HW, t, ln, tmp);
  }
}

template <typename T, typename A, int KMAX>
void bwd_columns(const Problem& pb, const Twiddles<A>& tw, int64_t bc, int64_t p0, int n, T* dx, A* dfilt,
                 const Strides& sdf) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  const int Tn = pb.T, M = pb.M;
  const int64_t HW = pb.H * pb.W, b = bc / pb.C, c = bc % pb.C;
  const Lanes<L> ln(p0, n, pb.W);
  int64_t off[L];
  alignas(32) A db[kMaxT * L], fb[2 * KMAX * L];

  gather_plane<L, T>(pb, pb.dy, pb.sdy, bc, ln, Tn, db);
  gather_filter<L, T>(pb, bc, ln, fb, fb + KMAX * L);

  // G = w_k analysis(dy)
  V gr[KMAX], gi[KMAX];
  analysis<KMAX, V, A>([&](int t) { return vload<V>(db + t * L); }, Tn, M, 0, tw.c, tw.s, gr, gi);
  for (int k = 0; k < M; ++k) {
    const A w = onesided_weight<A>(k, Tn, tw.inv_t);
    gr[k] *= w;
    gi[k] *= w;
  }
  if (dfilt != nullptr) {
    alignas(32) A xb[kMaxT * L];
    gather_plane<L, T>(pb, pb.x, pb.sx, bc, ln, Tn, xb);
    A* dp = dfilt + b * sdf.b + c * sdf.c;
    ln.offsets(sdf, off);
    const bool unit = ln.unit(sdf, pb.W);
    // the CUDA kernel's schedule: x's spectrum recomputed KC frequencies at a time (analysis from k0 > 0)
    constexpr int KC = KMAX < spectrum_chunk<A>() ? KMAX : spectrum_chunk<A>();
    for (int k0 = 0; k0 < M; k0 += KC) {
      V xr[KC], xi[KC];
      analysis<KC, V, A>([&](int t) { return vload<V>(xb + t * L); }, Tn, M, k0, tw.c, tw.s, xr, xi);
      for (int kk = 0; kk < KC && k0 + kk < M; ++kk) {
        const int k = k0 + kk;
        V dfr, dfi;
        filter_grad<V>(gr[k], gi[k], xr[kk], xi[kk], dfr, dfi);
        alignas(32) A r[L], i[L];
        vstore<V>(r, dfr);
        vstore<V>(i, dfi);
        scatter_row<L>(dp + k * sdf.t, off, unit, ln.n, r);
        scatter_row<L>(dp + k * sdf.t + sdf.ri, off, unit, ln.n, i);
      }
    }
  }
  if (dx != nullptr) {
    for (int k = 0; k < M; ++k) {
      spectrum_grad<V>(vload<V>(fb + k * L), vload<V>(fb + (KMAX + k) * L), gr[k], gi[k]);
      real_bin(k, Tn, gi[k]);
    }
    T* xp = dx + bc * Tn * HW;
    for (int t = 0; t < Tn; ++t) {
      alignas(32) A tmp[L];
      vstore<V>(tmp, synthesis<KMAX, V, A>(t, Tn, M, tw.c, tw.s, gr, gi));
      store_plane<L>(xp, HW, t, ln, tmp);
    }
  }
}

// ------------------------------------------------------------------------------------------- GEMM fast path
constexpr int kMR = 4;  // output rows of a register tile
constexpr int kNV = 2;  // vectors of columns of a register-tile chunk

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

// The real DFT of a block as small GEMMs on "folded" columns, which halves the multiply-adds: with
// c[k(T-t)] = c[kt] and s[k(T-t)] = -s[kt],
//   u[0] = x[0],  u[t] = x[t] + x[T-t],  v[t-1] = x[t] - x[T-t]  (1 <= t <= nv),  u[T/2] = x[T/2] (even T)
//   Xr[k] = sum_{t < nu} c[kt] u[t],      Xi[k] = -sum_{t=1..nv} s[kt] v[t-1]
// with nu = T/2 + 1 and nv = (T-1)/2 (nu + nv = T); the synthesis y[t] = A[t] + B[t] has a symmetric part
// A[t] = sum_k w_k Zr[k] c[kt] and an antisymmetric one B[t] = -sum_k w_k Zi[k] s[kt], so it is computed for
// t < nu (A) and 1 <= t <= nv (B) and unfolded: y[t] = A[t] + B[t], y[T-t] = A[t] - B[t].
// Coefficients from the same twiddles as the per-column math, as GEMM operands coef[k * IP + i] (zero padding):
//   ca[t][k] = c[kt], sa[t-1][k] = -s[kt]                    (analysis: P = coef^T u; IP = MP)
//   caw, saw: the same times w_k                               (G = w analysis(dy))
//   cs[k][t] = w_k c[kt], ss[k][t-1] = -w_k s[kt]              (synthesis of y; IP = nuP / nvP)
//   cs1, ss1: the same without w_k                             (dx = synthesis of dX)
template <typename A>
struct DftMats {
  int T = 1, M = 1, MP = 4, nu = 1, nv = 0, nuP = 4, nvP = 4;
  std::vector<A> ca, sa, caw, saw, cs, ss, cs1, ss1;
  explicit DftMats(int T_) : T(T_) {
    const Twiddles<A> tw = make_twiddles<A>(T);
    M = num_freqs(T);
    MP = round_up(M, kMR);
    nu = T / 2 + 1;
    nv = (T - 1) / 2;
    nuP = round_up(nu, kMR);
    nvP = round_up(std::max(nv, 1), kMR);
    for (auto* m : {&ca, &caw}) m->assign(size_t(nu) * MP, A(0));
    for (auto* m : {&sa, &saw}) m->assign(size_t(std::max(nv, 1)) * MP, A(0));
    for (auto* m : {&cs, &cs1}) m->assign(size_t(M) * nuP, A(0));
    for (auto* m : {&ss, &ss1}) m->assign(size_t(M) * nvP, A(0));
    for (int k = 0; k < M; ++k) {
      const A w = onesided_weight<A>(k, T, tw.inv_t);
      for (int t = 0; t < nu; ++t) {
        const A cv = tw.c[(k * t) % T];
        ca[t * MP + k] = cs1[k * nuP + t] = cv;
        caw[t * MP + k] = cs[k * nuP + t] = w * cv;
      }
      for (int t = 1; t <= nv; ++t) {
        const A sv = -tw.s[(k * t) % T];
        sa[(t - 1) * MP + k] = ss1[k * nvP + t - 1] = sv;
        saw[(t - 1) * MP + k] = ss[k * nvP + t - 1] = w * sv;
      }
    }
  }
};

// out[i * ld + col] = sum_{k < K} coef[k * IP + i] * in[k * ld + col] for i < IP (a multiple of kMR) and the first
// nch chunks of NB = kNV L columns: kMR x kNV register tiles, one broadcast coefficient per row and step. K = 0
// gives zeros.
template <typename V, typename A>
inline void small_gemm(const A* coef, int IP, int K, const A* in, A* out, int ld, int nch) {
  constexpr int L = Vec<A>::L, NB = kNV * L;
  for (int ch = 0; ch < nch; ++ch)
    for (int i0 = 0; i0 < IP; i0 += kMR) {
      V acc[kMR][kNV];
      for (int i = 0; i < kMR; ++i)
        for (int v = 0; v < kNV; ++v) acc[i][v] = V{};
      for (int k = 0; k < K; ++k) {
        V b[kNV];
        for (int v = 0; v < kNV; ++v) b[v] = vload<V>(in + k * ld + ch * NB + v * L);
        const A* a = coef + k * IP + i0;
        for (int i = 0; i < kMR; ++i) {
          const V av = V{} + a[i];
          for (int v = 0; v < kNV; ++v) acc[i][v] += av * b[v];
        }
      }
      for (int i = 0; i < kMR; ++i)
        for (int v = 0; v < kNV; ++v) vstore<V>(out + (i0 + i) * ld + ch * NB + v * L, acc[i][v]);
    }
}

// Columns of a GEMM tile: kTileChunks register-tile chunks, so every gathered row is a 512-byte run (fp32).
constexpr int kTileChunks = 8;
template <typename A>
constexpr int tile_cols() {
  return kTileChunks * kNV * Vec<A>::L;
}

// Per-thread scratch of one tile (rows of NT columns), reused across tiles and calls.
template <typename A>
struct Scratch {
  static constexpr int NT = tile_cols<A>();
  static constexpr int kRows = kMaxT + kMR;  // the most rows any buffer needs (T, 2 * MP, nuP + nvP <= kMaxT + 8)
  alignas(64) A io[kRows * NT];          // gathered x / dy, then the unfolded output
  alignas(64) A uv[(kRows + kMR) * NT];  // folded u (nu rows) then v (nv rows); the synthesis A then B rows
  alignas(64) A pr[kRows * NT], pi[kRows * NT];  // spectrum (MP rows each)
  alignas(64) A fr[kMaxM * NT], fi[kMaxM * NT];  // filter
  alignas(64) A xr[kRows * NT], xi[kRows * NT];  // spectrum of x (backward)
  alignas(64) A aux[kRows * NT];                 // residual / x columns
};
template <typename A>
Scratch<A>& scratch() {
  static thread_local Scratch<A> s;
  return s;
}

// u, v of the folded columns: in (T rows) -> u rows [0, nu) and v rows [nu, nu + nv) of uv, nc columns (a multiple
// of the vector length; explicit vectors: GCC's alias checks sent these loops to their scalar versions).
template <typename V, typename A>
inline void fold(const A* in, A* uv, int T, int nu, int nv, int ld, int nc) {
  constexpr int L = Vec<A>::L;
  std::memcpy(uv, in, sizeof(A) * nc);
  for (int t = 1; t <= nv; ++t)
    for (int l = 0; l < nc; l += L) {
      const V a = vload<V>(in + t * ld + l), b = vload<V>(in + (T - t) * ld + l);
      vstore<V>(uv + t * ld + l, a + b);
      vstore<V>(uv + (nu + t - 1) * ld + l, a - b);
    }
  if (T % 2 == 0 && T > 1) std::memcpy(uv + (T / 2) * ld, in + (T / 2) * ld, sizeof(A) * nc);
}

// out rows t < T from the synthesis parts (A rows [0, nu), B rows [nuP, nuP + nv) of ab), nc columns.
template <typename V, typename A>
inline void unfold(const A* ab, int nuP, int T, int nv, int ld, int nc, A* out) {
  constexpr int L = Vec<A>::L;
  std::memcpy(out, ab, sizeof(A) * nc);
  for (int t = 1; t <= nv; ++t)
    for (int l = 0; l < nc; l += L) {
      const V a = vload<V>(ab + t * ld + l), b = vload<V>(ab + (nuP + t - 1) * ld + l);
      vstore<V>(out + t * ld + l, a + b);
      vstore<V>(out + (T - t) * ld + l, a - b);
    }
  if (T % 2 == 0 && T > 1) std::memcpy(out + (T / 2) * ld, ab + (T / 2) * ld, sizeof(A) * nc);
}

// Imaginary-part rows of the real frequencies (DC, and Nyquist for even T) set to exactly 0 (real_bin).
template <typename A>
inline void zero_real_rows(const DftMats<A>& dm, A* im, int ld, int nc) {
  std::fill(im, im + nc, A(0));
  if (dm.T % 2 == 0 && dm.M > 1) std::fill(im + (dm.M - 1) * ld, im + (dm.M - 1) * ld + nc, A(0));
}

// Spectrum of the T gathered rows `in`: pr = Xr, pi = Xi (MP rows each) with coefficients (c, s) = (ca, sa) or
// the weighted (caw, saw); Xi is exactly 0 at DC / Nyquist.
template <typename V, typename A>
inline void analyze(const DftMats<A>& dm, const A* c, const A* s, const A* in, A* uv, A* pr, A* pi, int ld,
                    int nch, int nc) {
  fold<V, A>(in, uv, dm.T, dm.nu, dm.nv, ld, nc);
  small_gemm<V, A>(c, dm.MP, dm.nu, uv, pr, ld, nch);
  small_gemm<V, A>(s, dm.MP, dm.nv, uv + dm.nu * ld, pi, ld, nch);
  zero_real_rows(dm, pi, ld, nc);
}

// T output rows from the spectrum (zr, zi: M rows) with coefficients (cs, ss) or the unweighted (cs1, ss1); the
// imaginary parts at DC / Nyquist are ignored (set to 0 first).
template <typename V, typename A>
inline void synthesize(const DftMats<A>& dm, const A* c, const A* s, const A* zr, A* zi, A* ab, A* out, int ld,
                       int nch, int nc) {
  zero_real_rows(dm, zi, ld, nc);
  small_gemm<V, A>(c, dm.nuP, dm.M, zr, ab, ld, nch);
  small_gemm<V, A>(s, dm.nvP, dm.M, zi, ab + dm.nuP * ld, ld, nch);
  unfold<V, A>(ab, dm.nuP, dm.T, dm.nv, ld, nc, out);
}

// op(fr, fi, sr, si) in place on the spectrum rows (pr, pi) of the tile for the filter rows (fr, fi): k < M, the
// first nvec vectors of columns (the forward's complex product, the backward's spectrum gradient).
template <typename V, typename A, typename Op>
inline void with_filter(Scratch<A>& w, int M, int nvec, const Op& op) {
  constexpr int L = Vec<A>::L, NT = tile_cols<A>();
  for (int k = 0; k < M; ++k)
    for (int v = 0; v < nvec; ++v) {
      const int o = k * NT + v * L;
      V sr = vload<V>(w.pr + o), si = vload<V>(w.pi + o);
      op(vload<V>(w.fr + o), vload<V>(w.fi + o), sr, si);
      vstore<V>(w.pr + o, sr);
      vstore<V>(w.pi + o, si);
    }
}

template <typename T, typename A>
void fwd_gemm_block(const Problem& pb, const DftMats<A>& dm, Scratch<A>& w, int64_t bc, int64_t p0, int n, T* y) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L, NB = kNV * L, NT = tile_cols<A>();
  const int Tn = pb.T, M = pb.M, nch = (n + NB - 1) / NB, nc = nch * NB;
  const int64_t HW = pb.H * pb.W;
  const Lanes<NT> ln(p0, n, pb.W);
  const NextTile nt(pb, bc, p0, NT);

  gather_plane<NT, T>(pb, pb.x, pb.sx, bc, ln, Tn, w.io, nt.ahead(pb, pb.sx, bc, p0), nc);
  analyze<V, A>(dm, dm.ca.data(), dm.sa.data(), w.io, w.uv, w.pr, w.pi, NT, nch, nc);
  gather_filter<NT, T>(pb, bc, ln, w.fr, w.fi, nt.ahead(pb, pb.sf, bc, p0), nc);
  with_filter<V, A>(w, M, nch * kNV, [](const V& fr, const V& fi, V& zr, V& zi) { complex_mul<V>(fr, fi, zr, zi); });
  synthesize<V, A>(dm, dm.cs.data(), dm.ss.data(), w.pr, w.pi, w.uv, w.io, NT, nch, nc);
  if (pb.residual.defined()) {
    gather_plane<NT, T>(pb, pb.residual, pb.sr, bc, ln, Tn, w.aux, nt.ahead(pb, pb.sr, bc, p0), nc);
    for (int t = 0; t < Tn; ++t)
      for (int v = 0; v < nch * kNV; ++v) {
        A* o = w.io + t * NT + v * L;
        vstore<V>(o, vload<V>(o) + vload<V>(w.aux + t * NT + v * L));
      }
  }
  T* yp = y + bc * Tn * HW;
  for (int t = 0; t < Tn; ++t) store_plane<NT>(yp, HW, t, ln, w.io + t * NT);
}

template <typename T, typename A>
void bwd_gemm_block(const Problem& pb, const DftMats<A>& dm, Scratch<A>& w, int64_t bc, int64_t p0, int n, T* dx,
                    A* dfilt, const Strides& sdf) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L, NB = kNV * L, NT = tile_cols<A>();
  const int Tn = pb.T, M = pb.M, nch = (n + NB - 1) / NB, nc = nch * NB;
  const int64_t HW = pb.H * pb.W, b = bc / pb.C, c = bc % pb.C;
  const Lanes<NT> ln(p0, n, pb.W);
  const NextTile nt(pb, bc, p0, NT);
  int64_t off[NT];

  gather_plane<NT, T>(pb, pb.dy, pb.sdy, bc, ln, Tn, w.io, nt.ahead(pb, pb.sdy, bc, p0), nc);
  analyze<V, A>(dm, dm.caw.data(), dm.saw.data(), w.io, w.uv, w.pr, w.pi, NT, nch, nc);  // G = w analysis(dy)
  if (dfilt != nullptr) {
    gather_plane<NT, T>(pb, pb.x, pb.sx, bc, ln, Tn, w.aux, nt.ahead(pb, pb.sx, bc, p0), nc);
    analyze<V, A>(dm, dm.ca.data(), dm.sa.data(), w.aux, w.uv, w.xr, w.xi, NT, nch, nc);
    A* dp = dfilt + b * sdf.b + c * sdf.c;
    ln.offsets(sdf, off);
    const bool unit = ln.unit(sdf, pb.W);
    for (int k = 0; k < M; ++k) {
      alignas(32) A r[NT], i[NT];
      for (int v = 0; v < nch * kNV; ++v) {
        V dfr, dfi;
        const int o = k * NT + v * L;
        filter_grad<V>(vload<V>(w.pr + o), vload<V>(w.pi + o), vload<V>(w.xr + o), vload<V>(w.xi + o), dfr, dfi);
        vstore<V>(r + v * L, dfr);
        vstore<V>(i + v * L, dfi);
      }
      scatter_row<NT>(dp + k * sdf.t, off, unit, ln.n, r);
      scatter_row<NT>(dp + k * sdf.t + sdf.ri, off, unit, ln.n, i);
    }
  }
  if (dx != nullptr) {
    gather_filter<NT, T>(pb, bc, ln, w.fr, w.fi, nt.ahead(pb, pb.sf, bc, p0), nc);
    with_filter<V, A>(w, M, nch * kNV,
                      [](const V& fr, const V& fi, V& gr, V& gi) { spectrum_grad<V>(fr, fi, gr, gi); });
    synthesize<V, A>(dm, dm.cs1.data(), dm.ss1.data(), w.pr, w.pi, w.uv, w.io, NT, nch, nc);
    T* xp = dx + bc * Tn * HW;
    for (int t = 0; t < Tn; ++t) store_plane<NT>(xp, HW, t, ln, w.io + t * NT);
  }
}

// Runs fn(scratch, bc, p0, n) over every tile of the GEMM path, in parallel (the thread's scratch looked up once
// per chunk of tiles).
template <typename A, typename Fn>
void for_tiles(const Problem& pb, const Fn& fn) {
  constexpr int NT = tile_cols<A>();
  const int64_t HW = pb.H * pb.W, ntile = (HW + NT - 1) / NT;
  const int64_t grain = std::max<int64_t>(1, 65536 / (int64_t{pb.T} * pb.M * NT));
  at::parallel_for(0, pb.B * pb.C * ntile, grain, [&](int64_t lo, int64_t hi) {
    Scratch<A>& w = scratch<A>();
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t bc = i / ntile, p0 = (i % ntile) * NT;
      fn(w, bc, p0, static_cast<int>(std::min<int64_t>(NT, HW - p0)));
    }
  });
}

// Runs fn(bc, p0, n) over every block of L positions, in parallel.
template <int L, typename Fn>
void for_blocks(const Problem& pb, const Fn& fn) {
  const int64_t HW = pb.H * pb.W, nblk = (HW + L - 1) / L;
  const int64_t work_per_block = int64_t{pb.T} * pb.M * L;  // multiply-adds, roughly
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_block));
  at::parallel_for(0, pb.B * pb.C * nblk, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t bc = i / nblk, blk = i % nblk;
      const int64_t p0 = blk * L;
      fn(bc, p0, static_cast<int>(std::min<int64_t>(L, HW - p0)));
    }
  });
}

template <typename T, typename A, int KMAX>
void fwd_columns_typed(const Problem& pb, const at::Tensor& y) {
  const Twiddles<A> tw = make_twiddles<A>(pb.T);
  T* yp = y.data_ptr<T>();
  for_blocks<Vec<A>::L>(pb, [&](int64_t bc, int64_t p0, int n) { fwd_columns<T, A, KMAX>(pb, tw, bc, p0, n, yp); });
}

template <typename T, typename A, int KMAX>
void bwd_columns_typed(const Problem& pb, const Grads& g) {
  const Twiddles<A> tw = make_twiddles<A>(pb.T);
  T* dx = g.dx.defined() ? g.dx.data_ptr<T>() : nullptr;
  A* df = g.dfilt.defined() ? g.dfilt.data_ptr<A>() : nullptr;
  for_blocks<Vec<A>::L>(pb,
                        [&](int64_t bc, int64_t p0, int n) { bwd_columns<T, A, KMAX>(pb, tw, bc, p0, n, dx, df, g.sdf); });
}

template <typename T, typename A>
void fwd_typed(const Problem& pb, const at::Tensor& y) {
  if (cpu_emulate_threads() > 0) {  // test hook: the CUDA kernels' per-column math
    with_freq_class(pb.M, [&](auto K) { fwd_columns_typed<T, A, decltype(K)::value>(pb, y); });
    return;
  }
  const DftMats<A> dm(pb.T);
  T* yp = y.data_ptr<T>();
  for_tiles<A>(pb, [&](Scratch<A>& w, int64_t bc, int64_t p0, int n) { fwd_gemm_block<T, A>(pb, dm, w, bc, p0, n, yp); });
}

template <typename T, typename A>
void bwd_typed(const Problem& pb, const Grads& g) {
  if (cpu_emulate_threads() > 0) {
    with_freq_class(pb.M, [&](auto K) { bwd_columns_typed<T, A, decltype(K)::value>(pb, g); });
    return;
  }
  const DftMats<A> dm(pb.T);
  T* dx = g.dx.defined() ? g.dx.data_ptr<T>() : nullptr;
  A* df = g.dfilt.defined() ? g.dfilt.data_ptr<A>() : nullptr;
  for_tiles<A>(pb,
               [&](Scratch<A>& w, int64_t bc, int64_t p0, int n) { bwd_gemm_block<T, A>(pb, dm, w, bc, p0, n, dx, df, g.sdf); });
}

void cpu_fwd(const Problem& pb, const at::Tensor& y) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "spectral_fwd_cpu", [&] {
    fwd_typed<scalar_t, acc_t>(pb, y);
  });
}

void cpu_bwd(const Problem& pb, const Grads& g) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "spectral_bwd_cpu", [&] {
    bwd_typed<scalar_t, acc_t>(pb, g);
  });
}

CpuKernels make_cpu_kernels() { return CpuKernels{&cpu_fwd, &cpu_bwd}; }

}  // namespace
}  // namespace spectral
}  // namespace fxk

#pragma GCC diagnostic pop

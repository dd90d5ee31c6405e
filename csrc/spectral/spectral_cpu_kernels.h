// Spectral-filter CPU kernels (fxkernels/ops/spectral/README.md, "Backend contract"). Included once per ISA
// variant (spectral_cpu.cpp: baseline, spectral_cpu_avx2.cpp: AVX2+FMA); everything here has internal linkage,
// so the variants never mix. The per-column math is spectral_math.h, shared with the CUDA kernels.
//
// Work unit: a block of L columns (L = lanes of a 32-byte vector of the accumulation type A: 8 fp32 / 4 fp64)
// at consecutive flat positions p = h * W + w of one (b, c) plane. Each block gathers its x (dy) columns and
// filter values through their strides into small local buffers in A, runs the math on GCC vectors of L columns
// and writes its own output columns. Parallel over blocks with at::parallel_for; each output element belongs to
// one block and every sum runs in a fixed order, so results are deterministic and independent of the thread
// count; no atomics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "spectral/spectral.h"
#include "spectral/spectral_math.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
namespace spectral {
namespace {

template <typename A>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32)));
  static constexpr int L = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int L = 4;
};

template <typename V, typename A>
inline V vload(const A* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename A>
inline void vstore(A* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Lane offsets of one block: element offset of position p0 + l (clamped to the last valid lane) in a tensor
// with strides (sh, sw) over (H, W).
template <int L>
struct Lanes {
  int64_t p0 = 0;
  int n = 0;  // valid lanes
  int64_t h[L], w[L];
  Lanes(int64_t p0_, int n_, int64_t W) : p0(p0_), n(n_) {
    for (int l = 0; l < L; ++l) {
      const int64_t p = p0 + std::min(l, n - 1);
      h[l] = p / W;
      w[l] = p - h[l] * W;
    }
  }
  void offsets(const Strides& s, int64_t* off) const {
    for (int l = 0; l < L; ++l) off[l] = h[l] * s.h + w[l] * s.w;
  }
};

// buf[i * L + l] = base[i * step + off[l]] in A, for i < n_i.
template <int L, typename T, typename A>
inline void gather(const T* base, int64_t step, const int64_t* off, int n_i, A* buf) {
  for (int i = 0; i < n_i; ++i)
    for (int l = 0; l < L; ++l) buf[i * L + l] = to_acc<A>(base[i * step + off[l]]);
}

// out[t * HW + p0 + l] = v[l] for the valid lanes (contiguous (T, H*W) plane of y / dx).
template <int L, typename T, typename A>
inline void store_plane(T* out, int64_t HW, int t, const Lanes<L>& ln, const A* v) {
  T* o = out + t * HW + ln.p0;
  for (int l = 0; l < ln.n; ++l) o[l] = from_acc<T>(v[l]);
}

template <typename T, typename A, int KMAX>
void fwd_block(const Problem& pb, const Twiddles<A>& tw, int64_t bc, int64_t p0, int n, T* y) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  const int Tn = pb.T, M = pb.M;
  const int64_t HW = pb.H * pb.W, b = bc / pb.C, c = bc % pb.C;
  const Lanes<L> ln(p0, n, pb.W);
  int64_t off[L];
  alignas(32) A xb[kMaxT * L], fb[2 * KMAX * L];

  ln.offsets(pb.sx, off);
  gather<L>(pb.x.data_ptr<T>() + b * pb.sx.b + c * pb.sx.c, pb.sx.t, off, Tn, xb);
  ln.offsets(pb.sf, off);
  const T* fp = pb.filt.data_ptr<T>() + b * pb.sf.b + c * pb.sf.c;
  gather<L>(fp, pb.sf.t, off, M, fb);                  // real parts, (k, l)
  gather<L>(fp + pb.sf.ri, pb.sf.t, off, M, fb + KMAX * L);  // imaginary parts

  V xr[KMAX], xi[KMAX];
  analysis<KMAX, V, A>([&](int t) { return vload<V>(xb + t * L); }, Tn, M, 0, tw.c, tw.s, xr, xi);
  for (int k = 0; k < M; ++k)
    apply_filter<V, A>(k, Tn, tw.inv_t, vload<V>(fb + k * L), vload<V>(fb + (KMAX + k) * L), xr[k], xi[k]);

  alignas(32) A rb[kMaxT * L];
  const bool has_res = pb.residual.defined();
  if (has_res) {
    ln.offsets(pb.sr, off);
    gather<L>(pb.residual.data_ptr<T>() + b * pb.sr.b + c * pb.sr.c, pb.sr.t, off, Tn, rb);
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
void bwd_block(const Problem& pb, const Twiddles<A>& tw, int64_t bc, int64_t p0, int n, T* dx, A* dfilt) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::L;
  const int Tn = pb.T, M = pb.M;
  const int64_t HW = pb.H * pb.W, b = bc / pb.C, c = bc % pb.C;
  const Lanes<L> ln(p0, n, pb.W);
  int64_t off[L];
  alignas(32) A db[kMaxT * L], fb[2 * KMAX * L];

  ln.offsets(pb.sdy, off);
  gather<L>(pb.dy.data_ptr<T>() + b * pb.sdy.b + c * pb.sdy.c, pb.sdy.t, off, Tn, db);
  ln.offsets(pb.sf, off);
  const T* fp = pb.filt.data_ptr<T>() + b * pb.sf.b + c * pb.sf.c;
  gather<L>(fp, pb.sf.t, off, M, fb);
  gather<L>(fp + pb.sf.ri, pb.sf.t, off, M, fb + KMAX * L);

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
    ln.offsets(pb.sx, off);
    gather<L>(pb.x.data_ptr<T>() + b * pb.sx.b + c * pb.sx.c, pb.sx.t, off, Tn, xb);
    V xr[KMAX], xi[KMAX];
    analysis<KMAX, V, A>([&](int t) { return vload<V>(xb + t * L); }, Tn, M, 0, tw.c, tw.s, xr, xi);
    A* dp = dfilt + bc * M * HW * 2;  // (M, H*W, 2) plane of this (b, c)
    for (int k = 0; k < M; ++k) {
      V dfr, dfi;
      filter_grad<V>(gr[k], gi[k], xr[k], xi[k], dfr, dfi);
      alignas(32) A r[L], i[L];
      vstore<V>(r, dfr);
      vstore<V>(i, dfi);
      A* o = dp + (k * HW + ln.p0) * 2;
      for (int l = 0; l < ln.n; ++l) {
        o[2 * l] = r[l];
        o[2 * l + 1] = i[l];
      }
    }
  }
  if (dx != nullptr) {
    for (int k = 0; k < M; ++k) spectrum_grad<V>(vload<V>(fb + k * L), vload<V>(fb + (KMAX + k) * L), gr[k], gi[k]);
    T* xp = dx + bc * Tn * HW;
    for (int t = 0; t < Tn; ++t) {
      alignas(32) A tmp[L];
      vstore<V>(tmp, synthesis<KMAX, V, A>(t, Tn, M, tw.c, tw.s, gr, gi));
      store_plane<L>(xp, HW, t, ln, tmp);
    }
  }
}

// Runs fn(bc, p0, n) over every block, in parallel.
template <int L, typename Fn>
void for_blocks(const Problem& pb, const Fn& fn) {
  const int64_t HW = pb.H * pb.W, nblk = (HW + L - 1) / L;
  const int64_t work_per_block = int64_t{pb.T} * pb.M * L;
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
void fwd_typed(const Problem& pb, const at::Tensor& y) {
  const Twiddles<A> tw = make_twiddles<A>(pb.T);
  T* yp = y.data_ptr<T>();
  for_blocks<Vec<A>::L>(pb, [&](int64_t bc, int64_t p0, int n) { fwd_block<T, A, KMAX>(pb, tw, bc, p0, n, yp); });
}

template <typename T, typename A, int KMAX>
void bwd_typed(const Problem& pb, const Grads& g) {
  const Twiddles<A> tw = make_twiddles<A>(pb.T);
  T* dx = g.dx.defined() ? g.dx.data_ptr<T>() : nullptr;
  A* df = g.dfilt.defined() ? g.dfilt.data_ptr<A>() : nullptr;
  for_blocks<Vec<A>::L>(pb, [&](int64_t bc, int64_t p0, int n) { bwd_block<T, A, KMAX>(pb, tw, bc, p0, n, dx, df); });
}

void cpu_fwd(const Problem& pb, const at::Tensor& y) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "spectral_fwd_cpu", [&] {
    with_freq_class(pb.M, [&](auto K) { fwd_typed<scalar_t, acc_t, decltype(K)::value>(pb, y); });
  });
}

void cpu_bwd(const Problem& pb, const Grads& g) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "spectral_bwd_cpu", [&] {
    with_freq_class(pb.M, [&](auto K) { bwd_typed<scalar_t, acc_t, decltype(K)::value>(pb, g); });
  });
}

CpuKernels make_cpu_kernels() { return CpuKernels{&cpu_fwd, &cpu_bwd}; }

}  // namespace
}  // namespace spectral
}  // namespace fxk

#pragma GCC diagnostic pop

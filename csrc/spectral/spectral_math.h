// Spectral-filter math (fxkernels/ops/spectral/README.md "Math"), shared by the CPU and the CUDA kernels.
//
//   c[j] = cos(2 pi j / T), s[j] = sin(2 pi j / T), j = k t mod T,  M = T / 2 + 1
//   analysis   Pr[k] = sum_t v[t] c[kt],  Pi[k] = -sum_t v[t] s[kt]                 (the one-sided rfft of v)
//   synthesis  y[t]  = sum_k (Zr[k] c[kt] - Zi[k] s[kt])                           (the C2R sum, weights in Z)
//   filter     Z = w_k F X,  w_k = 1/T at DC and Nyquist, 2/T elsewhere
//
// Everything is FXK_HD and templated on the lane type V: one column per CUDA thread (V = A), a vector of columns
// per CPU iteration (V = a GCC vector of A), so the CPU tests run the device math. Loops over frequencies have
// compile-time bounds (KMAX, KC) and runtime guards k < M, so after unrolling every array index is a constant
// and the CUDA arrays live in registers.
#pragma once

#include <type_traits>

#include "common/common.h"

#if defined(__CUDA_ARCH__)
#define FXK_SPEC_UNROLL _Pragma("unroll")
#elif defined(__CUDACC__)
#define FXK_SPEC_UNROLL  // nvcc's host pass: the host copies of device code are never run
#else
#define FXK_SPEC_UNROLL _Pragma("GCC unroll 40")
#endif

namespace fxk {
namespace spectral {

constexpr int kMaxT = 64;                // longest time axis of the fused kernels
constexpr int kMaxM = kMaxT / 2 + 1;     // 33 frequencies

namespace {  // internal linkage: every TU (generic CPU, AVX2 CPU, CUDA) gets its own copy

FXK_HD_INLINE int num_freqs(int T) { return T / 2 + 1; }

// Smallest compile-time frequency bound KMAX in {4, 8, 16, 33} (T <= 7, 15, 31, 64) with KMAX >= M.
FXK_HD_INLINE int freq_class(int M) { return M <= 4 ? 4 : M <= 8 ? 8 : M <= 16 ? 16 : kMaxM; }

// One-sided weight of frequency k (w_k above) from inv_t = 1/T: the C2R transform counts every frequency but DC /
// Nyquist twice. (1/T comes from the host: an IEEE division is a subroutine call on the GPU.)
template <typename A>
FXK_HD_INLINE A onesided_weight(int k, int T, A inv_t) {
  return (k == 0 || 2 * k == T) ? inv_t : A(2) * inv_t;
}

// Whether frequency k is real for a real signal: DC and (even T) Nyquist, whose s[kt] are all exactly 0.
FXK_HD_INLINE bool real_freq(int k, int T) { return k == 0 || 2 * k == T; }

// The imaginary part of a real frequency is exactly 0, and the synthesis ignores it (as torch.fft's C2R
// transform): set it so, also when the data are not finite (the sums would give 0 * inf = NaN there).
template <typename V>
FXK_HD_INLINE void real_bin(int k, int T, V& im) {
  if (real_freq(k, T)) im = V{};
}

// Analysis of one column restricted to the KC frequencies k0 + kk (kk < KC, k0 + kk < M):
//   pr[kk] = sum_t v(t) c[(k0 + kk) t],  pi[kk] = -sum_t v(t) s[(k0 + kk) t]  (exactly 0 at DC / Nyquist).
template <int KC, typename V, typename A, typename Load>
FXK_HD_INLINE void analysis(const Load& load, int T, int M, int k0, const A* c, const A* s, V* pr, V* pi) {
  FXK_SPEC_UNROLL
  for (int kk = 0; kk < KC; ++kk) {
    pr[kk] = V{};
    pi[kk] = V{};
  }
  for (int t = 0; t < T; ++t) {
    const V v = load(t);
    int j = (k0 * t) % T;  // (k t) mod T, stepped by t as k increases (t < T: one subtraction wraps it)
    FXK_SPEC_UNROLL
    for (int kk = 0; kk < KC; ++kk) {
      if (k0 + kk < M) {
        pr[kk] += v * c[j];
        pi[kk] -= v * s[j];
      }
      j += t;
      if (j >= T) j -= T;
    }
  }
  FXK_SPEC_UNROLL
  for (int kk = 0; kk < KC; ++kk) real_bin(k0 + kk, T, pi[kk]);
}

// Synthesis of sample t from the KMAX-frequency arrays zr, zi (entries k >= M ignored). Four partial sums over
// k mod 4 (combined pairwise at the end) keep four independent multiply-add chains in flight.
template <int KMAX, typename V, typename A>
FXK_HD_INLINE V synthesis(int t, int T, int M, const A* c, const A* s, const V* zr, const V* zi) {
  V acc[4] = {V{}, V{}, V{}, V{}};
  int j = 0;
  FXK_SPEC_UNROLL
  for (int k = 0; k < KMAX; ++k) {
    if (k < M) acc[k % 4] += zr[k] * c[j] - zi[k] * s[j];
    j += t;
    if (j >= T) j -= T;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// Complex product in place: (xr, xi) = F X.
template <typename V>
FXK_HD_INLINE void complex_mul(const V& fr, const V& fi, V& xr, V& xi) {
  const V zr = fr * xr - fi * xi;
  const V zi = fr * xi + fi * xr;
  xr = zr;
  xi = zi;
}

// Forward filter of frequency k in place: (xr, xi) = w_k F X (xi = 0 at DC / Nyquist: ignored by the synthesis).
template <typename V, typename A>
FXK_HD_INLINE void apply_filter(int k, int T, A inv_t, const V& fr, const V& fi, V& xr, V& xi) {
  complex_mul<V>(fr, fi, xr, xi);
  const A w = onesided_weight<A>(k, T, inv_t);
  xr = xr * w;
  xi = xi * w;
  real_bin(k, T, xi);
}

// Backward of frequency k, with G = w_k analysis(dy) and X = analysis(x):
//   filter gradient  dFr = Gr Xr + Gi Xi,  dFi = Gi Xr - Gr Xi.
template <typename V>
FXK_HD_INLINE void filter_grad(const V& gr, const V& gi, const V& xr, const V& xi, V& dfr, V& dfi) {
  dfr = gr * xr + gi * xi;
  dfi = gi * xr - gr * xi;
}

//   spectrum gradient in place of G: dXr = Fr Gr + Fi Gi,  dXi = Fr Gi - Fi Gr (then dx = synthesis(dX), so
//   real_bin(k, T, dXi) follows at DC / Nyquist).
template <typename V>
FXK_HD_INLINE void spectrum_grad(const V& fr, const V& fi, V& gr, V& gi) {
  const V r = fr * gr + fi * gi;
  const V i = fr * gi - fi * gr;
  gr = r;
  gi = i;
}

// Frequencies of x's spectrum the backward recomputes at a time (CUDA registers: 2 per value in fp64), KC.
template <typename A>
constexpr int spectrum_chunk() {
  return sizeof(A) == 8 ? 4 : 8;
}

// Host: calls fn(std::integral_constant<int, KMAX>) for the frequency class of M (the kernels' template argument).
template <typename Fn>
inline void with_freq_class(int M, const Fn& fn) {
  switch (freq_class(M)) {
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 8: fn(std::integral_constant<int, 8>{}); break;
    case 16: fn(std::integral_constant<int, 16>{}); break;
    default: fn(std::integral_constant<int, kMaxM>{}); break;
  }
}

}  // namespace
}  // namespace spectral
}  // namespace fxk

// FCC math (fxkernels/ops/fcc/README.md), shared by the CPU and the CUDA kernels.
//
// Everything here is FXK_HD. Work is organised per (b, c) plane. A plane program (fcc_fwd_plane /
// fcc_bwd_plane) is a sequence of *steps*; each step is a lambda (begin, step) over independent work items
// (an output element, a row, a column...) and steps are separated by a barrier. The executor decides how a
// step runs:
//   CpuExec   f(0, 1)                                       one CPU thread per plane (fcc_cpu_kernels.h)
//   EmuExec   for t in [0, T): f(t, T)                      the CUDA schedule emulated on the CPU
//   GpuExec   f(threadIdx.x, blockDim.x); __syncthreads()   one block per plane (fcc_cuda.cu)
// Each step function has one generic per-item body (the one CUDA runs) and, for the CPU schedule
// (begin = 0, step = 1), a vectorised loop nest computing the same sums (namespace cpu below). EmuExec always
// takes the per-item bodies, so CPU tests with _C._set_cpu_emulate_threads(T) run the exact CUDA index math.
//
// All steps read/write a per-plane workspace of acc_t (CPU: thread-local buffer; CUDA: shared memory or a
// global slice). Plane matrices are row-major; "XT" means the transposed plane (W x H) stored row-major.
//
// One pass of length L on a plane, circulant Circ[i, m] = U[(m - i) % L], CircT = Circ^T:
//   forward   V: Out = Circ  * In            H: Out = In * CircT
//   backward  V: dIn = CircT * dOut          H: dIn = dOut * Circ
//             V: M  = dOut * InT  (L x L)    dU[s] = sum_i M[i, (i+s)%L]
//             H: MT = InT  * dOut (L x L)    dU[s] = sum_j MT[(j+s)%L, j]
//             dP = row sums (V) / column sums (H) of dIn; db = sum of dOut.
// Every GEMM C = A * B reads B with unit column stride (A may have any strides), which keeps the CPU inner
// loop contiguous over the output row (vectorised axpy) and the CUDA loads conflict-free across a warp.
// The fused backward needs the intermediate Z' = pass1(X') + b1 + P2 only as Z'^T, which is what the
// recompute produces directly from XT; the forward never saves it.
#pragma once

#include <cstring>

#include "common/common.h"
#include "fcc/fcc_params.h"

namespace fxk {
namespace fcc {

namespace {  // internal linkage: every TU (generic CPU, AVX2 CPU, CUDA) gets its own ISA-specific copy

#if !defined(__CUDACC__)
// ------------------------------------------------------------------------------------------------------
// CPU schedule (begin = 0, step = 1): the same sums as the per-item code below, in loops that vectorise.
// GCC vector extensions keep the GEMM accumulators in registers whatever the target ISA (SSE2 baseline,
// AVX2+FMA in fcc_cpu_avx2.cpp, AVX-512 in fcc_cpu_avx512.cpp). Never compiled by nvcc.
namespace cpu {

template <typename A, int VB>
struct VecT {
  typedef A type __attribute__((vector_size(VB)));
};

// Native vector width (bytes) and row blocking: RB rows x 2 vectors = 8 accumulators (16 vector registers of
// AVX2) or 16 (the 32 of AVX-512). FXK_CPU_VEC_BYTES is set by the TU that compiles this header for a wider ISA
// (fcc_cpu_avx2.cpp: 32, fcc_cpu_avx512.cpp: 64).
#ifndef FXK_CPU_VEC_BYTES
#if defined(__AVX__)
#define FXK_CPU_VEC_BYTES 32
#else
#define FXK_CPU_VEC_BYTES 16
#endif
#endif
constexpr int kVecBytes = FXK_CPU_VEC_BYTES;
constexpr int kRowBlock = kVecBytes >= 64 ? 8 : 4;

// C[RB rows, NV vectors of VB bytes] = A[RB x K] * B[K x (NV * VB bytes)]
template <typename A, int RB, int NV, int VB>
FXK_HD_INLINE void gemm_tile(int K, const A* FXK_RESTRICT a, int sam, int sak, const A* FXK_RESTRICT b, int ldb,
                             A* FXK_RESTRICT c, int ldc) {
  using V = typename VecT<A, VB>::type;
  constexpr int VL = VB / static_cast<int>(sizeof(A));
  V acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  for (int k = 0; k < K; ++k) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + k * ldb + v * VL, sizeof(V));
    for (int r = 0; r < RB; ++r) {
      const A av = a[r * sam + k * sak];
      for (int v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) std::memcpy(c + r * ldc + v * VL, &acc[r][v], sizeof(V));
}

template <typename A, int RB>
FXK_HD_INLINE void gemm_rows(int N, int K, const A* FXK_RESTRICT a, int sam, int sak, const A* FXK_RESTRICT b,
                             int ldb, A* FXK_RESTRICT c, int ldc) {
  constexpr int VL = kVecBytes / static_cast<int>(sizeof(A));
  constexpr int VL16 = 16 / static_cast<int>(sizeof(A));
  int j = 0;
  for (; j + 2 * VL <= N; j += 2 * VL) gemm_tile<A, RB, 2, kVecBytes>(K, a, sam, sak, b + j, ldb, c + j, ldc);
  if (j + VL <= N) {
    gemm_tile<A, RB, 1, kVecBytes>(K, a, sam, sak, b + j, ldb, c + j, ldc);
    j += VL;
  }
  if constexpr (kVecBytes > 32) {  // the narrower tails of 64-byte vectors: 32 bytes, then 16
    constexpr int VL32 = 32 / static_cast<int>(sizeof(A));
    if (j + VL32 <= N) {
      gemm_tile<A, RB, 1, 32>(K, a, sam, sak, b + j, ldb, c + j, ldc);
      j += VL32;
    }
  }
  if (VL16 < VL && j + VL16 <= N) {
    gemm_tile<A, RB, 1, 16>(K, a, sam, sak, b + j, ldb, c + j, ldc);
    j += VL16;
  }
  for (; j < N; ++j) {
    for (int r = 0; r < RB; ++r) {
      A acc = A(0);
      for (int k = 0; k < K; ++k) acc += a[r * sam + k * sak] * b[k * ldb + j];
      c[r * ldc + j] = acc;
    }
  }
}

template <typename A>
FXK_HD_INLINE void gemm(int M, int N, int K, const A* FXK_RESTRICT a, int sam, int sak, const A* FXK_RESTRICT b,
                        int ldb, A* FXK_RESTRICT c, int ldc) {
  int i = 0;
  for (; i + kRowBlock <= M; i += kRowBlock)
    gemm_rows<A, kRowBlock>(N, K, a + i * sam, sam, sak, b, ldb, c + i * ldc, ldc);
  if constexpr (kRowBlock > 4) {
    for (; i + 4 <= M; i += 4) gemm_rows<A, 4>(N, K, a + i * sam, sam, sak, b, ldb, c + i * ldc, ldc);
  }
  for (; i < M; ++i) gemm_rows<A, 1>(N, K, a + i * sam, sam, sak, b, ldb, c + i * ldc, ldc);
}

// Row 0 of the circulant, then every row is a rotation of row 0:
// Circ[i, m] = u[(m - i) % L] = row0[(m - i) % L] with row0 = u; CircT likewise with row0[k] = u[(-k) % L].
template <typename T, typename A>
FXK_HD_INLINE void build_circ(const T* FXK_RESTRICT u, int L, bool transposed, A* FXK_RESTRICT dst) {
  dst[0] = to_acc<A>(u[0]);
  for (int m = 1; m < L; ++m) dst[m] = to_acc<A>(u[transposed ? L - m : m]);
  for (int i = 1; i < L; ++i) {
    A* FXK_RESTRICT row = dst + i * L;
    for (int m = i; m < L; ++m) row[m] = dst[m - i];
    for (int m = 0; m < i; ++m) row[m] = dst[m - i + L];
  }
}

// out[s] = sum_i m[i*ra + ((i + s) % L)*ca]: eight independent accumulators (s0..s0+7) walk the rows.
template <typename A>
FXK_HD_INLINE void diag_sums(const A* FXK_RESTRICT m, int L, int ra, int ca, A* FXK_RESTRICT out) {
  constexpr int NB = 8;
  int s0 = 0;
  for (; s0 + NB <= L; s0 += NB) {
    A acc[NB];
    for (int t = 0; t < NB; ++t) acc[t] = A(0);
    for (int i = 0; i < L; ++i) {
      const A* FXK_RESTRICT base = m + i * ra;
      for (int t = 0; t < NB; ++t) {
        int r = i + s0 + t;  // < 2L
        r -= r >= L ? L : 0;
        acc[t] += base[r * ca];
      }
    }
    for (int t = 0; t < NB; ++t) out[s0 + t] = acc[t];
  }
  for (; s0 < L; ++s0) {
    A acc = A(0);
    int r = s0;
    for (int i = 0; i < L; ++i) {
      acc += m[i * ra + r * ca];
      r = (r + 1 == L) ? 0 : r + 1;
    }
    out[s0] = acc;
  }
}

template <typename A>
FXK_HD_INLINE A hsum(const typename VecT<A, kVecBytes>::type& v) {
  constexpr int VL = kVecBytes / static_cast<int>(sizeof(A));
  A s = A(0);
  for (int t = 0; t < VL; ++t) s += v[t];
  return s;
}

// out[r] = sum_q src[r*ld + q] (vector partial sums per row).
template <typename A>
FXK_HD_INLINE void row_sums(const A* FXK_RESTRICT src, int rows, int cols, int ld, A* FXK_RESTRICT out) {
  using V = typename VecT<A, kVecBytes>::type;
  constexpr int VL = kVecBytes / static_cast<int>(sizeof(A));
  for (int r = 0; r < rows; ++r) {
    const A* FXK_RESTRICT p = src + r * ld;
    V acc = V{};
    int q = 0;
    for (; q + VL <= cols; q += VL) {
      V v;
      std::memcpy(&v, p + q, sizeof(V));
      acc += v;
    }
    A tail = A(0);
    for (; q < cols; ++q) tail += p[q];
    out[r] = hsum<A>(acc) + tail;
  }
}

// out[q] = sum_r src[r*ld + q], vectorised over q.
template <typename A>
FXK_HD_INLINE void col_sums(const A* FXK_RESTRICT src, int rows, int cols, int ld, A* FXK_RESTRICT out) {
  for (int q = 0; q < cols; ++q) out[q] = A(0);
  for (int r = 0; r < rows; ++r)
    for (int q = 0; q < cols; ++q) out[q] += src[r * ld + q];
}

// z[r*ld + q] += bias + pos[by_row ? r : q]
template <typename T, typename A>
FXK_HD_INLINE void add_bias_pos(A* FXK_RESTRICT z, int rows, int cols, int ld, A bias, const T* FXK_RESTRICT pos,
                                bool by_row) {
  if (pos == nullptr || by_row) {
    for (int r = 0; r < rows; ++r) {
      const A add = bias + (pos != nullptr ? to_acc<A>(pos[r]) : A(0));
      A* FXK_RESTRICT row = z + r * ld;
      for (int q = 0; q < cols; ++q) row[q] += add;
    }
  } else {
    for (int r = 0; r < rows; ++r) {
      A* FXK_RESTRICT row = z + r * ld;
      for (int q = 0; q < cols; ++q) row[q] += bias + to_acc<A>(pos[q]);
    }
  }
}

// dst[i*ldi + j*ldj] = x[i*sh + j*sw] + pos[dir == V ? i : j]
template <typename T, typename A>
FXK_HD_INLINE void load_plane(const T* FXK_RESTRICT x, int64_t sh, int64_t sw, int H, int W,
                              const T* FXK_RESTRICT pos, int pos_dir, A* FXK_RESTRICT dst, int ldi, int ldj) {
  auto pv = [&](int k) { return pos != nullptr ? to_acc<A>(pos[k]) : A(0); };
  if (ldj == 1 && sw == 1) {  // row-major copy of rows with unit stride
    for (int i = 0; i < H; ++i) {
      const T* FXK_RESTRICT xr = x + i * sh;
      A* FXK_RESTRICT dr = dst + i * ldi;
      if (pos_dir == kDirV) {
        const A add = pv(i);
        for (int j = 0; j < W; ++j) dr[j] = to_acc<A>(xr[j]) + add;
      } else {
        for (int j = 0; j < W; ++j) dr[j] = to_acc<A>(xr[j]) + pv(j);
      }
    }
  } else if (ldi == 1 && sh == 1) {  // transposed write, unit-stride reads along H (e.g. x transposed)
    for (int j = 0; j < W; ++j) {
      const T* FXK_RESTRICT xc = x + j * sw;
      A* FXK_RESTRICT dc = dst + j * ldj;
      if (pos_dir == kDirH) {
        const A add = pv(j);
        for (int i = 0; i < H; ++i) dc[i] = to_acc<A>(xc[i]) + add;
      } else {
        for (int i = 0; i < H; ++i) dc[i] = to_acc<A>(xc[i]) + pv(i);
      }
    }
  } else {  // general strides (e.g. the transposed copy of a row-major plane)
    for (int i = 0; i < H; ++i) {
      const T* FXK_RESTRICT xr = x + i * sh;
      A* FXK_RESTRICT dr = dst + i * ldi;
      if (pos_dir == kDirV) {
        const A add = pv(i);
        for (int j = 0; j < W; ++j) dr[j * ldj] = to_acc<A>(xr[j * sw]) + add;
      } else {
        for (int j = 0; j < W; ++j) dr[j * ldj] = to_acc<A>(xr[j * sw]) + pv(j);
      }
    }
  }
}

}  // namespace cpu
#define FXK_FCC_CPU_FAST(begin, step) ((begin) == 0 && (step) == 1)
#else
#define FXK_FCC_CPU_FAST(begin, step) false
#endif

// ------------------------------------------------------------------------------------------------------
// Iterate the items e in [begin, rows*cols) with e = begin + k*step as (i, j) = (e / cols, e % cols).
// step == 1 (the CPU schedule) is a plain nested loop the compiler can vectorise; otherwise the
// decomposition is updated incrementally (one division per call).
template <typename F>
FXK_HD_INLINE void for_each_2d(int rows, int cols, int begin, int step, F&& f) {
  if (rows <= 0 || cols <= 0) return;
#ifndef __CUDA_ARCH__
  if (begin == 0 && step == 1) {
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) f(i, j);
    return;
  }
#endif
  const int n = rows * cols;
  if (begin >= n) return;
  int i = begin / cols, j = begin - (begin / cols) * cols;
  const int di = step / cols, dj = step - (step / cols) * cols;
  for (int e = begin; e < n; e += step) {
    f(i, j);
    i += di;
    j += dj;
    if (j >= cols) {
      j -= cols;
      ++i;
    }
  }
}

// dst[i*ldi + j*ldj] = x[i*sh + j*sw] + pos[dir == V ? i : j]   (the plane X' = X + P, optionally transposed)
template <typename T, typename A>
FXK_HD_INLINE void load_plane(const T* FXK_RESTRICT x, int64_t sh, int64_t sw, int H, int W,
                              const T* FXK_RESTRICT pos, int pos_dir, A* FXK_RESTRICT dst, int ldi, int ldj,
                              int begin, int step) {
#if !defined(__CUDACC__)
  if (FXK_FCC_CPU_FAST(begin, step)) {
    cpu::load_plane<T, A>(x, sh, sw, H, W, pos, pos_dir, dst, ldi, ldj);
    return;
  }
#endif
  if (pos != nullptr) {
    for_each_2d(H, W, begin, step, [&](int i, int j) {
      dst[i * ldi + j * ldj] = to_acc<A>(x[i * sh + j * sw]) + to_acc<A>(pos[pos_dir == kDirV ? i : j]);
    });
  } else {
    for_each_2d(H, W, begin, step,
                [&](int i, int j) { dst[i * ldi + j * ldj] = to_acc<A>(x[i * sh + j * sw]); });
  }
}

// dst[e] = src[e] (contiguous plane, converted to acc_t)
template <typename T, typename A>
FXK_HD_INLINE void load_flat(const T* FXK_RESTRICT src, int n, A* FXK_RESTRICT dst, int begin, int step) {
  for (int e = begin; e < n; e += step) dst[e] = to_acc<A>(src[e]);
}

// dst[e] = src[e] + bias (contiguous plane, converted back to T)
template <typename T, typename A>
FXK_HD_INLINE void store_flat(const A* FXK_RESTRICT src, int n, A bias, T* FXK_RESTRICT dst, int begin,
                              int step) {
  for (int e = begin; e < n; e += step) dst[e] = from_acc<T>(src[e] + bias);
}

// Circulant of u (length L): Circ[i, m] = u[(m - i) % L]; transposed: CircT[i, m] = u[(i - m) % L].
template <typename T, typename A>
FXK_HD_INLINE void build_circ(const T* FXK_RESTRICT u, int L, bool transposed, A* FXK_RESTRICT dst, int begin,
                              int step) {
#if !defined(__CUDACC__)
  if (FXK_FCC_CPU_FAST(begin, step)) {
    cpu::build_circ<T, A>(u, L, transposed, dst);
    return;
  }
#endif
  for_each_2d(L, L, begin, step, [&](int i, int m) {
    int d = transposed ? i - m : m - i;
    d += d < 0 ? L : 0;
    dst[i * L + m] = to_acc<A>(u[d]);
  });
}

// C[M x N] (row-major, ldc) = A[M x K] (strides sam, sak) * B[K x N] (row stride ldb, unit column stride).
// Work item: one output element (CUDA / emulation); the CPU schedule (begin=0, step=1) runs the same sums in
// the same k order as register-blocked row-wise axpy (cpu::gemm).
template <typename A>
FXK_HD_INLINE void gemm(int M, int N, int K, const A* FXK_RESTRICT a, int sam, int sak, const A* FXK_RESTRICT b,
                        int ldb, A* FXK_RESTRICT c, int ldc, int begin, int step) {
#if !defined(__CUDACC__)
  if (FXK_FCC_CPU_FAST(begin, step)) {
    cpu::gemm<A>(M, N, K, a, sam, sak, b, ldb, c, ldc);
    return;
  }
#endif
  for_each_2d(M, N, begin, step, [&](int i, int j) {
    const A* FXK_RESTRICT arow = a + i * sam;
    const A* FXK_RESTRICT bcol = b + j;
    A acc = A(0);
    FXK_DEVICE_UNROLL(4)
    for (int k = 0; k < K; ++k) acc += arow[k * sak] * bcol[k * ldb];
    c[i * ldc + j] = acc;
  });
}

// z[r*ld + q] += bias + pos[by_row ? r : q]   over a rows x cols matrix (pos may be null)
template <typename T, typename A>
FXK_HD_INLINE void add_bias_pos(A* FXK_RESTRICT z, int rows, int cols, int ld, A bias, const T* FXK_RESTRICT pos,
                                bool by_row, int begin, int step) {
#if !defined(__CUDACC__)
  if (FXK_FCC_CPU_FAST(begin, step)) {
    cpu::add_bias_pos<T, A>(z, rows, cols, ld, bias, pos, by_row);
    return;
  }
#endif
  if (pos != nullptr) {
    for_each_2d(rows, cols, begin, step,
                [&](int r, int q) { z[r * ld + q] += bias + to_acc<A>(pos[by_row ? r : q]); });
  } else {
    for_each_2d(rows, cols, begin, step, [&](int r, int q) { z[r * ld + q] += bias; });
  }
}

// out[s] = sum_i m[i*ra + ((i + s) % L)*ca]   (circulant-diagonal sums: dU of one pass)
template <typename A>
FXK_HD_INLINE void diag_sums(const A* FXK_RESTRICT m, int L, int ra, int ca, A* FXK_RESTRICT out, int begin,
                             int step) {
#if !defined(__CUDACC__)
  if (FXK_FCC_CPU_FAST(begin, step)) {
    cpu::diag_sums<A>(m, L, ra, ca, out);
    return;
  }
#endif
  for (int s = begin; s < L; s += step) {
    A acc = A(0);
    int r = s;
    for (int i = 0; i < L; ++i) {
      acc += m[i * ra + r * ca];
      r = (r + 1 == L) ? 0 : r + 1;
    }
    out[s] = acc;
  }
}

// out[r] = sum_q src[r*ld + q]
template <typename A>
FXK_HD_INLINE void row_sums(const A* FXK_RESTRICT src, int rows, int cols, int ld, A* FXK_RESTRICT out, int begin,
                            int step) {
#if !defined(__CUDACC__)
  if (FXK_FCC_CPU_FAST(begin, step)) {
    cpu::row_sums<A>(src, rows, cols, ld, out);
    return;
  }
#endif
  for (int r = begin; r < rows; r += step) {
    A acc = A(0);
    for (int q = 0; q < cols; ++q) acc += src[r * ld + q];
    out[r] = acc;
  }
}

// out[q] = sum_r src[r*ld + q]
template <typename A>
FXK_HD_INLINE void col_sums(const A* FXK_RESTRICT src, int rows, int cols, int ld, A* FXK_RESTRICT out, int begin,
                            int step) {
#if !defined(__CUDACC__)
  if (FXK_FCC_CPU_FAST(begin, step)) {
    cpu::col_sums<A>(src, rows, cols, ld, out);
    return;
  }
#endif
  for (int q = begin; q < cols; q += step) {
    A acc = A(0);
    for (int r = 0; r < rows; ++r) acc += src[r * ld + q];
    out[q] = acc;
  }
}

// ------------------------------------------------------------------------------------------------------
// Pass-level steps.

// Forward of one pass on a row-major H x W plane: out = Circ * in (V) or in * CircT (H).
// `circ` must hold Circ for V and CircT for H (build_circ(..., transposed = dir == kDirH)).
template <typename A>
FXK_HD_INLINE void pass_fwd(int dir, const A* in, const A* circ, int H, int W, A* out, int begin, int step) {
  if (dir == kDirV)
    gemm<A>(H, W, H, circ, H, 1, in, W, out, W, begin, step);
  else
    gemm<A>(H, W, W, in, W, 1, circ, W, out, W, begin, step);
}

// Forward of one pass producing the transposed output from the transposed input (W x H row-major):
// V: OutT = InT * CircT,  H: OutT = Circ * InT.  `circ` holds CircT for V and Circ for H (backward build).
template <typename A>
FXK_HD_INLINE void pass_fwd_t(int dir, const A* in_t, const A* circ, int H, int W, A* out_t, int begin, int step) {
  if (dir == kDirV)
    gemm<A>(W, H, H, in_t, H, 1, circ, H, out_t, H, begin, step);
  else
    gemm<A>(W, H, W, circ, W, 1, in_t, H, out_t, H, begin, step);
}

// Backward GEMMs of one pass: dIn (H x W) and the correlation matrix m (V: M, H: MT; L x L).
// `circ` holds CircT for V and Circ for H (build_circ(..., transposed = dir == kDirV)).
template <typename A>
FXK_HD_INLINE void pass_bwd(int dir, const A* in_t, const A* dout, const A* circ, int H, int W, A* din, A* m,
                            int begin, int step) {
  if (dir == kDirV) {
    gemm<A>(H, W, H, circ, H, 1, dout, W, din, W, begin, step);  // dIn = CircT * dOut
    gemm<A>(H, H, W, dout, W, 1, in_t, H, m, H, begin, step);    // M = dOut * InT
  } else {
    gemm<A>(H, W, W, dout, W, 1, circ, W, din, W, begin, step);  // dIn = dOut * Circ
    gemm<A>(W, W, H, in_t, H, 1, dout, W, m, W, begin, step);    // MT = InT * dOut
  }
}

// Reductions of one pass for plane p: dU (diagonal sums of m), dP (sums of dIn along the other axis),
// db (sum of the row sums of dOut held in `rowsum`, done by work item 0).
template <typename A>
FXK_HD_INLINE void pass_bwd_reduce(int dir, const A* m, const A* din, const A* rowsum, int H, int W, int64_t p,
                                   A* gw, A* gp, A* gb, int begin, int step) {
  const int L = dir == kDirV ? H : W;
  if (dir == kDirV)
    diag_sums<A>(m, L, L, 1, gw + p * L, begin, step);
  else
    diag_sums<A>(m, L, 1, L, gw + p * L, begin, step);
  if (gp != nullptr) {
    if (dir == kDirV)
      row_sums<A>(din, H, W, W, gp + p * L, begin, step);
    else
      col_sums<A>(din, H, W, W, gp + p * L, begin, step);
  }
  if (gb != nullptr && begin == 0) {
    A acc = A(0);
    for (int r = 0; r < H; ++r) acc += rowsum[r];
    gb[p] = acc;
  }
}

// ------------------------------------------------------------------------------------------------------
// Plane programs. `ex(f)` runs one step (see the executors at the top).

// `circ_ready`: the workspace already holds this channel's circulants (the CPU walks planes channel-major and
// builds them once per channel; the CUDA kernels pass false).
template <typename T, typename A, typename Exec>
FXK_HD_INLINE void fcc_fwd_plane(const FccParams<T, A>& P, int64_t p, A* ws, const Exec& ex, bool circ_ready) {
  const int H = P.H, W = P.W, hw = H * W;
  const int64_t b = p / P.C, c = p - (p / P.C) * P.C;
  const bool two = mode_fused(P.mode);
  const int d1 = mode_dir1(P.mode), d2 = two ? mode_dir2(P.mode) : d1;
  const int L1 = P.L1, L2 = P.L2;
  const FwdLayout lay = fwd_layout(H, W, L1, two ? L2 : 0);
  A* bx = ws + lay.x;
  A* bz = ws + lay.z;
  A* c1 = ws + lay.c1;
  A* c2 = ws + lay.c2;
  const T* xp = P.x + b * P.sxb + c * P.sxc;
  const T* u1 = P.w1 + c * L1;
  const T* u2 = two ? P.w2 + c * L2 : nullptr;
  const T* pos1 = P.p1 ? P.p1 + c * L1 : nullptr;
  const T* pos2 = (two && P.p2) ? P.p2 + c * L2 : nullptr;
  const A bias1 = P.b1 ? to_acc<A>(P.b1[c]) : A(0);
  const A bias2 = (two && P.b2) ? to_acc<A>(P.b2[c]) : A(0);
  T* out = P.out + p * hw;

  ex([&](int bg, int st) {
    load_plane<T, A>(xp, P.sxh, P.sxw, H, W, pos1, d1, bx, W, 1, bg, st);
    if (!circ_ready) {
      build_circ<T, A>(u1, L1, d1 == kDirH, c1, bg, st);
      if (two) build_circ<T, A>(u2, L2, d2 == kDirH, c2, bg, st);
    }
  });
  ex([&](int bg, int st) { pass_fwd<A>(d1, bx, c1, H, W, bz, bg, st); });
  if (!two) {
    ex([&](int bg, int st) { store_flat<T, A>(bz, hw, bias1, out, bg, st); });
    return;
  }
  ex([&](int bg, int st) { add_bias_pos<T, A>(bz, H, W, W, bias1, pos2, d2 == kDirV, bg, st); });
  ex([&](int bg, int st) { pass_fwd<A>(d2, bz, c2, H, W, bx, bg, st); });
  ex([&](int bg, int st) { store_flat<T, A>(bx, hw, bias2, out, bg, st); });
}

template <typename T, typename A, typename Exec>
FXK_HD_INLINE void fcc_bwd_plane(const FccParams<T, A>& P, int64_t p, A* ws, const Exec& ex, bool circ_ready) {
  const int H = P.H, W = P.W, hw = H * W;
  const int64_t b = p / P.C, c = p - (p / P.C) * P.C;
  const bool two = mode_fused(P.mode);
  const int d1 = mode_dir1(P.mode), d2 = two ? mode_dir2(P.mode) : d1;
  const int L1 = P.L1, L2 = P.L2;
  const BwdLayout lay = bwd_layout(H, W, L1, two ? L2 : 0);
  A* bxt = ws + lay.xt;
  A* bzt = ws + lay.zt;
  A* ba = ws + lay.a;
  A* bb = ws + lay.b;
  A* c1 = ws + lay.c1;
  A* c2 = ws + lay.c2;
  A* bm = ws + lay.m;
  A* rs = ws + lay.scratch;
  const T* xp = P.x + b * P.sxb + c * P.sxc;
  const T* dyp = P.dy + p * hw;
  const T* u1 = P.w1 + c * L1;
  const T* u2 = two ? P.w2 + c * L2 : nullptr;
  const T* pos1 = P.p1 ? P.p1 + c * L1 : nullptr;
  const T* pos2 = (two && P.p2) ? P.p2 + c * L2 : nullptr;
  const A bias1 = P.b1 ? to_acc<A>(P.b1[c]) : A(0);
  T* dx = P.out + p * hw;

  // X'^T (W x H), dY, circulants in their backward orientation.
  ex([&](int bg, int st) {
    load_plane<T, A>(xp, P.sxh, P.sxw, H, W, pos1, d1, bxt, 1, H, bg, st);
    load_flat<T, A>(dyp, hw, ba, bg, st);
    if (!circ_ready) {
      build_circ<T, A>(u1, L1, d1 == kDirV, c1, bg, st);
      if (two) build_circ<T, A>(u2, L2, d2 == kDirV, c2, bg, st);
    }
  });
  A* dout = ba;
  A* din = bb;
  if (two) {
    // Z'^T = pass1(X')^T + b1 + P2, recomputed (never saved by the forward).
    ex([&](int bg, int st) { pass_fwd_t<A>(d1, bxt, c1, H, W, bzt, bg, st); });
    ex([&](int bg, int st) { add_bias_pos<T, A>(bzt, W, H, H, bias1, pos2, d2 == kDirH, bg, st); });
    // Second pass backward: dZ' (= dZ) into bb.
    ex([&](int bg, int st) {
      pass_bwd<A>(d2, bzt, ba, c2, H, W, bb, bm, bg, st);
      row_sums<A>(ba, H, W, W, rs, bg, st);
    });
    ex([&](int bg, int st) { pass_bwd_reduce<A>(d2, bm, bb, rs, H, W, p, P.gw2, P.gp2, P.gb2, bg, st); });
    dout = bb;
    din = ba;
  }
  // First pass backward: dX' into din.
  ex([&](int bg, int st) {
    pass_bwd<A>(d1, bxt, dout, c1, H, W, din, bm, bg, st);
    row_sums<A>(dout, H, W, W, rs, bg, st);
  });
  ex([&](int bg, int st) {
    pass_bwd_reduce<A>(d1, bm, din, rs, H, W, p, P.gw1, P.gp1, P.gb1, bg, st);
    store_flat<T, A>(din, hw, A(0), dx, bg, st);
  });
}

// ------------------------------------------------------------------------------------------------------
// Host executors (the CUDA one lives in fcc_cuda.cu).
struct CpuExec {
  template <typename F>
  FXK_HD_INLINE void operator()(F&& f) const {
    f(0, 1);
  }
};

// Runs every step as `threads` CUDA threads would, one after the other (a barrier between steps is implied).
struct EmuExec {
  int threads;
  template <typename F>
  FXK_HD_INLINE void operator()(F&& f) const {
    for (int t = 0; t < threads; ++t) f(t, threads);
  }
};

}  // namespace
}  // namespace fcc
}  // namespace fxk

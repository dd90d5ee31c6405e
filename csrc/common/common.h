// Shared by host (C++) and device (CUDA) code: no ATen operators here, only types and tiny helpers.
#pragma once

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__CUDACC__)
#define FXK_HD __host__ __device__
#ifndef FXK_HD_INLINE
#define FXK_HD_INLINE __host__ __device__ __forceinline__
#endif
#else
#define FXK_HD
#ifndef FXK_HD_INLINE  // (a profiling build may predefine it as noinline)
#define FXK_HD_INLINE inline __attribute__((always_inline))
#endif
#endif

// Bounded unrolling of device loops (keeps register use in check); nothing on the host.
#if defined(__CUDA_ARCH__)
#define FXK_PRAGMA_(x) _Pragma(#x)
#define FXK_DEVICE_UNROLL(n) FXK_PRAGMA_(unroll n)
#else
#define FXK_DEVICE_UNROLL(n)
#endif

// Pointer aliasing hint, spelled the same for g++ and nvcc.
#define FXK_RESTRICT __restrict__

// Stringify a macro value that may contain commas (e.g. an arch list "8.0,9.0").
#define FXK_STR_(...) #__VA_ARGS__
#define FXK_STR(...) FXK_STR_(__VA_ARGS__)

namespace fxk {

// Accumulation type: fp32 for fp16 / bf16 / fp32, fp64 for fp64.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_type = typename AccType<T>::type;

// Explicit conversions (c10::Half / c10::BFloat16 convert through float on host and device).
template <typename A, typename T>
FXK_HD_INLINE A to_acc(T v) {
  return static_cast<A>(static_cast<acc_type<T>>(v));
}
template <typename T, typename A>
FXK_HD_INLINE T from_acc(A v) {
  return static_cast<T>(static_cast<acc_type<T>>(v));
}

// Non-negative modulo: wrap(a, n) in [0, n) for any a (n > 0).
FXK_HD_INLINE int wrap(int a, int n) {
  const int r = a % n;
  return r < 0 ? r + n : r;
}
FXK_HD_INLINE int64_t wrap(int64_t a, int64_t n) {
  const int64_t r = a % n;
  return r < 0 ? r + n : r;
}

FXK_HD_INLINE int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace fxk

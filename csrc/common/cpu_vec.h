// 32-byte vectors of the CPU kernels (GCC vector extensions: native ymm in the AVX2 builds, pairs of xmm in the
// baseline) and their unaligned loads / stores. Internal linkage: every TU (baseline, AVX2) gets its own copy, so
// code compiled for AVX2 can never be what the linker picks for a baseline caller.
#pragma once

#include <cstring>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fxk {
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
inline __attribute__((always_inline)) V vload(const A* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename A>
inline __attribute__((always_inline)) void vstore(A* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

}  // namespace
}  // namespace fxk

#pragma GCC diagnostic pop

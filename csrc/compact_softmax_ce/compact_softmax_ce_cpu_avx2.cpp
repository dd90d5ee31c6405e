// AVX2+FMA build of the compact softmax cross-entropy CPU kernels (selected at run time on CPUs that have it, see
// compact_softmax_ce_cpu.cpp; it also serves the avx512 slot). Every header that is not compact CE kernel code is
// included first, so only compact_softmax_ce_cpu_kernels.h / common/cpu_vexp.h code is compiled for AVX2; that
// code has internal linkage, so nothing AVX2 can leak into the baseline paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "common/common.h"
#include "common/cpu_isa.h"
#include "compact_softmax_ce/compact_softmax_ce.h"

#if FXK_CPU_HAVE_AVX2

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FXK_CPU_VEC_BYTES 32
#include "compact_softmax_ce/compact_softmax_ce_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace compact_softmax_ce {
CpuKernels cpu_kernels_avx2() { return make_cpu_kernels(); }
}  // namespace compact_softmax_ce
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX2

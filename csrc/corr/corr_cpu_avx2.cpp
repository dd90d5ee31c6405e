// AVX2+FMA build of the spatial-correlation CPU kernels (selected at run time on CPUs that have it, see
// corr_cpu.cpp). Every header that is not corr kernel code is included first, so only corr_math.h /
// corr_cpu_kernels.h code is compiled for AVX2; that code has internal linkage, so nothing AVX2 can leak into the
// baseline paths.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "corr/corr.h"
#include "common/cpu_isa.h"

#if FXK_CPU_HAVE_AVX2

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FXK_CORR_FMA 1
#include "corr/corr_cpu_kernels.h"
#undef FXK_CORR_FMA
#pragma GCC pop_options

namespace fxk {
namespace corr {
CpuKernels cpu_kernels_avx2() { return make_cpu_kernels(); }
}  // namespace corr
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX2

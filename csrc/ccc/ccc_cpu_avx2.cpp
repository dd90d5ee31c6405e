// AVX2+FMA build of the CCC CPU kernels (selected at run time on CPUs that have it, see ccc_cpu.cpp).
// Every header that is not CCC kernel code is included first, so only ccc_math.h / ccc_cpu_kernels.h code is
// compiled for AVX2; that code has internal linkage, so nothing AVX2 can leak into the baseline paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ccc/ccc.h"
#include "common/checks.h"
#include "common/cpu_isa.h"

#if FXK_CPU_HAVE_AVX2

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "ccc/ccc_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace ccc {
CpuKernels cpu_kernels_avx2() { return make_cpu_kernels(); }
}  // namespace ccc
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX2

// AVX2+FMA build of the FCC CPU kernels (selected at run time on CPUs that have it, see fcc_cpu.cpp).
// Every header that is not FCC kernel code is included first, so only fcc_math.h / fcc_cpu_kernels.h code is
// compiled for AVX2; that code has internal linkage, so nothing AVX2 can leak into the baseline paths.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>

#include "common/checks.h"
#include "common/common.h"
#include "common/cpu_isa.h"
#include "common/cuda_emulation.h"
#include "fcc/fcc.h"
#include "fcc/fcc_params.h"

#if FXK_CPU_HAVE_AVX2

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FXK_CPU_VEC_BYTES 32
#include "fcc/fcc_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace fcc {
CpuKernels cpu_kernels_avx2() { return make_cpu_kernels(); }
}  // namespace fcc
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX2

// AVX2+FMA build of the spectral-filter CPU kernels (selected at run time on CPUs that have it, see
// spectral_cpu.cpp). Every header that is not spectral kernel code is included first, so only spectral_math.h /
// spectral_cpu_kernels.h code is compiled for AVX2; that code has internal linkage, so nothing AVX2 can leak into
// the baseline paths.
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vector arguments of internal functions

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "common/cpu_isa.h"
#include "common/cuda_emulation.h"
#include "spectral/spectral.h"

#if FXK_CPU_HAVE_AVX2

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "spectral/spectral_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace spectral {
CpuKernels cpu_kernels_avx2() { return make_cpu_kernels(); }
}  // namespace spectral
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX2

// AVX2+FMA build of the dynamic-image CPU kernels (selected at run time on CPUs that have it, see
// dynamic_image_cpu.cpp). Every header that is not dynamic-image kernel code is included first, so only
// dynamic_image_cpu_kernels.h code is compiled for AVX2; that code has internal linkage, so nothing AVX2 can leak
// into the baseline paths.
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vector arguments of internal functions

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "common/cpu_isa.h"
#include "dynamic_image/dynamic_image.h"

#if FXK_CPU_HAVE_AVX2

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "dynamic_image/dynamic_image_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace dynamic_image {
CpuKernels cpu_kernels_avx2() { return make_cpu_kernels(); }
}  // namespace dynamic_image
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX2

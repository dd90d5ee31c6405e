// AVX2+FMA build of the attention_pool CPU kernels (selected at run time on CPUs that have it, see pool_cpu.cpp).
// Every header that is not pool kernel code is included first, so only pool_cpu_kernels.h code is compiled for
// AVX2; that code has internal linkage, so nothing AVX2 can leak into the baseline paths.
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vector arguments of internal functions

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "attention/pool.h"
#include "common/checks.h"
#include "common/cpu_isa.h"

#if FXK_CPU_HAVE_AVX2

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FXK_APOOL_FMA 1
#include "attention/pool_cpu_kernels.h"
#undef FXK_APOOL_FMA
#pragma GCC pop_options

namespace fxk {
namespace attn_pool {
CpuKernels cpu_kernels_avx2() { return make_cpu_kernels(); }
}  // namespace attn_pool
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX2

// AVX-512 (F/BW/VL/DQ + FMA) build of the attention CPU kernels: 64-byte vectors, 8-row micro-tiles (32 vector
// registers). Selected at run time on CPUs that have it (see attention_cpu.cpp for when "auto" takes it). Every
// header that is not attention kernel code is included first, so only attention_cpu_*.h code is compiled
// for AVX-512; that code has internal linkage, so nothing AVX-512 can leak into the baseline paths.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "attention/attention_host.h"
#include "common/checks.h"
#include "common/common.h"
#include "common/cpu_isa.h"

#if FXK_CPU_HAVE_AVX512

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")
#define FXK_CPU_VEC_BYTES 64
#include "attention/attention_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace attn {
CpuKernels cpu_kernels_avx512() { return make_cpu_kernels(); }
}  // namespace attn
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX512

// AVX-512 (F/BW/VL/DQ + FMA) build of the FCC CPU kernels: 64-byte vectors, 8-row GEMM blocks (32 vector
// registers). Selected at run time on CPUs that have it (see fcc_cpu.cpp for when "auto" takes it).
// Every header that is not FCC kernel code is included first, so only fcc_math.h / fcc_cpu_kernels.h code is
// compiled for AVX-512; that code has internal linkage, so nothing AVX-512 can leak into the baseline paths.
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

#if FXK_CPU_HAVE_AVX512

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")
#define FXK_CPU_VEC_BYTES 64
#include "fcc/fcc_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace fcc {
CpuKernels cpu_kernels_avx512() { return make_cpu_kernels(); }
}  // namespace fcc
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX512

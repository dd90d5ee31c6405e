// Test hook (slot "avx512-emulated" of common/cpu_isa.h): the AVX-512 build's source of the attention CPU kernels
// (64-byte vectors, 8-row micro-tiles) compiled for AVX2, where GCC splits each 64-byte vector operation in two.
// The CPU tests run it against the reference, so the AVX-512 variant's tile and tail logic is tested on machines
// without AVX-512 as well. Never selected by "auto".
#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors without AVX-512: internal functions only

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
#pragma GCC target("avx2,fma")
#define FXK_CPU_VEC_BYTES 64
#include "attention/attention_cpu_kernels.h"
#pragma GCC pop_options

namespace fxk {
namespace attn {
CpuKernels cpu_kernels_avx512_emulated() { return make_cpu_kernels(); }
}  // namespace attn
}  // namespace fxk

#endif  // FXK_CPU_HAVE_AVX512

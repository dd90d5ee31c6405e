// CPU driver of the FCC plane programs. Included once per ISA variant (fcc_cpu.cpp: baseline,
// fcc_cpu_avx2.cpp: AVX2+FMA, fcc_cpu_avx512.cpp: AVX-512, fcc_cpu_avx512_emulated.cpp: the AVX-512 source
// compiled for AVX2); everything here has internal linkage, so the variants never mix.
#pragma once

#include <algorithm>
#include <atomic>
#include <vector>

#include <ATen/Parallel.h>

#include "common/cuda_emulation.h"
#include "fcc/fcc.h"
#include "fcc/fcc_math.h"

namespace fxk {
namespace fcc {
namespace {

template <typename T, typename A, bool kBackward>
void run_planes(const Problem& pb, const FccParams<T, A>& P) {
  const int64_t planes = pb.planes();
  if (planes == 0 || pb.H == 0 || pb.W == 0) return;
  const int64_t ws_elems = plane_workspace_elems(kBackward, pb.H, pb.W, pb.L1, pb.L2);
  const int emu = cpu_emulate_threads();
  const int64_t B = pb.B, C = pb.C;
  // Dynamic schedule: each worker grabs chunks of the channel-major plane order (q = c * B + b, so
  // consecutive planes share the channel's circulants) from a shared counter. Unlike a static split this
  // keeps all threads busy when one core is slowed down (shared machines, SMT siblings, ...).
  const int64_t work = static_cast<int64_t>(pb.H) * pb.W * (pb.L1 + pb.L2 + 1);  // ~ MACs per plane
  const int64_t nthreads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), planes));
  const int64_t min_chunk = std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1));
  const int64_t chunk = std::max<int64_t>(min_chunk, planes / (nthreads * 16));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nthreads, 1, [&](int64_t, int64_t) {
    std::vector<A> ws(static_cast<size_t>(ws_elems));
    for (;;) {
      const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= planes) break;
      const int64_t end = std::min(planes, begin + chunk);
      int64_t prev_c = -1;
      for (int64_t q = begin; q < end; ++q) {
        const int64_t c = q / B, b = q - c * B;
        const int64_t p = b * C + c;
        const bool ready = emu == 0 && c == prev_c;  // the emulation rebuilds them like the CUDA kernels
        prev_c = c;
        if (emu > 0) {
          const EmuExec ex{emu};
          if (kBackward)
            fcc_bwd_plane<T, A>(P, p, ws.data(), ex, ready);
          else
            fcc_fwd_plane<T, A>(P, p, ws.data(), ex, ready);
        } else {
          const CpuExec ex{};
          if (kBackward)
            fcc_bwd_plane<T, A>(P, p, ws.data(), ex, ready);
          else
            fcc_fwd_plane<T, A>(P, p, ws.data(), ex, ready);
        }
      }
    }
  });
}

// Runs the forward (part == nullptr) or the backward of a validated problem with this TU's ISA.
inline void cpu_run(const Problem& pb, const at::Tensor& out, const Partials* part) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.fcc (cpu)", [&] {
    const FccParams<scalar_t, acc_t> P = make_params<scalar_t, acc_t>(pb, out, part);
    if (part != nullptr)
      run_planes<scalar_t, acc_t, true>(pb, P);
    else
      run_planes<scalar_t, acc_t, false>(pb, P);
  });
}

inline CpuKernels make_cpu_kernels() { return CpuKernels{&cpu_run}; }

}  // namespace
}  // namespace fcc
}  // namespace fxk

// Host-side glue of the compact softmax cross-entropy ops: argument validation (every check happens before any
// kernel runs). Contract: "Backend contract" in fxkernels/ops/compact_softmax_ce/README.md.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fxk {
namespace compact_softmax_ce {

// Checks logits (N, C) floating, C >= 2, CPU; target (N,) int64 on logits' device with every value in [0, C).
void check_inputs(const char* op, const at::Tensor& logits, const at::Tensor& target);
// Checks dl (N,) floating on logits' device.
void check_dl(const char* op, const at::Tensor& dl, const at::Tensor& logits);

// CPU kernels of one ISA variant (compact_softmax_ce_cpu_kernels.h; the baseline is compiled by
// compact_softmax_ce_cpu.cpp, the AVX2+FMA one by compact_softmax_ce_cpu_avx2.cpp). They take validated inputs
// with N > 0: target (N,) int64 contiguous, g (N,) contiguous in the accumulation dtype, and preallocated
// contiguous outputs (rows (N,) in the accumulation dtype, dz (N, C) in the logits' dtype).
struct CpuKernels {
  void (*fwd)(const at::Tensor& logits, const at::Tensor& target, double beta, const at::Tensor& rows);
  void (*bwd)(const at::Tensor& g, const at::Tensor& logits, const at::Tensor& target, double beta,
              const at::Tensor& dz);
};
CpuKernels cpu_kernels_avx2();  // compact_softmax_ce_cpu_avx2.cpp, only in FXK_CPU_HAVE_AVX2 builds (common/cpu_isa.h)

}  // namespace compact_softmax_ce
}  // namespace fxk

// Host-side glue shared by the CPU and CUDA spatial-correlation ops (FlowNetC cost volume): argument validation
// (every check happens before any kernel runs) and the validated problem description.
// Contract: "Backend contract" in fxkernels/ops/corr/README.md.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fxk {
namespace corr {

// f1, f2: (B, C, H, W), any strides (the kernels read them through their strides or make their own copies);
// dout: (B, P*P, H, W) [bwd only, else undefined]. P = patch >= 1, d = dilation >= 1.
struct Problem {
  at::Tensor f1, f2, dout;
  int64_t B = 0, C = 0, H = 0, W = 0;
  int P = 1, d = 1;
};
Problem prepare_fwd(const char* op, const at::Tensor& f1, const at::Tensor& f2, int64_t patch, int64_t dilation,
                    c10::DeviceType device_type);
Problem prepare_bwd(const char* op, const at::Tensor& dout, const at::Tensor& f1, const at::Tensor& f2,
                    int64_t patch, int64_t dilation, c10::DeviceType device_type);

// CPU kernels of one ISA variant (corr_cpu_kernels.h; the baseline is compiled by corr_cpu.cpp, the AVX2+FMA one
// by corr_cpu_avx2.cpp). They take validated problems with B, C, H, W > 0 and preallocated contiguous outputs.
struct CpuKernels {
  void (*fwd)(const Problem& pb, const at::Tensor& out);
  void (*bwd)(const Problem& pb, const at::Tensor& df1, const at::Tensor& df2);
};
CpuKernels cpu_kernels_avx2();  // corr_cpu_avx2.cpp, only in builds with FXK_CPU_HAVE_AVX2 (common/cpu_isa.h)

}  // namespace corr
}  // namespace fxk

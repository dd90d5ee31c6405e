// Host-side glue shared by the CPU and CUDA CCC ops: argument validation (every check happens before any
// kernel runs) and the validated, contiguous problem descriptions. Contract: fxkernels/ops/ccc/README.md.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fxk {
namespace ccc {

// Largest k of the edge ops: arg is uint8 and holds a slot index in [0, k).
constexpr int64_t kMaxSlots = 255;

// knn_cosine(x, k): x (B, R, D) contiguous, 1 <= k <= R.
struct KnnProblem {
  at::Tensor x;
  int64_t B = 0, R = 0, D = 0, k = 0;
};
KnnProblem prepare_knn(const char* op, const at::Tensor& x, int64_t k, c10::DeviceType device_type);

// Channel graph edge max: ag (B, C, 2F) [fwd]; dy, y, arg (B, C, F) [bwd]; nbr (B, C, k), values in [0, C).
// All contiguous; the tensors an op does not take are undefined.
struct EdgeProblem {
  at::Tensor ag, dy, y, arg, nbr;
  int64_t B = 0, C = 0, F = 0, k = 0;
};
EdgeProblem prepare_edge_fwd(const char* op, const at::Tensor& ag, const at::Tensor& nbr,
                             c10::DeviceType device_type);
EdgeProblem prepare_edge_bwd(const char* op, const at::Tensor& dy, const at::Tensor& y, const at::Tensor& arg,
                             const at::Tensor& nbr, c10::DeviceType device_type);

// Spatial graph edge max: x (B, C, N), nbr (B, N, k) with values in [0, N), w2 (F, N); a (B, C, F) [fwd];
// dy, y, arg (B, C, F) [bwd]. All contiguous; the tensors an op does not take are undefined.
struct SpatialProblem {
  at::Tensor x, nbr, w2, a, dy, y, arg;
  int64_t B = 0, C = 0, N = 0, F = 0, k = 0;
};
SpatialProblem prepare_spatial_fwd(const char* op, const at::Tensor& x, const at::Tensor& nbr, const at::Tensor& w2,
                                   const at::Tensor& a, c10::DeviceType device_type);
SpatialProblem prepare_spatial_bwd(const char* op, const at::Tensor& dy, const at::Tensor& y, const at::Tensor& arg,
                                   const at::Tensor& x, const at::Tensor& nbr, const at::Tensor& w2,
                                   c10::DeviceType device_type);

// CPU kernels of one ISA variant (ccc_cpu_kernels.h; the baseline is compiled by ccc_cpu.cpp, the AVX2+FMA one
// by ccc_cpu_avx2.cpp). They take validated problems and preallocated outputs (never empty ones).
struct CpuKernels {
  void (*knn)(const KnnProblem& pb, const at::Tensor& out);
  void (*edge_fwd)(const EdgeProblem& pb, const at::Tensor& y, const at::Tensor& arg);
  void (*edge_bwd)(const EdgeProblem& pb, const at::Tensor& dag);
  void (*spatial_fwd)(const SpatialProblem& pb, const at::Tensor& y, const at::Tensor& arg);
  // dw2_acc: (F, N) in the accumulation dtype, zero on entry; the kernel adds into it.
  void (*spatial_bwd)(const SpatialProblem& pb, const at::Tensor& da, const at::Tensor& dxg,
                      const at::Tensor& dw2_acc);
};
CpuKernels cpu_kernels_avx2();  // ccc_cpu_avx2.cpp, only in builds with FXK_CPU_HAVE_AVX2 (common/cpu_isa.h)

// The accumulation dtype of a storage dtype: float64 for float64, float32 otherwise.
inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace ccc
}  // namespace fxk

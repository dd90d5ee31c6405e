// Host-side glue shared by the CPU and CUDA FCC ops: validation, output / partial allocation, reductions.
#pragma once

#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "common/checks.h"
#include "common/cuda_emulation.h"
#include "fcc/fcc_params.h"

namespace fxk {
namespace fcc {

// Validated problem: w/p/b are contiguous (or undefined when absent), dy contiguous (backward only).
struct Problem {
  at::Tensor x, dy, w1, w2, p1, p2, b1, b2;
  int64_t B = 0, C = 0;
  int H = 0, W = 0, mode = 0, L1 = 0, L2 = 0;
  bool fused = false;
  int64_t planes() const { return B * C; }
};

// Checks every argument (shapes, dtypes, devices, mode) with messages naming the argument; `dy` is null for
// the forward. `device_type` is the backend that was dispatched to.
Problem prepare(const char* op, const at::Tensor* dy, const at::Tensor& x, const at::Tensor& w1,
                const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& p1,
                const std::optional<at::Tensor>& p2, const std::optional<at::Tensor>& b1,
                const std::optional<at::Tensor>& b2, int64_t mode, c10::DeviceType device_type);

// Per-plane partial gradients (acc dtype, rows b*C + c); undefined where the input is absent.
struct Partials {
  at::Tensor gw1, gw2, gp1, gp2, gb1, gb2;
};
Partials alloc_partials(const Problem& pb);

// Sum the partials over the batch (deterministic) and cast to the input dtype:
// returns [dx, dw1, dw2, dp1, dp2, db1, db2] with empty tensors (numel 0) for absent inputs.
std::vector<at::Tensor> finish_grads(const Problem& pb, const at::Tensor& dx, const Partials& part);

// Device-independent pointer setup.
template <typename T, typename A>
FccParams<T, A> make_params(const Problem& pb, const at::Tensor& out, const Partials* part) {
  FccParams<T, A> P;
  P.B = pb.B;
  P.C = pb.C;
  P.H = pb.H;
  P.W = pb.W;
  P.mode = pb.mode;
  P.L1 = pb.L1;
  P.L2 = pb.L2;
  P.x = pb.x.const_data_ptr<T>();
  P.sxb = pb.x.stride(0);
  P.sxc = pb.x.stride(1);
  P.sxh = pb.x.stride(2);
  P.sxw = pb.x.stride(3);
  P.dy = pb.dy.defined() ? pb.dy.const_data_ptr<T>() : nullptr;
  P.w1 = pb.w1.const_data_ptr<T>();
  P.w2 = pb.w2.defined() ? pb.w2.const_data_ptr<T>() : nullptr;
  P.p1 = pb.p1.defined() ? pb.p1.const_data_ptr<T>() : nullptr;
  P.p2 = pb.p2.defined() ? pb.p2.const_data_ptr<T>() : nullptr;
  P.b1 = pb.b1.defined() ? pb.b1.const_data_ptr<T>() : nullptr;
  P.b2 = pb.b2.defined() ? pb.b2.const_data_ptr<T>() : nullptr;
  P.out = out.mutable_data_ptr<T>();
  if (part != nullptr) {
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<A>() : nullptr; };
    P.gw1 = ptr(part->gw1);
    P.gw2 = ptr(part->gw2);
    P.gp1 = ptr(part->gp1);
    P.gp2 = ptr(part->gp2);
    P.gb1 = ptr(part->gb1);
    P.gb2 = ptr(part->gb2);
  }
  return P;
}

// CPU kernels of one ISA variant (fcc_cpu_kernels.h; the baseline is compiled by fcc_cpu.cpp, the others by
// fcc_cpu_avx2.cpp, fcc_cpu_avx512.cpp and the test hook fcc_cpu_avx512_emulated.cpp). `run` does the forward
// (part == nullptr) or the backward of a validated problem.
struct CpuKernels {
  void (*run)(const Problem& pb, const at::Tensor& out, const Partials* part);
};
CpuKernels cpu_kernels_avx2();             // FXK_CPU_HAVE_AVX2 builds only (common/cpu_isa.h)
CpuKernels cpu_kernels_avx512();           // FXK_CPU_HAVE_AVX512 builds only
CpuKernels cpu_kernels_avx512_emulated();  // FXK_CPU_HAVE_AVX512 builds only

}  // namespace fcc
}  // namespace fxk

// Host-side glue shared by the CPU and CUDA FCC ops: validation, output / partial allocation, reductions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "common/checks.h"
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

// CPU-side test hook: when > 0 the CPU kernels run the CUDA schedule emulated with this many threads.
int cpu_emulate_threads();
int set_cpu_emulate_threads(int threads);  // returns the previous value

// CPU ISA variants: "generic" (the compiler's baseline, always built) and "avx2" (AVX2+FMA, x86-64 GCC builds,
// used when the CPU supports it). The choice starts from $FXKERNELS_CPU_ISA (auto | generic | avx2).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FXK_CPU_HAVE_AVX2 1
#else
#define FXK_CPU_HAVE_AVX2 0
#endif
std::string cpu_isa();                             // the variant the CPU kernels use now
std::string set_cpu_isa(const std::string& isa);   // "auto" | "generic" | "avx2"; returns the previous choice
std::vector<std::string> cpu_isa_variants();       // variants compiled in
#if FXK_CPU_HAVE_AVX2
void cpu_run_avx2(const Problem& pb, const at::Tensor& out, const Partials* part);
#endif

// A family's table of CPU kernels for the ISA variant in use: make_avx2() (called only in builds with
// FXK_CPU_HAVE_AVX2) when cpu_isa() is "avx2", else make_generic(); each table is built once (per table type K).
template <typename K, typename MakeGeneric, typename MakeAvx2>
const K& cpu_kernel_table(MakeGeneric make_generic, MakeAvx2 make_avx2) {
  static const K generic = make_generic();
#if FXK_CPU_HAVE_AVX2
  static const K avx2 = make_avx2();
  if (cpu_isa() == "avx2") return avx2;
#else
  (void)make_avx2;
#endif
  return generic;
}

}  // namespace fcc
}  // namespace fxk

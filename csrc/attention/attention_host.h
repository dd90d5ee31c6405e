// Host-side glue of the attention CPU ops: argument validation (every check happens before any kernel runs) and
// the validated problem. Contract: "Backend contract" in fxkernels/ops/attention/README.md.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fxk {
namespace attn {

// Element strides of a (B, nh, L, X) tensor over its first three axes (the last axis is contiguous).
struct Strides {
  int64_t b = 0, h = 0, l = 0;
};

// q, dout, out: (B, nh, Lq, hd); k, v: (B, nh, Lk, hd); rel: (B, nh, Lq - c, Tk+Hk+Wk) or undefined;
// lse: (B, nh, Lq). Every tensor has a unit stride on its last axis (prepare makes it so), others any.
struct Problem {
  at::Tensor q, k, v, rel, dout, out, lse;
  Strides sq, sk, sv, srel, sdo, so, slse;
  int64_t B = 0, nh = 0, Lq = 0, Lk = 0, hd = 0;
  int c = 0;                  // 1 with a cls row / column
  int Tk = 1, Hk = 1, Wk = 1;  // the key grid
  double scale = 1.0;
  bool add_q = false, add_q_cls = false, need_rel = false;
  int64_t heads() const { return B * nh; }
  int64_t rel_width() const { return int64_t(Tk) + Hk + Wk; }
  bool residual(int64_t i) const { return add_q && (i >= c || add_q_cls); }  // r_i
  bool empty() const { return B == 0 || nh == 0 || Lq == 0; }
};

// Checks every argument with messages naming the op, the argument and the expected shape / dtype / device.
Problem prepare_fwd(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::optional<at::Tensor>& rel, double scale, at::IntArrayRef thw_k, bool has_cls,
                    bool add_q, bool add_q_cls);
Problem prepare_bwd(const char* op, const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v, const std::optional<at::Tensor>& rel, const at::Tensor& out,
                    const at::Tensor& lse, double scale, at::IntArrayRef thw_k, bool has_cls, bool add_q,
                    bool add_q_cls, bool need_rel);

// Preallocated outputs of the backward: dq, dk, dv contiguous in q's dtype; drel rel's shape in the accumulation
// dtype (undefined unless need_rel).
struct Grads {
  at::Tensor dq, dk, dv, drel;
};

// CPU kernels of one ISA variant (attention_cpu_kernels.h; the baseline is compiled by attention_cpu.cpp, the
// others by attention_cpu_avx2.cpp, attention_cpu_avx512.cpp and the test hook attention_cpu_avx512_emulated.cpp).
// They take validated, non-empty problems.
struct CpuKernels {
  void (*fwd)(const Problem& pb, const at::Tensor& out, const at::Tensor& lse);
  void (*bwd)(const Problem& pb, const Grads& g);
};
CpuKernels cpu_kernels_avx2();             // FXK_CPU_HAVE_AVX2 builds only (common/cpu_isa.h)
CpuKernels cpu_kernels_avx512();           // FXK_CPU_HAVE_AVX512 builds only
CpuKernels cpu_kernels_avx512_emulated();  // FXK_CPU_HAVE_AVX512 builds only

}  // namespace attn
}  // namespace fxk

// CPU kernels of the attention family, one ISA variant per inclusion (attention_cpu.cpp: baseline,
// attention_cpu_avx2.cpp: AVX2+FMA, attention_cpu_avx512.cpp: AVX-512, attention_cpu_avx512_emulated.cpp: the
// AVX-512 source compiled for AVX2). Everything here has internal linkage, so the variants never mix.
//
// Flash-tiled in the accumulation type A (fp32; fp64 for fp64; fp16 / bf16 converted when packed or loaded):
// per head, K and V are copied once into zero-padded panels (attention_cpu_common.h); each task then streams
// its query block past the key tiles with blocked, register-tiled GEMMs (attention_cpu_math.h), forming the
// rel-pos bias of every score tile from the block's rel rows (attention_cpu_fwd.h, attention_cpu_bwd.h). No
// (Lq, Lk) buffer exists in either pass. Short sequences (Lq, Lk <= 64) take the packed path instead
// (attention_cpu_packed.h): one task per head, its K / V copies in the task's scratch, one key tile.
#pragma once

#include "attention/attention_cpu_bwd.h"
#include "attention/attention_cpu_fwd.h"
#include "attention/attention_cpu_packed.h"

namespace fxk {
namespace attn {
namespace {

inline void cpu_fwd(const Problem& pb, const at::Tensor& out, const at::Tensor& lse) {
  FXK_DISPATCH_FLOATING(pb.q.scalar_type(), "fxkernels.attention_fwd (cpu)", [&] {
    if (packed_fits(pb))
      packed_fwd_impl<scalar_t, acc_t>(pb, out, lse);
    else
      fwd_impl<scalar_t, acc_t>(pb, out, lse);
  });
}

inline void cpu_bwd(const Problem& pb, const Grads& g) {
  FXK_DISPATCH_FLOATING(pb.q.scalar_type(), "fxkernels.attention_bwd (cpu)", [&] {
    if (packed_fits(pb))
      packed_bwd_impl<scalar_t, acc_t>(pb, g);
    else
      bwd_impl<scalar_t, acc_t>(pb, g);
  });
}

inline CpuKernels make_cpu_kernels() { return CpuKernels{&cpu_fwd, &cpu_bwd}; }

}  // namespace
}  // namespace attn
}  // namespace fxk

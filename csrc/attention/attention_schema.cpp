// Schemas of the attention C++ ops (fxkernels/ops/attention/README.md, "Backend contract"); their CPU kernels are
// registered by attention_cpu.cpp (on CUDA tensors the family runs Triton and torch SDPA, no C++ kernels).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fxkernels, m) {
  // q (B, nh, Lq, hd), k, v (B, nh, Lk, hd), rel (B, nh, Lq - c, Tk+Hk+Wk) in the accumulation dtype or None,
  // thw_k = [Tk, Hk, Wk] with c + Tk*Hk*Wk = Lk -> (O (B, nh, Lq, hd) in q's dtype, lse (B, nh, Lq)).
  m.def(
      "attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? rel, float scale, int[] thw_k, bool has_cls, "
      "bool add_q, bool add_q_cls) -> (Tensor, Tensor)");
  // -> (dq, dk, dv in q's dtype, drel in rel's dtype when need_rel else an empty tensor). Deterministic.
  m.def(
      "attention_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor? rel, Tensor out, Tensor lse, float scale, "
      "int[] thw_k, bool has_cls, bool add_q, bool add_q_cls, bool need_rel) -> (Tensor, Tensor, Tensor, Tensor)");
  // The rel-pos projection (rel_project_cpu.cpp): q (B, nh, c + Tq*Hq*Wq, hd), the gathered tables Gt (Tq, Tk, hd),
  // Gh (Hq, Hk, hd), Gw (Wq, Wk, hd) in the accumulation dtype -> rel (B, nh, Tq*Hq*Wq, Tk+Hk+Wk).
  m.def("rel_pos_project_fwd(Tensor q, Tensor Gt, Tensor Gh, Tensor Gw, bool has_cls) -> Tensor");
  // -> (dq (q's shape and dtype, zero cls row) or empty, dGt, dGh, dGw or empty). Deterministic.
  m.def(
      "rel_pos_project_bwd(Tensor drel, Tensor q, Tensor Gt, Tensor Gh, Tensor Gw, bool has_cls, bool need_q, "
      "bool need_g) -> (Tensor, Tensor, Tensor, Tensor)");
}

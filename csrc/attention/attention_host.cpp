// Validation of the attention CPU ops: TORCH_CHECKs with messages naming the op, the argument and what was
// expected; nothing runs before they pass.
#include <algorithm>
#include <string>

#include "attention/attention_host.h"

namespace fxk {
namespace attn {

namespace {

Strides strides_of(const at::Tensor& t) {
  Strides s;
  if (!t.defined() || t.dim() < 3) return s;
  s.b = t.stride(0);
  s.h = t.stride(1);
  s.l = t.stride(2);
  return s;
}

// The kernels read rows through the strides of the first axes; only the last axis must be unit-stride.
at::Tensor unit_last(const at::Tensor& t) {
  if (t.size(-1) <= 1 || t.stride(-1) == 1) return t;
  return t.contiguous();
}

void check_cpu(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor (the cpu kernels), got ", name, " on ",
              t.device());
}

// Common part: q, k, v, rel and the grid.
Problem prepare_common(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const std::optional<at::Tensor>& rel, double scale, at::IntArrayRef thw_k, bool has_cls,
                       bool add_q, bool add_q_cls) {
  check_floating(q, op, "q", 4, "(B, nh, Lq, hd)");
  check_cpu(q, op, "q");
  TORCH_CHECK(k.defined(), op, ": k must be a tensor, got an undefined tensor");
  TORCH_CHECK(v.defined(), op, ": v must be a tensor, got an undefined tensor");
  check_same(k, op, "k", q, "q");
  check_same(v, op, "v", q, "q");
  TORCH_CHECK(k.dim() == 4, op, ": k must be 4-D (B, nh, Lk, hd), got shape ", shape_str(k.sizes()));
  const int64_t B = q.size(0), nh = q.size(1), Lq = q.size(2), hd = q.size(3), Lk = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(1) == nh && k.size(3) == hd, op,
              ": k must have shape (B, nh, Lk, hd) = (", B, ", ", nh, ", Lk, ", hd, ") to match q ",
              shape_str(q.sizes()), ", got ", shape_str(k.sizes()));
  check_shape(v, op, "v", "(B, nh, Lk, hd) (k's shape)", k.sizes());
  TORCH_CHECK(hd >= 1, op, ": q must have a head width hd >= 1, got shape ", shape_str(q.sizes()));
  const int c = has_cls ? 1 : 0;
  TORCH_CHECK(!has_cls || (Lq >= 1 || B * nh == 0), op, ": has_cls needs a cls row in q, got q of shape ",
              shape_str(q.sizes()));
  TORCH_CHECK(Lk >= 1 || B * nh * Lq == 0, op, ": k must have at least one token, got k of shape ",
              shape_str(k.sizes()));
  TORCH_CHECK(thw_k.size() == 3, op, ": thw_k must be 3 ints (Tk, Hk, Wk), got ", thw_k.size(), " values");

  Problem pb;
  pb.B = B;
  pb.nh = nh;
  pb.Lq = Lq;
  pb.Lk = Lk;
  pb.hd = hd;
  pb.c = c;
  pb.scale = scale;
  pb.add_q = add_q;
  pb.add_q_cls = add_q_cls;
  pb.q = unit_last(q);
  pb.k = unit_last(k);
  pb.v = unit_last(v);
  if (present(rel)) {
    const at::Tensor& r = *rel;
    TORCH_CHECK(thw_k[0] >= 1 && thw_k[1] >= 1 && thw_k[2] >= 1 && c + thw_k[0] * thw_k[1] * thw_k[2] == Lk, op,
                ": thw_k = (", thw_k[0], ", ", thw_k[1], ", ", thw_k[2], ") must be positive with ",
                has_cls ? "1 (cls) + " : "", "Tk*Hk*Wk = Lk = ", Lk, " (k's tokens)");
    pb.Tk = static_cast<int>(thw_k[0]);
    pb.Hk = static_cast<int>(thw_k[1]);
    pb.Wk = static_cast<int>(thw_k[2]);
    const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(r.device() == q.device(), op, ": rel must be on q's device (", q.device(), "), got ", r.device());
    TORCH_CHECK(r.scalar_type() == acc, op, ": rel must have the accumulation dtype ", acc, " of q's ",
                q.scalar_type(), ", got ", r.scalar_type());
    TORCH_CHECK(r.dim() == 4, op, ": rel must be 4-D (B, nh, Lq - c, Tk+Hk+Wk), got shape ", shape_str(r.sizes()));
    const int64_t Nq = std::max<int64_t>(Lq - c, 0);
    check_shape(r, op, "rel", "(B, nh, Lq - c, Tk+Hk+Wk)", {B, nh, Nq, pb.rel_width()});
    pb.rel = unit_last(r);
  }
  pb.sq = strides_of(pb.q);
  pb.sk = strides_of(pb.k);
  pb.sv = strides_of(pb.v);
  pb.srel = strides_of(pb.rel);
  return pb;
}

}  // namespace

Problem prepare_fwd(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::optional<at::Tensor>& rel, double scale, at::IntArrayRef thw_k, bool has_cls,
                    bool add_q, bool add_q_cls) {
  return prepare_common(op, q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls);
}

Problem prepare_bwd(const char* op, const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v, const std::optional<at::Tensor>& rel, const at::Tensor& out,
                    const at::Tensor& lse, double scale, at::IntArrayRef thw_k, bool has_cls, bool add_q,
                    bool add_q_cls, bool need_rel) {
  Problem pb = prepare_common(op, q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls);
  TORCH_CHECK(dout.defined(), op, ": dout must be a tensor, got an undefined tensor");
  TORCH_CHECK(out.defined(), op, ": out must be a tensor, got an undefined tensor");
  TORCH_CHECK(lse.defined(), op, ": lse must be a tensor, got an undefined tensor");
  check_same(dout, op, "dout", q, "q");
  check_shape(dout, op, "dout", "(B, nh, Lq, hd) (q's shape)", q.sizes());
  check_same(out, op, "out", q, "q");
  check_shape(out, op, "out", "(B, nh, Lq, hd) (q's shape)", q.sizes());
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(lse.device() == q.device(), op, ": lse must be on q's device (", q.device(), "), got ", lse.device());
  TORCH_CHECK(lse.scalar_type() == acc, op, ": lse must have the accumulation dtype ", acc, " of q's ",
              q.scalar_type(), ", got ", lse.scalar_type());
  check_shape(lse, op, "lse", "(B, nh, Lq)", {pb.B, pb.nh, pb.Lq});
  TORCH_CHECK(!need_rel || pb.rel.defined(), op, ": need_rel=True needs rel, got rel=None");
  pb.need_rel = need_rel;
  pb.dout = unit_last(dout);
  pb.out = unit_last(out);
  pb.lse = lse;
  pb.sdo = strides_of(pb.dout);
  pb.so = strides_of(pb.out);
  pb.slse = strides_of(lse);
  return pb;
}

}  // namespace attn
}  // namespace fxk

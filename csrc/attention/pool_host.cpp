// Validation of the attention_pool CPU ops: TORCH_CHECKs whose messages name the op, the argument and what was
// expected; nothing runs before they pass. Also the per-axis tap tables and the problem in the accumulation
// dtype (pool.h).
#include <cmath>
#include <limits>

#include "attention/pool.h"

namespace fxk {
namespace attn_pool {

namespace {

int out_size(int64_t n, int64_t k, int64_t s) { return static_cast<int>((n + 2 * (k / 2) - k) / s + 1); }

void check_ints3(const char* op, const char* name, at::IntArrayRef v) {
  TORCH_CHECK(v.size() == 3, op, ": ", name, " must be 3 ints (T, H, W), got ", v.size(), " values");
  for (int64_t e : v)
    TORCH_CHECK(e >= 1 && e <= std::numeric_limits<int>::max(), op, ": ", name, " must be positive, got ",
                shape_str(v));
}

}  // namespace

AxisTaps axis_taps_fwd(int n, int no, int k, int s) {
  AxisTaps a;
  a.k = k;
  a.cnt.assign(no, 0);
  a.tap.assign(static_cast<size_t>(no) * k, 0);
  a.idx.assign(static_cast<size_t>(no) * k, 0);
  for (int o = 0; o < no; ++o)
    for (int d = 0; d < k; ++d) {
      const int64_t i = static_cast<int64_t>(o) * s - k / 2 + d;
      if (i < 0 || i >= n) continue;
      const int j = a.cnt[o]++;
      a.tap[o * k + j] = d;
      a.idx[o * k + j] = static_cast<int>(i);
    }
  return a;
}

AxisTaps axis_taps_bwd(int n, int no, int k, int s) {
  AxisTaps a;
  a.k = k;
  a.cnt.assign(n, 0);
  a.tap.assign(static_cast<size_t>(n) * k, 0);
  a.idx.assign(static_cast<size_t>(n) * k, 0);
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < k; ++d) {
      const int64_t q = static_cast<int64_t>(i) + k / 2 - d;  // = o * s
      if (q < 0 || q % s != 0 || q / s >= no) continue;
      const int j = a.cnt[i]++;
      a.tap[static_cast<int64_t>(i) * k + j] = d;
      a.idx[static_cast<int64_t>(i) * k + j] = static_cast<int>(q / s);
    }
  return a;
}

Problem prepare_fwd(const char* op, const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& norm_weight, const std::optional<at::Tensor>& norm_bias,
                    at::IntArrayRef stride, at::IntArrayRef thw, bool has_cls, double eps) {
  check_floating(x, op, "x", 4, "(B, nh, L, hd)");
  TORCH_CHECK(x.device().is_cpu(), op, ": expected CPU tensors, got x on ", x.device());
  const int64_t B = x.size(0), nh = x.size(1), L = x.size(2), hd = x.size(3);
  TORCH_CHECK(weight.defined(), op, ": weight must be a tensor, got an undefined tensor");
  check_same(weight, op, "weight", x, "x");
  TORCH_CHECK(weight.dim() == 5 && weight.size(0) == hd && weight.size(1) == 1 && weight.size(2) >= 1 &&
                  weight.size(3) >= 1 && weight.size(4) >= 1,
              op, ": weight must have shape (hd, 1, kt, kh, kw) with x's hd = ", hd,
              " (depthwise, shared by the heads), got ", shape_str(weight.sizes()));
  check_ints3(op, "stride", stride);
  check_ints3(op, "thw", thw);
  const int c = has_cls ? 1 : 0;
  // (in steps that cannot overflow: each factor is an int)
  const bool fits = thw[0] <= L && thw[0] * thw[1] <= L && c + thw[0] * thw[1] * thw[2] == L;
  TORCH_CHECK(fits, op, ": thw = ", shape_str(thw), " must multiply out to x's L = ", L, " tokens (",
              has_cls ? "1 (cls) + " : "", "T*H*W)");
  TORCH_CHECK(present(norm_weight) == present(norm_bias), op,
              ": norm_weight and norm_bias go together: both or neither");
  TORCH_CHECK(std::isfinite(eps) && eps > 0, op, ": eps must be a positive float, got ", eps);
  Problem pb;
  pb.B = B;
  pb.nh = nh;
  pb.L = L;
  pb.hd = hd;
  pb.c = c;
  pb.T = static_cast<int>(thw[0]);
  pb.H = static_cast<int>(thw[1]);
  pb.W = static_cast<int>(thw[2]);
  pb.kt = static_cast<int>(weight.size(2));
  pb.kh = static_cast<int>(weight.size(3));
  pb.kw = static_cast<int>(weight.size(4));
  pb.st = static_cast<int>(stride[0]);
  pb.sh = static_cast<int>(stride[1]);
  pb.sw = static_cast<int>(stride[2]);
  pb.To = out_size(pb.T, pb.kt, stride[0]);
  pb.Ho = out_size(pb.H, pb.kh, stride[1]);
  pb.Wo = out_size(pb.W, pb.kw, stride[2]);
  TORCH_CHECK(pb.To >= 1 && pb.Ho >= 1 && pb.Wo >= 1, op, ": kernel ", shape_str(weight.sizes().slice(2)),
              " with stride ", shape_str(stride), " leaves an empty grid for thw = ", shape_str(thw));
  pb.Lo = c + static_cast<int64_t>(pb.To) * pb.Ho * pb.Wo;
  pb.eps = eps;
  pb.x = x;

  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor nw = check_param(norm_weight, op, "norm_weight", "(hd,)", {hd}, x);
  const at::Tensor nb = check_param(norm_bias, op, "norm_bias", "(hd,)", {hd}, x);
  pb.norm = nw.defined();
  if (pb.norm) {
    pb.nw = nw.to(acc).contiguous();
    pb.nb = nb.to(acc).contiguous();
  }
  pb.sxb = x.stride(0);
  pb.sxh = x.stride(1);
  pb.sxl = x.stride(2);
  pb.sxd = x.stride(3);
  pb.wt = weight.reshape({hd, pb.taps()}).t().contiguous().to(acc);
  pb.fwd[0] = axis_taps_fwd(pb.T, pb.To, pb.kt, static_cast<int>(stride[0]));
  pb.fwd[1] = axis_taps_fwd(pb.H, pb.Ho, pb.kh, static_cast<int>(stride[1]));
  pb.fwd[2] = axis_taps_fwd(pb.W, pb.Wo, pb.kw, static_cast<int>(stride[2]));
  pb.bwd[0] = axis_taps_bwd(pb.T, pb.To, pb.kt, static_cast<int>(stride[0]));
  pb.bwd[1] = axis_taps_bwd(pb.H, pb.Ho, pb.kh, static_cast<int>(stride[1]));
  pb.bwd[2] = axis_taps_bwd(pb.W, pb.Wo, pb.kw, static_cast<int>(stride[2]));
  return pb;
}

Problem prepare_bwd(const char* op, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& norm_weight, const std::optional<at::Tensor>& norm_bias,
                    const at::Tensor& stats, at::IntArrayRef stride, at::IntArrayRef thw, bool has_cls,
                    double eps) {
  Problem pb = prepare_fwd(op, x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps);
  TORCH_CHECK(dy.defined(), op, ": dy must be a tensor, got an undefined tensor");
  check_same(dy, op, "dy", x, "x");
  check_shape(dy, op, "dy", "(B, nh, Lo, hd)", {pb.B, pb.nh, pb.Lo, pb.hd});
  if (pb.norm) {
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(stats.defined(), op, ": stats must be a tensor, got an undefined tensor");
    TORCH_CHECK(stats.device() == x.device(), op, ": stats must be on the same device as x (", x.device(),
                "), got ", stats.device());
    TORCH_CHECK(stats.scalar_type() == acc, op, ": stats must have the accumulation dtype ", acc,
                " (the forward's stats), got ", stats.scalar_type());
    check_shape(stats, op, "stats", "(B, nh, Lo, 2)", {pb.B, pb.nh, pb.Lo, 2});
  }
  return pb;
}

}  // namespace attn_pool
}  // namespace fxk

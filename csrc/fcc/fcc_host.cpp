// Validation of the FCC ops (shared by the CPU and CUDA ops) and the host-side partial-gradient reductions.
#include "fcc/fcc.h"

namespace fxk {
namespace fcc {

Problem prepare(const char* op, const at::Tensor* dy, const at::Tensor& x, const at::Tensor& w1,
                const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& p1,
                const std::optional<at::Tensor>& p2, const std::optional<at::Tensor>& b1,
                const std::optional<at::Tensor>& b2, int64_t mode, c10::DeviceType device_type) {
  TORCH_CHECK(mode >= 0 && mode <= 3, op, ": mode must be 0 (V), 1 (H), 2 (VH) or 3 (HV), got ", mode);
  check_floating(x, op, "x", 4, "(B, C, H, W)");
  Problem pb;
  pb.mode = static_cast<int>(mode);
  pb.fused = mode_fused(pb.mode);
  pb.B = x.size(0);
  pb.C = x.size(1);
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK(H <= 8192 && W <= 8192 && H * W <= (int64_t{1} << 24), op,
              ": planes larger than 8192 per side or 2^24 elements are not supported, got (H, W) = (", H, ", ", W,
              ")");
  pb.H = static_cast<int>(H);
  pb.W = static_cast<int>(W);
  const int d1 = mode_dir1(pb.mode);
  pb.L1 = d1 == kDirV ? pb.H : pb.W;
  pb.L2 = pb.fused ? (d1 == kDirV ? pb.W : pb.H) : 0;
  const char* l1desc = "(C, L1)";
  const char* l2desc = "(C, L2)";

  pb.x = x;
  check_same(w1, op, "w1", x, "x");
  check_shape(w1, op, "w1", l1desc, {pb.C, pb.L1});
  pb.w1 = w1.contiguous();
  pb.p1 = check_param(p1, op, "p1", l1desc, {pb.C, pb.L1}, x);
  pb.b1 = check_param(b1, op, "b1", "(C,)", {pb.C}, x);
  if (pb.fused) {
    TORCH_CHECK(present(w2), op, ": w2 is required for mode ", mode, " (", mode == kModeVH ? "VH" : "HV",
                "), got None");
    pb.w2 = check_param(w2, op, "w2", l2desc, {pb.C, pb.L2}, x);
    pb.p2 = check_param(p2, op, "p2", l2desc, {pb.C, pb.L2}, x);
    pb.b2 = check_param(b2, op, "b2", "(C,)", {pb.C}, x);
  } else {
    const char* mname = mode == kModeV ? "0 (V)" : "1 (H)";
    TORCH_CHECK(!present(w2), op, ": w2 must be None for single-pass mode ", mname);
    TORCH_CHECK(!present(p2), op, ": p2 must be None for single-pass mode ", mname);
    TORCH_CHECK(!present(b2), op, ": b2 must be None for single-pass mode ", mname);
  }
  if (dy != nullptr) {
    TORCH_CHECK(dy->defined(), op, ": dy must be a tensor, got an undefined tensor");
    check_same(*dy, op, "dy", x, "x");
    check_shape(*dy, op, "dy", "(B, C, H, W) like x", x.sizes());
    pb.dy = dy->contiguous();
  }
  // All tensors share x's device (checked above); it must be the backend that was dispatched to.
  TORCH_CHECK(x.device().type() == device_type, op, ": expected ", c10::DeviceTypeName(device_type, true),
              " tensors, got x on ", x.device());
  return pb;
}

Partials alloc_partials(const Problem& pb) {
  const auto acc = pb.x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = pb.x.options().dtype(acc);
  // Empty problems launch nothing: the partials must then already be zero.
  const bool empty = pb.planes() == 0 || pb.H == 0 || pb.W == 0;
  auto make = [&](at::IntArrayRef shape) { return empty ? at::zeros(shape, opts) : at::empty(shape, opts); };
  Partials p;
  p.gw1 = make({pb.B, pb.C, pb.L1});
  if (pb.p1.defined()) p.gp1 = make({pb.B, pb.C, pb.L1});
  if (pb.b1.defined()) p.gb1 = make({pb.B, pb.C});
  if (pb.fused) {
    p.gw2 = make({pb.B, pb.C, pb.L2});
    if (pb.p2.defined()) p.gp2 = make({pb.B, pb.C, pb.L2});
    if (pb.b2.defined()) p.gb2 = make({pb.B, pb.C});
  }
  return p;
}

std::vector<at::Tensor> finish_grads(const Problem& pb, const at::Tensor& dx, const Partials& part) {
  const auto dtype = pb.x.scalar_type();
  auto reduce = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined()) return at::empty({0}, pb.x.options());
    return at::sum(t, {0}, /*keepdim=*/false, /*dtype=*/t.scalar_type()).to(dtype);
  };
  return {dx,
          reduce(part.gw1),
          reduce(part.gw2),
          reduce(part.gp1),
          reduce(part.gp2),
          reduce(part.gb1),
          reduce(part.gb2)};
}

}  // namespace fcc
}  // namespace fxk

#include "ccc/ccc.h"

#include <tuple>

namespace fxk {
namespace ccc {

namespace {

// t must be defined and on the same device as `ref` (named `ref_name`).
void check_device(const at::Tensor& t, const char* op, const char* name, const at::Tensor& ref,
                  const char* ref_name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined tensor");
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the same device as ", ref_name, " (",
              ref.device(), "), got ", t.device());
}

// The first tensor decides the backend; it must be the one that was dispatched to.
void check_backend(const at::Tensor& t, const char* op, const char* name, c10::DeviceType device_type) {
  TORCH_CHECK(t.device().type() == device_type, op, ": expected ", c10::DeviceTypeName(device_type, true),
              " tensors, got ", name, " on ", t.device());
}

// nbr: int64 (B, R, k) on ref's device, 1 <= k <= 255, every value in [0, nodes). Returns it contiguous.
at::Tensor check_nbr(const at::Tensor& nbr, const char* op, const char* desc, int64_t B, int64_t R,
                     int64_t nodes, const char* nodes_name, const at::Tensor& ref, const char* ref_name) {
  check_device(nbr, op, "nbr", ref, ref_name);
  TORCH_CHECK(nbr.scalar_type() == at::kLong, op, ": nbr must be int64, got ", nbr.scalar_type());
  TORCH_CHECK(nbr.dim() == 3, op, ": nbr must be 3-D ", desc, ", got ", nbr.dim(), "-D with shape ",
              shape_str(nbr.sizes()));
  const int64_t k = nbr.size(2);
  TORCH_CHECK(k >= 1 && k <= kMaxSlots, op, ": the number of neighbours k = nbr.shape[2] must be in [1, ",
              kMaxSlots, "], got ", k);
  check_shape(nbr, op, "nbr", desc, {B, R, k});
  if (nbr.numel() > 0) {
    at::Tensor lo, hi;
    std::tie(lo, hi) = at::aminmax(nbr);
    const int64_t mn = lo.item<int64_t>(), mx = hi.item<int64_t>();
    TORCH_CHECK(mn >= 0 && mx < nodes, op, ": nbr values must be node indices in [0, ", nodes_name, ") = [0, ",
                nodes, "), got values in [", mn, ", ", mx, "]");
  }
  return nbr.contiguous();
}

// t: a floating tensor of x's dtype and device with exactly `expected` shape.
at::Tensor check_like(const at::Tensor& t, const char* op, const char* name, const char* desc,
                      at::IntArrayRef expected, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined tensor");
  check_same(t, op, name, ref, ref_name);
  check_shape(t, op, name, desc, expected);
  return t.contiguous();
}

// arg: uint8 with exactly `expected` shape, on ref's device.
at::Tensor check_arg(const at::Tensor& arg, const char* op, at::IntArrayRef expected, const at::Tensor& ref,
                     const char* ref_name) {
  check_device(arg, op, "arg", ref, ref_name);
  TORCH_CHECK(arg.scalar_type() == at::kByte, op, ": arg must be uint8, got ", arg.scalar_type());
  check_shape(arg, op, "arg", "(B, C, F)", expected);
  return arg.contiguous();
}

}  // namespace

KnnProblem prepare_knn(const char* op, const at::Tensor& x, int64_t k, c10::DeviceType device_type) {
  check_floating(x, op, "x", 3, "(B, R, D)");
  check_backend(x, op, "x", device_type);
  KnnProblem pb;
  pb.B = x.size(0);
  pb.R = x.size(1);
  pb.D = x.size(2);
  TORCH_CHECK(k >= 1 && k <= pb.R, op, ": k must be in [1, R] = [1, ", pb.R, "] for x of shape ",
              shape_str(x.sizes()), ", got k = ", k);
  TORCH_CHECK(pb.R <= (int64_t{1} << 30) && pb.D <= (int64_t{1} << 30), op,
              ": R and D must be at most 2^30, got x of shape ", shape_str(x.sizes()));
  pb.k = k;
  pb.x = x.contiguous();
  return pb;
}

EdgeProblem prepare_edge_fwd(const char* op, const at::Tensor& ag, const at::Tensor& nbr,
                             c10::DeviceType device_type) {
  check_floating(ag, op, "ag", 3, "(B, C, 2F)");
  check_backend(ag, op, "ag", device_type);
  TORCH_CHECK(ag.size(2) % 2 == 0, op, ": the last dim of ag (B, C, 2F) must be even ([A | G]), got shape ",
              shape_str(ag.sizes()));
  EdgeProblem pb;
  pb.B = ag.size(0);
  pb.C = ag.size(1);
  pb.F = ag.size(2) / 2;
  pb.nbr = check_nbr(nbr, op, "(B, C, k)", pb.B, pb.C, pb.C, "C", ag, "ag");
  pb.k = pb.nbr.size(2);
  pb.ag = ag.contiguous();
  return pb;
}

EdgeProblem prepare_edge_bwd(const char* op, const at::Tensor& dy, const at::Tensor& y, const at::Tensor& arg,
                             const at::Tensor& nbr, c10::DeviceType device_type) {
  check_floating(dy, op, "dy", 3, "(B, C, F)");
  check_backend(dy, op, "dy", device_type);
  EdgeProblem pb;
  pb.B = dy.size(0);
  pb.C = dy.size(1);
  pb.F = dy.size(2);
  pb.y = check_like(y, op, "y", "(B, C, F) like dy", dy.sizes(), dy, "dy");
  pb.arg = check_arg(arg, op, dy.sizes(), dy, "dy");
  pb.nbr = check_nbr(nbr, op, "(B, C, k)", pb.B, pb.C, pb.C, "C", dy, "dy");
  pb.k = pb.nbr.size(2);
  pb.dy = dy.contiguous();
  return pb;
}

SpatialProblem prepare_spatial_fwd(const char* op, const at::Tensor& x, const at::Tensor& nbr, const at::Tensor& w2,
                                   const at::Tensor& a, c10::DeviceType device_type) {
  check_floating(x, op, "x", 3, "(B, C, N)");
  check_backend(x, op, "x", device_type);
  SpatialProblem pb;
  pb.B = x.size(0);
  pb.C = x.size(1);
  pb.N = x.size(2);
  TORCH_CHECK(w2.defined(), op, ": w2 must be a tensor, got an undefined tensor");
  TORCH_CHECK(w2.dim() == 2, op, ": w2 must be 2-D (F, N), got ", w2.dim(), "-D with shape ",
              shape_str(w2.sizes()));
  pb.F = w2.size(0);
  pb.w2 = check_like(w2, op, "w2", "(F, N)", {pb.F, pb.N}, x, "x");
  pb.a = check_like(a, op, "a", "(B, C, F)", {pb.B, pb.C, pb.F}, x, "x");
  pb.nbr = check_nbr(nbr, op, "(B, N, k)", pb.B, pb.N, pb.N, "N", x, "x");
  pb.k = pb.nbr.size(2);
  pb.x = x.contiguous();
  return pb;
}

SpatialProblem prepare_spatial_bwd(const char* op, const at::Tensor& dy, const at::Tensor& y, const at::Tensor& arg,
                                   const at::Tensor& x, const at::Tensor& nbr, const at::Tensor& w2,
                                   c10::DeviceType device_type) {
  check_floating(x, op, "x", 3, "(B, C, N)");
  check_backend(x, op, "x", device_type);
  SpatialProblem pb;
  pb.B = x.size(0);
  pb.C = x.size(1);
  pb.N = x.size(2);
  TORCH_CHECK(w2.defined(), op, ": w2 must be a tensor, got an undefined tensor");
  TORCH_CHECK(w2.dim() == 2, op, ": w2 must be 2-D (F, N), got ", w2.dim(), "-D with shape ",
              shape_str(w2.sizes()));
  pb.F = w2.size(0);
  pb.w2 = check_like(w2, op, "w2", "(F, N)", {pb.F, pb.N}, x, "x");
  pb.dy = check_like(dy, op, "dy", "(B, C, F)", {pb.B, pb.C, pb.F}, x, "x");
  pb.y = check_like(y, op, "y", "(B, C, F)", {pb.B, pb.C, pb.F}, x, "x");
  pb.arg = check_arg(arg, op, {pb.B, pb.C, pb.F}, x, "x");
  pb.nbr = check_nbr(nbr, op, "(B, N, k)", pb.B, pb.N, pb.N, "N", x, "x");
  pb.k = pb.nbr.size(2);
  pb.x = x.contiguous();
  return pb;
}

}  // namespace ccc
}  // namespace fxk

// Validation of the spatial-correlation ops (shared by the CPU and CUDA ops): TORCH_CHECKs with messages naming
// the op, the argument and what was expected; nothing runs before they pass.
#include "corr/corr.h"

namespace fxk {
namespace corr {

namespace {

// Sizes the kernels index with 32-bit ints (positions, channels, displacements).
constexpr int64_t kMaxDim = int64_t{1} << 30;

// The first tensor decides the backend; it must be the one that was dispatched to.
void check_backend(const at::Tensor& t, const char* op, const char* name, c10::DeviceType device_type) {
  TORCH_CHECK(t.device().type() == device_type, op, ": expected ", c10::DeviceTypeName(device_type, true),
              " tensors, got ", name, " on ", t.device());
}

Problem prepare_common(const char* op, const at::Tensor& f1, const at::Tensor& f2, int64_t patch, int64_t dilation,
                       c10::DeviceType device_type) {
  check_floating(f1, op, "f1", 4, "(B, C, H, W)");
  check_backend(f1, op, "f1", device_type);
  TORCH_CHECK(f2.defined(), op, ": f2 must be a tensor, got an undefined tensor");
  check_same(f2, op, "f2", f1, "f1");
  check_shape(f2, op, "f2", "(B, C, H, W)", f1.sizes());
  TORCH_CHECK(patch >= 1, op, ": patch must be >= 1, got ", patch);
  TORCH_CHECK(dilation >= 1, op, ": dilation must be >= 1, got ", dilation);
  TORCH_CHECK(patch * patch <= kMaxDim && patch * dilation <= kMaxDim, op,
              ": patch * patch and patch * dilation must be at most 2^30, got patch = ", patch, ", dilation = ",
              dilation);
  Problem pb;
  pb.B = f1.size(0);
  pb.C = f1.size(1);
  pb.H = f1.size(2);
  pb.W = f1.size(3);
  TORCH_CHECK(pb.C <= kMaxDim && pb.H <= kMaxDim && pb.W <= kMaxDim && pb.H * pb.W <= kMaxDim, op,
              ": C, H, W and H * W must be at most 2^30, got f1 of shape ", shape_str(f1.sizes()));
  pb.P = static_cast<int>(patch);
  pb.d = static_cast<int>(dilation);
  pb.f1 = f1;
  pb.f2 = f2;
  return pb;
}

}  // namespace

Problem prepare_fwd(const char* op, const at::Tensor& f1, const at::Tensor& f2, int64_t patch, int64_t dilation,
                    c10::DeviceType device_type) {
  return prepare_common(op, f1, f2, patch, dilation, device_type);
}

Problem prepare_bwd(const char* op, const at::Tensor& dout, const at::Tensor& f1, const at::Tensor& f2,
                    int64_t patch, int64_t dilation, c10::DeviceType device_type) {
  Problem pb = prepare_common(op, f1, f2, patch, dilation, device_type);
  TORCH_CHECK(dout.defined(), op, ": dout must be a tensor, got an undefined tensor");
  check_same(dout, op, "dout", f1, "f1");
  check_shape(dout, op, "dout", "(B, patch * patch, H, W)", {pb.B, int64_t{pb.P} * pb.P, pb.H, pb.W});
  pb.dout = dout;
  return pb;
}

}  // namespace corr
}  // namespace fxk

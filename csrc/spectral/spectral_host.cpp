// Validation of the spectral-filter ops (shared by the CPU and CUDA ops): TORCH_CHECKs with messages naming the
// op, the argument and what was expected; nothing runs before they pass. Also the twiddle tables.
#include <cmath>

#include "spectral/spectral.h"

namespace fxk {
namespace spectral {

namespace {

// The first tensor decides the backend; it must be the one that was dispatched to.
void check_backend(const at::Tensor& t, const char* op, const char* name, c10::DeviceType device_type) {
  TORCH_CHECK(t.device().type() == device_type, op, ": expected ", c10::DeviceTypeName(device_type, true),
              " tensors, got ", name, " on ", t.device());
}

Problem prepare_common(const char* op, const at::Tensor& x, const at::Tensor& filt, c10::DeviceType device_type) {
  check_floating(x, op, "x", 5, "(B, C, T, H, W)");
  check_backend(x, op, "x", device_type);
  const int64_t T = x.size(2);
  TORCH_CHECK(T >= 1 && T <= kMaxT, op, ": the time axis of x (dim 2) must have length in [1, ", kMaxT,
              "], got x of shape ", shape_str(x.sizes()));
  const int64_t M = T / 2 + 1;
  TORCH_CHECK(filt.defined(), op, ": filt must be a tensor, got an undefined tensor");
  check_same(filt, op, "filt", x, "x");
  check_shape(filt, op, "filt", "(B, C, T//2+1, H, W, 2)", {x.size(0), x.size(1), M, x.size(3), x.size(4), 2});
  Problem pb;
  pb.B = x.size(0);
  pb.C = x.size(1);
  pb.H = x.size(3);
  pb.W = x.size(4);
  pb.T = static_cast<int>(T);
  pb.M = static_cast<int>(M);
  pb.x = x;
  pb.filt = filt;
  pb.sx = strides_of(x);
  pb.sf = strides_of(filt);
  return pb;
}

}  // namespace

Strides strides_of(const at::Tensor& t) {
  Strides s;
  if (!t.defined() || t.dim() < 5) return s;
  s.b = t.stride(0);
  s.c = t.stride(1);
  s.t = t.stride(2);
  s.h = t.stride(3);
  s.w = t.stride(4);
  if (t.dim() == 6) s.ri = t.stride(5);
  return s;
}

at::Tensor new_dfilt(const at::Tensor& filt) {
  const auto acc = filt.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return at::empty_like(filt, filt.options().dtype(acc), at::MemoryFormat::Preserve);
}

Problem prepare_fwd(const char* op, const at::Tensor& x, const at::Tensor& filt,
                    const std::optional<at::Tensor>& residual, c10::DeviceType device_type) {
  Problem pb = prepare_common(op, x, filt, device_type);
  if (present(residual)) {
    check_same(*residual, op, "residual", x, "x");
    check_shape(*residual, op, "residual", "(B, C, T, H, W) (x's shape)", x.sizes());
    pb.residual = *residual;
    pb.sr = strides_of(pb.residual);
  }
  return pb;
}

Problem prepare_bwd(const char* op, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& filt,
                    c10::DeviceType device_type) {
  Problem pb = prepare_common(op, x, filt, device_type);
  TORCH_CHECK(dy.defined(), op, ": dy must be a tensor, got an undefined tensor");
  check_same(dy, op, "dy", x, "x");
  check_shape(dy, op, "dy", "(B, C, T, H, W) (x's shape)", x.sizes());
  pb.dy = dy;
  pb.sdy = strides_of(dy);
  return pb;
}

template <typename A>
Twiddles<A> make_twiddles(int T) {
  Twiddles<A> tw{};
  const double step = 2.0 * M_PI / static_cast<double>(T);  // same angles as reference.dft_matrices
  for (int j = 0; j < T; ++j) {
    double c = std::cos(step * j), s = std::sin(step * j);
    // exact values on the axes (sin(pi) is 1.2e-16 in floating point): the Nyquist term then has no sine part,
    // so its imaginary filter part has exactly no effect and no gradient, as in torch.fft
    if (4 * j == T || 4 * j == 3 * T) c = 0.0;
    if (2 * j == T) s = 0.0;
    tw.c[j] = static_cast<A>(c);
    tw.s[j] = static_cast<A>(s);
  }
  tw.inv_t = static_cast<A>(1.0 / static_cast<double>(T));
  return tw;
}
template Twiddles<float> make_twiddles<float>(int);
template Twiddles<double> make_twiddles<double>(int);

}  // namespace spectral
}  // namespace fxk

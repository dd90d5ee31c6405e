// Host-only input validation and dtype dispatch shared by every op family.
// Messages name the op, the argument and what was expected, e.g.
//   "fxkernels.fcc_fwd: w1 must have shape (C, L1) = (8, 16), got (8, 15)".
#pragma once

#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include "common/common.h"

// Dispatch over the floating types every fxkernels op accepts; defines scalar_t and acc_t in the body.
#define FXK_DISPATCH_FLOATING(DTYPE, NAME, ...)                                    \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, DTYPE, NAME, [&] {     \
    using acc_t = ::fxk::acc_type<scalar_t>;                                       \
    __VA_ARGS__();                                                                 \
  })

namespace fxk {

inline std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// x must be a floating tensor of `dim` dims (dims described by `desc`, e.g. "(B, C, H, W)").
inline void check_floating(const at::Tensor& t, const char* op, const char* name, int64_t dim, const char* desc) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined tensor");
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D ", desc, ", got ", t.dim(), "-D with shape ",
              shape_str(t.sizes()));
  TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
              " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
}

// t must have exactly `expected` shape; `desc` names the symbolic shape, e.g. "(C, L1)".
inline void check_shape(const at::Tensor& t, const char* op, const char* name, const char* desc,
                        at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", desc, " = ", shape_str(expected),
              ", got ", shape_str(t.sizes()));
}

// t must share device and dtype with the reference tensor `ref` (named `ref_name`).
inline void check_same(const at::Tensor& t, const char* op, const char* name, const at::Tensor& ref,
                       const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the same device as ", ref_name, " (",
              ref.device(), "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the same dtype as ", ref_name,
              " (", ref.scalar_type(), "), got ", t.scalar_type());
}

// Optional tensor: absent (nullopt or undefined) -> false.
inline bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// Check an optional parameter tensor (shape, device, dtype) against x; returns it contiguous (or undefined).
inline at::Tensor check_param(const std::optional<at::Tensor>& t, const char* op, const char* name,
                              const char* desc, at::IntArrayRef expected, const at::Tensor& x) {
  if (!present(t)) return at::Tensor();
  check_same(*t, op, name, x, "x");
  check_shape(*t, op, name, desc, expected);
  return t->contiguous();
}

}  // namespace fxk

// Validation of the dynamic-image ops: TORCH_CHECKs with messages naming the op, the argument and what was
// expected; nothing runs before they pass. Also the axis merging and the coefficients.
#include <utility>

#include "dynamic_image/dynamic_image.h"

namespace fxk {
namespace dynamic_image {

namespace {

using Axes = std::vector<std::pair<int64_t, int64_t>>;  // (size, stride), outermost first

// Axes [lo, hi) of t with the size-1 ones dropped and neighbours merged where the outer one steps exactly over
// the inner one: the same elements in the same logical order, in as few axes as the strides allow.
Axes merged(const at::Tensor& t, int64_t lo, int64_t hi) {
  Axes out;
  for (int64_t a = lo; a < hi; ++a) {
    const int64_t n = t.size(a), s = t.stride(a);
    if (n == 1) continue;
    if (!out.empty() && out.back().second == s * n) {
      out.back() = {out.back().first * n, s};
    } else {
      out.emplace_back(n, s);
    }
  }
  return out;
}

// Rows over the axes: the innermost one is the row, the others are decomposed per row.
Rows rows_of(const Axes& outer, std::pair<int64_t, int64_t> row, int64_t numel) {
  Rows r;
  TORCH_INTERNAL_ASSERT(static_cast<int>(outer.size()) <= kMaxDims);
  r.nd = static_cast<int>(outer.size());
  for (int k = 0; k < r.nd; ++k) {
    r.size[k] = outer[k].first;
    r.stride[k] = outer[k].second;
  }
  r.n = row.first;
  r.s = row.second;
  r.count = r.n > 0 ? numel / r.n : 0;
  return r;
}

void check_src(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined tensor");
  TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
              " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), op, ": expected CPU tensors, got ", name, " on ", t.device());
  TORCH_CHECK(t.dim() <= kMaxDims, op, ": ", name, " may have at most ", kMaxDims, " dimensions, got ", t.dim());
}

}  // namespace

Problem prepare_fwd(const char* op, const at::Tensor& x, int64_t dim) {
  check_src(x, op, "x");
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least 1 dimension (the time axis), got a 0-d tensor");
  TORCH_CHECK(dim >= 0 && dim < x.dim(), op, ": dim must name an axis of the ", x.dim(), "-D x of shape ",
              shape_str(x.sizes()), ", in [0, ", x.dim() - 1, "], got ", dim);
  Problem pb;
  pb.src = x;
  pb.T = x.size(dim);
  pb.st = x.stride(dim);
  pb.N = x.numel() / std::max<int64_t>(pb.T, 1);
  if (pb.T == 0) {
    pb.N = 1;
    for (int64_t a = 0; a < x.dim(); ++a)
      if (a != dim) pb.N *= x.size(a);
  }
  // every axis but dim, merged across dim (y is contiguous, so only x's strides decide)
  Axes other = merged(x, 0, dim);
  for (const auto& a : merged(x, dim + 1, x.dim())) {
    if (!other.empty() && other.back().second == a.second * a.first) {
      other.back() = {other.back().first * a.first, a.second};
    } else {
      other.push_back(a);
    }
  }
  std::pair<int64_t, int64_t> row{1, 0};
  if (!other.empty()) {
    row = other.back();
    other.pop_back();
  }
  pb.rows = rows_of(other, row, pb.N);
  return pb;
}

Problem prepare_bwd(const char* op, const at::Tensor& dy, int64_t dim, int64_t T) {
  check_src(dy, op, "dy");
  TORCH_CHECK(dim >= 0 && dim <= dy.dim(), op, ": dim must be in [0, dy.dim()] = [0, ", dy.dim(),
              "] (dy has the shape of x without the axis dim), got ", dim);
  TORCH_CHECK(T >= 0, op, ": T (the length of x's time axis) must be >= 0, got ", T);
  Problem pb;
  pb.src = dy;
  pb.T = T;
  pb.N = dy.numel();
  for (int64_t a = dim; a < dy.dim(); ++a) pb.Q *= dy.size(a);
  // rows within one p: the axes before and after dim merged separately
  Axes before = merged(dy, 0, dim), after = merged(dy, dim, dy.dim());
  std::pair<int64_t, int64_t> row{1, 0};
  if (!after.empty()) {
    row = after.back();
    after.pop_back();
    before.insert(before.end(), after.begin(), after.end());
  } else if (!before.empty()) {
    row = before.back();
    before.pop_back();
    pb.dx_s = T;  // Q = 1: consecutive outputs are T apart in dx
  }
  pb.rows = rows_of(before, row, pb.N);
  return pb;
}

template <typename A>
std::vector<A> coefficients(int64_t T) {
  std::vector<double> H(static_cast<size_t>(T) + 1, 0.0);
  for (int64_t k = 1; k <= T; ++k) H[k] = H[k - 1] + 1.0 / static_cast<double>(k);
  std::vector<A> alpha(static_cast<size_t>(T));
  const double Td = static_cast<double>(T);
  for (int64_t t = 1; t <= T; ++t) {
    const double a = 2.0 * (Td - static_cast<double>(t) + 1.0) - (Td + 1.0) * (H[T] - H[t - 1]);
    alpha[t - 1] = static_cast<A>(a);
  }
  return alpha;
}
template std::vector<float> coefficients<float>(int64_t);
template std::vector<double> coefficients<double>(int64_t);

}  // namespace dynamic_image
}  // namespace fxk

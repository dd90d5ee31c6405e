// Validation of the compact softmax cross-entropy ops: TORCH_CHECKs with messages naming the op, the argument
// and what was expected; nothing runs before they pass.
#include "compact_softmax_ce/compact_softmax_ce.h"

namespace fxk {
namespace compact_softmax_ce {

void check_inputs(const char* op, const at::Tensor& logits, const at::Tensor& target) {
  check_floating(logits, op, "logits", 2, "(N, C)");
  TORCH_CHECK(logits.device().is_cpu(), op, ": expected CPU tensors, got logits on ", logits.device());
  const int64_t N = logits.size(0), C = logits.size(1);
  TORCH_CHECK(C >= 2, op, ": logits must be (N, C) with C >= 2 classes, got shape ", shape_str(logits.sizes()));
  TORCH_CHECK(target.defined(), op, ": target must be a tensor, got an undefined tensor");
  TORCH_CHECK(target.scalar_type() == at::kLong, op, ": target must be int64 (N,) class indices, got ",
              target.scalar_type());
  TORCH_CHECK(target.device() == logits.device(), op, ": target must be on the same device as logits (",
              logits.device(), "), got ", target.device());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == N, op, ": target must have shape (N,) = (", N,
              ",), got ", shape_str(target.sizes()));
  if (N > 0) {
    const int64_t lo = target.min().item<int64_t>(), hi = target.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < C, op, ": target values must be in [0, C) = [0, ", C, "), got values in [", lo,
                ", ", hi, "]");
  }
}

void check_dl(const char* op, const at::Tensor& dl, const at::Tensor& logits) {
  TORCH_CHECK(dl.defined(), op, ": dl must be a tensor, got an undefined tensor");
  TORCH_CHECK(is_supported_float(dl.scalar_type()), op, ": dl must be float32, float64, float16 or bfloat16, got ",
              dl.scalar_type());
  TORCH_CHECK(dl.device() == logits.device(), op, ": dl must be on the same device as logits (", logits.device(),
              "), got ", dl.device());
  TORCH_CHECK(dl.dim() == 1 && dl.size(0) == logits.size(0), op, ": dl must have shape (N,) = (", logits.size(0),
              ",), got ", shape_str(dl.sizes()));
}

}  // namespace compact_softmax_ce
}  // namespace fxk

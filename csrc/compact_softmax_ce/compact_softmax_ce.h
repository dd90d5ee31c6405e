// Host-side glue of the compact softmax cross-entropy ops: argument validation (every check happens before any
// kernel runs). Contract: "Backend contract" in fxkernels/ops/compact_softmax_ce/README.md.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fxk {
namespace compact_softmax_ce {

// Checks logits (N, C) floating, C >= 2, CPU; target (N,) int64 on logits' device with every value in [0, C).
void check_inputs(const char* op, const at::Tensor& logits, const at::Tensor& target);
// Checks dl (N,) floating on logits' device.
void check_dl(const char* op, const at::Tensor& dl, const at::Tensor& logits);

}  // namespace compact_softmax_ce
}  // namespace fxk

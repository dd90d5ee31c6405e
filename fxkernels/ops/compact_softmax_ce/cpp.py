"""C++ CPU backend of the compact softmax cross-entropy: thin wrappers over
``torch.ops.fxkernels.compact_softmax_ce_*`` (csrc/compact_softmax_ce/).

The ops are registered by the compiled extension ``fxkernels._C`` (imported by ``fxkernels._ext``). They are
looked up lazily so importing this module never requires the extension.
Contract (shapes, dtypes, determinism): "Backend contract" in fxkernels/ops/compact_softmax_ce/README.md.
"""

from __future__ import annotations

import torch


def compact_softmax_ce_fwd_cpp(logits, target, beta):
    """logits (N, C) any strides, target (N,) int64 -> per-row losses (N,), accumulation dtype."""
    return torch.ops.fxkernels.compact_softmax_ce_fwd(logits, target, float(beta))


def compact_softmax_ce_bwd_cpp(dl, logits, target, beta):
    """dl (N,) -> dlogits (N, C), contiguous, logits' dtype."""
    return torch.ops.fxkernels.compact_softmax_ce_bwd(dl, logits, target, float(beta))

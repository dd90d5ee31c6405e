"""C++ / CUDA backend of the FCC ops: thin wrappers over ``torch.ops.fxkernels.fcc_{fwd,bwd}``.

The ops are registered by the compiled extension ``fxkernels._C`` (csrc/registration.cpp; imported by
``fxkernels._ext``). They are looked up lazily so importing this module never requires the extension.
Contract: fxkernels/ops/fcc/README.md (``mode``: 0 = V, 1 = H, 2 = VH, 3 = HV).
"""

from __future__ import annotations

import torch


def fcc_fwd_cpp(x, w1, w2, p1, p2, b1, b2, mode):
    """y = fused FCC pass(es) of x; see README.md. Returns a contiguous (B, C, H, W) tensor."""
    return torch.ops.fxkernels.fcc_fwd(x, w1, w2, p1, p2, b1, b2, int(mode))


def fcc_bwd_cpp(dy, x, w1, w2, p1, p2, b1, b2, mode):
    """Returns (dx, dw1, dw2, dp1, dp2, db1, db2) with None where the matching input is None."""
    grads = torch.ops.fxkernels.fcc_bwd(dy, x, w1, w2, p1, p2, b1, b2, int(mode))
    inputs = (x, w1, w2, p1, p2, b1, b2)
    return tuple(None if inp is None else g for g, inp in zip(grads, inputs))

"""C++ CPU backend of the dynamic image: thin wrappers over ``torch.ops.fxkernels.dynamic_image_*``
(csrc/dynamic_image/).

The ops are registered by the compiled extension ``fxkernels._C`` (imported by ``fxkernels._ext``). They are
looked up lazily so importing this module never requires the extension.
Contract (shapes, dtypes, determinism): "Backend contract" in fxkernels/ops/dynamic_image/README.md.
"""

from __future__ import annotations

import torch


def dynamic_image_fwd_cpp(x, dim):
    """x: any rank >= 1, any strides, 0 <= dim < x.dim() -> y (x's shape without dim), contiguous."""
    return torch.ops.fxkernels.dynamic_image_fwd(x, int(dim))


def dynamic_image_bwd_cpp(dy, dim, T):
    """dy: y's shape, any strides -> dx (dy's shape with T inserted at dim), contiguous."""
    return torch.ops.fxkernels.dynamic_image_bwd(dy, int(dim), int(T))

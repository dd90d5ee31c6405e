"""C++ / CUDA backend of the spatial-correlation ops: thin wrappers over ``torch.ops.fxkernels.corr_*`` (csrc/corr/).

The ops are registered by the compiled extension ``fxkernels._C`` (csrc/registration.cpp; imported by
``fxkernels._ext``). They are looked up lazily so importing this module never requires the extension.
Contract (shapes, dtypes, determinism): "Backend contract" in fxkernels/ops/corr/README.md.
"""

from __future__ import annotations

import torch


def spatial_correlation_fwd_cpp(f1, f2, patch, dilation):
    """f1, f2: (B, C, H, W) -> out: (B, patch*patch, H, W) contiguous, f1's dtype, 0 outside the map."""
    return torch.ops.fxkernels.corr_fwd(f1, f2, int(patch), int(dilation))


def spatial_correlation_bwd_cpp(dout, f1, f2, patch, dilation):
    """dout: (B, patch*patch, H, W), f1, f2: (B, C, H, W) -> (df1, df2), both (B, C, H, W), deterministic."""
    return tuple(torch.ops.fxkernels.corr_bwd(dout, f1, f2, int(patch), int(dilation)))

"""C++ / CUDA backend of the spectral filter: thin wrappers over ``torch.ops.fxkernels.spectral_*`` (csrc/spectral/).

The ops are registered by the compiled extension ``fxkernels._C`` (csrc/registration.cpp; imported by
``fxkernels._ext``). They are looked up lazily so importing this module never requires the extension.
Contract (shapes, dtypes, determinism): "Backend contract" in fxkernels/ops/spectral/README.md.
"""

from __future__ import annotations

import torch


def spectral_filter_fwd_cpp(x, filt, residual):
    """x: (B, C, T, H, W), filt: (B, C, M, H, W, 2) (expanded views), residual or None -> y contiguous."""
    return torch.ops.fxkernels.spectral_fwd(x, filt, residual)


def spectral_filter_bwd_cpp(dy, x, filt, need_dx, need_dfilt):
    """-> (dx or None, dfilt (B, C, M, H, W, 2) in the accumulation dtype or None), deterministic."""
    dx, dfilt = torch.ops.fxkernels.spectral_bwd(dy, x, filt, bool(need_dx), bool(need_dfilt))
    return (dx if need_dx else None), (dfilt if need_dfilt else None)

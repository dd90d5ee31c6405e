"""C++ / CUDA backend of the CCC ops: thin wrappers over ``torch.ops.fxkernels.ccc_*`` (csrc/ccc/).

The ops are registered by the compiled extension ``fxkernels._C`` (csrc/registration.cpp; imported by
``fxkernels._ext``). They are looked up lazily so importing this module never requires the extension.
Contract (shapes, dtypes, tie rules, determinism): "Backend contract" in fxkernels/ops/ccc/README.md.
"""

from __future__ import annotations

import torch


def knn_cosine_cpp(x, k):
    """x: (B, R, D) float -> nbr: (B, R, k) int64, top-k cosine neighbours, ties -> lower index."""
    return torch.ops.fxkernels.ccc_knn(x, int(k))


def edge_max_fwd_cpp(ag, nbr):
    """ag: (B, C, 2F), nbr: (B, C, k) int64 -> (y: (B, C, F) ag's dtype, arg: (B, C, F) uint8)."""
    return torch.ops.fxkernels.ccc_edge_max_fwd(ag, nbr)


def edge_max_bwd_cpp(dy, y, arg, nbr):
    """dy, y, arg: (B, C, F), nbr: (B, C, k) -> dag: (B, C, 2F) = [da | dg], deterministic."""
    return torch.ops.fxkernels.ccc_edge_max_bwd(dy, y, arg, nbr)


def spatial_edge_fwd_cpp(x, nbr, w2, a):
    """x: (B, C, N), nbr: (B, N, k) int64, w2: (F, N), a: (B, C, F) -> (y: (B, C, F), arg: (B, C, F) uint8)."""
    return torch.ops.fxkernels.ccc_spatial_fwd(x, nbr, w2, a)


def spatial_edge_bwd_cpp(dy, y, arg, x, nbr, w2):
    """dy, y, arg: (B, C, F), x: (B, C, N), nbr: (B, N, k), w2: (F, N) -> (da (B, C, F), dxg (B, C, N), dw2 (F, N))."""
    return tuple(torch.ops.fxkernels.ccc_spatial_bwd(dy, y, arg, x, nbr, w2))

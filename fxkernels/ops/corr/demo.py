"""`python -m fxkernels demo` cases of the corr family, at its model's shape (tiny: a quick self-check)."""

import torch

from ..opkit import DemoCase, dims
from . import spatial_correlation
from .corr import KERNELS


def demo_cases(device, tiny: bool) -> list:
    # MOL's FlowNetC correlation: 56 frame pairs (B=8 clips x 7 pairs), 256 channels, 16x16, patch 21,
    # dilation 2
    shape, P, d = ((2, 4, 6, 6), 5, 2) if tiny else ((56, 256, 16, 16), 21, 2)
    t = tuple(torch.randn(*shape, device=device) for _ in range(2))
    desc = f"f1,f2 {dims(t[0])}, P={P} d={d}"
    return [
        DemoCase(
            "spatial_correlation", desc, t, lambda be, t: spatial_correlation(*t, P, d, backend=be), KERNELS
        )
    ]

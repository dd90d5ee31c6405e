"""`python -m fxkernels demo` cases of the spectral family, at its model's shape (tiny: a quick self-check)."""

import torch

from ..opkit import DemoCase, dims
from . import spectral_filter
from .spectral import KERNELS


def demo_cases(device, tiny: bool) -> list:
    # MTSTWN's STFE temporal branch at its first STFM (block 0): 15 steps, a per-position filter, the residual
    B, C, T, H, W = (2, 3, 6, 4, 4) if tiny else (8, 64, 15, 28, 28)
    M = T // 2 + 1
    x, res = torch.randn(B, C, T, H, W, device=device), torch.randn(B, C, T, H, W, device=device)
    # the layout TemporalFilter makes: its generator's (B, C, M, 2, H, W) output seen as (B, C, M, H, W, 2)
    filt = torch.randn(B, C, M, 2, H, W, device=device).permute(0, 1, 2, 4, 5, 3)
    desc = f"x {dims(x)}, filt {dims(filt)}"
    return [
        DemoCase(
            "spectral_filter", desc, (x, filt, res), lambda be, t: spectral_filter(*t, backend=be), KERNELS
        )
    ]

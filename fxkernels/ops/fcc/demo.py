"""`python -m fxkernels demo` cases of the fcc family, at its model's shape (tiny: a quick self-check)."""

import torch

from ..opkit import DemoCase, dims
from . import KERNELS, circular_conv, circular_conv2d


def demo_cases(device, tiny: bool) -> list:
    B, C, H, W = (2, 4, 8, 8) if tiny else (32, 128, 16, 16)  # MOL's FCC shape
    x = torch.randn(B, C, H, W, device=device)
    w1, w2 = torch.randn(C, H, device=device) / 4, torch.randn(C, W, device=device) / 4
    p1, p2 = torch.randn(C, H, device=device), torch.randn(C, W, device=device)
    b1, b2 = torch.randn(C, device=device), torch.randn(C, device=device)
    t = (x, w1, w2, p1, p2, b1, b2)
    shape = f"x {dims(x)}"

    def v(be, t):
        return circular_conv(t[0], t[1], -2, t[3], t[5], backend=be)

    def vh(be, t):
        return circular_conv2d(t[0], *t[1:3], "VH", *t[3:7], backend=be)

    return [
        DemoCase("circular_conv (V)", shape, t, v, KERNELS),
        DemoCase("circular_conv2d (VH)", shape, t, vh, KERNELS),
    ]

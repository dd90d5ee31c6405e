"""`python -m fxkernels demo` cases of the ccc family, at its model's shape (tiny: a quick self-check)."""

import torch

from ..opkit import DemoCase, dims
from . import channel_edge_conv, knn_cosine, spatial_edge_conv
from .ccc import KERNELS


def demo_cases(device, tiny: bool) -> list:
    # MOL's CCC: (32, 128, 16, 16) maps flattened to N = 256, 4 neighbours
    B, C, N, k = (2, 8, 16, 3) if tiny else (32, 128, 256, 4)
    x = torch.randn(B, C, N, device=device)
    w = [torch.randn(N, N, device=device) / N**0.5 for _ in range(2)]
    b = [torch.randn(N, device=device) / N**0.5 for _ in range(2)]
    t = (x, *w, *b)
    shape = f"x {dims(x)}, k={k}"

    def channel(be, t):
        return channel_edge_conv(t[0], knn_cosine(t[0], k, be), *t[1:], backend=be)

    def spatial(be, t):
        return spatial_edge_conv(t[0], knn_cosine(t[0].transpose(1, 2), k, be), *t[1:], backend=be)

    return [
        DemoCase("CCC channel (knn+conv)", shape, t, channel, KERNELS),
        DemoCase("CCC spatial (knn+conv)", shape, t, spatial, KERNELS),
    ]

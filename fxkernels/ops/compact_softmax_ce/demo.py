"""`python -m fxkernels demo` cases of the compact softmax cross-entropy family (tiny: a quick self-check)."""

import torch

from ..opkit import DemoCase, dims
from . import compact_softmax_ce
from .compact_softmax_ce import KERNELS


def demo_cases(device, tiny: bool) -> list:
    # a classifier head's loss: a batch of 4096 rows over 1000 classes (tiny: 32 rows, 7 classes)
    N, C = (32, 7) if tiny else (4096, 1000)
    z = torch.randn(N, C, device=device)
    y = torch.randint(0, C, (N,), device=device)
    return [
        DemoCase(
            "compact_softmax_ce",
            f"logits {dims(z)}, beta=0.2",
            (z,),
            lambda be, t: compact_softmax_ce(t[0], y, 0.2, "mean", backend=be),
            KERNELS,
        )
    ]

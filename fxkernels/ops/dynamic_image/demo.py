"""`python -m fxkernels demo` cases of the dynamic-image family, at its model's shape (tiny: a quick self-check)."""

import torch

from ..opkit import DemoCase, dims
from . import dynamic_image
from .dynamic_image import KERNELS


def demo_cases(device, tiny: bool) -> list:
    # MTSTWN's input: B = 8 RGB clips of 30 frames, the dynamic image over the time axis (dim=2)
    shape = (2, 3, 6, 4, 5) if tiny else (8, 3, 30, 224, 224)
    x = torch.randn(shape, device=device)
    return [
        DemoCase(
            "dynamic_image",
            f"x {dims(x)}, dim=2",
            (x,),
            lambda be, t: dynamic_image(t[0], dim=2, backend=be),
            KERNELS,
        )
    ]

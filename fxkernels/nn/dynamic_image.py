"""DynamicImage: the dynamic image of a clip (approximate rank pooling, fxkernels/ops/dynamic_image/README.md)."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.dynamic_image import dynamic_image


class DynamicImage(nn.Module):
    """y = sum_t alpha_t x_t over the axis `dim` (Bilen's approximate rank-pooling weights); no parameters.

    x: (B, T, C, H, W) for dim=1 (MTSTWN: an RGB clip (B, 3, T, H, W) with dim=2) -> y: x's shape without `dim`,
    e.g. (B, C, H, W). Any rank >= 1, any strides, float32/float64/float16/bfloat16.
    """

    def __init__(self, dim: int = 1, backend: str = "auto"):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"fxkernels.DynamicImage: dim must be an int, got {type(dim).__name__}")
        self.dim = dim
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dynamic_image(x, dim=self.dim, backend=self.backend)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, backend={self.backend!r}"


__all__ = ["DynamicImage"]

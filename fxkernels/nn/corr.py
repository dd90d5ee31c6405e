"""Spatial-correlation layer (the FlowNetC cost volume; math: fxkernels/ops/corr/README.md)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.corr import spatial_correlation


class SpatialCorrelation(nn.Module):
    """Cost volume of two feature maps: f1, f2: (B, C, H, W) -> (B, P*P, H, W).

    out[b, p*P+q, h, w] = sum_c f1[b,c,h,w] f2[b,c,h+(p-P//2)d,w+(q-P//2)d]; with ``normalize=True`` the
    result is divided by C and, with ``negative_slope`` set, passed through leaky_relu (FlowNetC / MOL:
    ``SpatialCorrelation(21, 2, normalize=True, negative_slope=0.1)``).
    """

    def __init__(
        self,
        patch_size: int = 21,
        dilation: int = 2,
        normalize: bool = False,
        negative_slope: float | None = None,
        backend: str = "auto",
    ):
        super().__init__()
        self.patch_size, self.dilation = patch_size, dilation
        self.normalize, self.negative_slope, self.backend = normalize, negative_slope, backend

    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        out = spatial_correlation(f1, f2, self.patch_size, self.dilation, backend=self.backend)
        if self.normalize:
            out = out / f1.shape[1]
        if self.negative_slope is not None:
            out = F.leaky_relu(out, self.negative_slope)
        return out

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, dilation={self.dilation}, normalize={self.normalize}, "
            f"negative_slope={self.negative_slope}, backend={self.backend!r}"
        )


__all__ = ["SpatialCorrelation"]

"""MTSTWN spatiotemporal feature modulation: TemporalFilter, SpatialExtractor, STFE, FWM, STFM.
(Formulas and shapes: fxkernels/ops/spectral/README.md, "Modules".)

Every module maps (B, C, T, H, W) -> (B, C, T, H, W). The temporal branch runs the fused `spectral_filter`
(rfft -> per-position complex filter -> irfft + residual in one pass); the rest is plain PyTorch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._checks import check_tensor
from ..ops.spectral import spectral_filter
from ..ops.spectral.reference import NORMS


def _check_size(name: str, what: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"fxkernels.{name}: {what} must be a positive int, got {v!r}")
    return v


def _check_norm(name: str, norm) -> Optional[str]:
    if norm is not None and norm not in NORMS:
        raise ValueError(f"fxkernels.{name}: norm must be one of {NORMS} (or None), got {norm!r}")
    return norm


def _check_input(name: str, x, channels: int, T: Optional[int] = None) -> None:
    check_tensor(name, "the input", x, 5, shape_desc="(B, C, T, H, W)")
    if x.shape[1] != channels:
        raise ValueError(
            f"fxkernels.{name}: the input must have {channels} channels (axis 1 of (B, C, T, H, W)), "
            f"got shape {tuple(x.shape)}"
        )
    if T is not None and x.shape[2] != T:
        raise ValueError(
            f"fxkernels.{name}: the input must have the module's T={T} frames (axis 2 of (B, C, T, H, W)), "
            f"got shape {tuple(x.shape)}"
        )


class TemporalFilter(nn.Module):
    """STFE temporal branch (DTF-style learned frequency filter along T).

    y = irfft(rfft(u) * F(u), n=T) + z,  u = Conv3d_3x3x3(z),  F(u) = Conv2d_1x1(u as (B, c*T, H, W)).

    z: (B, c, T, H, W) -> y: (B, c, T, H, W). The filter generator maps the c*T time-stacked channels to
    c*M*2 = (channel, frequency, real/imag) per position, M = T // 2 + 1; the filter reaches
    `spectral_filter` as a strided view (B, c, M, H, W, 2), no copy.
    """

    def __init__(self, channels: int, T: int, norm: Optional[str] = "ortho", backend: str = "auto"):
        super().__init__()
        self.channels = _check_size("TemporalFilter", "channels", channels)
        self.T = _check_size("TemporalFilter", "T", T)
        self.M = T // 2 + 1
        self.norm = _check_norm("TemporalFilter", norm)
        self.backend = backend
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)
        self.filter_gen = nn.Conv2d(channels * T, channels * self.M * 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input("TemporalFilter", z, self.channels, self.T)
        B, c, T, H, W = z.shape
        u = self.conv(z)
        f = self.filter_gen(u.reshape(B, c * T, H, W))  # (B, c*M*2, H, W), channel = (ci*M + k)*2 + re/im
        filt = f.view(B, c, self.M, 2, H, W).permute(0, 1, 2, 4, 5, 3)  # (B, c, M, H, W, 2) view
        # z.to(u.dtype): under autocast the convs return half precision, the op wants one dtype
        return spectral_filter(u, filt, residual=z.to(u.dtype), dim=2, norm=self.norm, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{self.channels}, T={self.T}, norm={self.norm!r}, backend={self.backend!r}"


class SpatialExtractor(nn.Module):
    """STFE spatial branch: multi-scale 2-D convolutions per frame.

    y = Conv2d_1x1(cat(Conv2d_3x3(z_t), Conv2d_5x5(z_t), Conv2d_7x7(z_t))) for every frame z_t.

    z: (B, c, T, H, W) -> y: (B, c, T, H, W); T is folded into the batch. `backend` is accepted (no spectral
    op here) so that `backend` can be set uniformly on a module tree.
    """

    def __init__(self, channels: int, backend: str = "auto"):
        super().__init__()
        self.channels = _check_size("SpatialExtractor", "channels", channels)
        self.backend = backend
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv5 = nn.Conv2d(channels, channels, 5, padding=2)
        self.conv7 = nn.Conv2d(channels, channels, 7, padding=3)
        self.fuse = nn.Conv2d(3 * channels, channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input("SpatialExtractor", z, self.channels)
        B, c, T, H, W = z.shape
        f = z.transpose(1, 2).reshape(B * T, c, H, W)
        y = self.fuse(torch.cat([self.conv3(f), self.conv5(f), self.conv7(f)], dim=1))  # (B*T, c, H, W)
        return y.reshape(B, T, c, H, W).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"{self.channels}, backend={self.backend!r}"


class STFE(nn.Module):
    """Spatiotemporal feature extractor (MTSTWN section 3.5.1).

    y = cat(TemporalFilter(z1), SpatialExtractor(z2), z3) with z = cat(z1, z2, z3) along channels,
    z1, z2: d // 3 channels each, z3: the remaining d - 2 (d // 3).

    z: (B, d, T, H, W) -> y: (B, d, T, H, W); d >= 3.
    """

    def __init__(self, dim: int, T: int, norm: Optional[str] = "ortho", backend: str = "auto"):
        super().__init__()
        _check_size("STFE", "dim", dim)
        if dim < 3:
            raise ValueError(f"fxkernels.STFE: dim must be >= 3 (three channel groups), got {dim}")
        self.dim, self.T, self.backend = dim, _check_size("STFE", "T", T), backend
        self.norm = _check_norm("STFE", norm)
        self.splits = (dim // 3, dim // 3, dim - 2 * (dim // 3))
        self.temporal = TemporalFilter(self.splits[0], T, norm=norm, backend=backend)
        self.spatial = SpatialExtractor(self.splits[1], backend=backend)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input("STFE", z, self.dim, self.T)
        z1, z2, z3 = torch.split(z, self.splits, dim=1)
        return torch.cat([self.temporal(z1), self.spatial(z2), z3], dim=1)

    def extra_repr(self) -> str:
        return f"{self.dim}, T={self.T}, splits={self.splits}, norm={self.norm!r}, backend={self.backend!r}"


class FWM(nn.Module):
    """Feature weighting module (MTSTWN section 3.5.2): temporal then spatial sigmoid gates, plus a residual.

    out = wS * wT * y + y,  wT = sigmoid(Conv1d_3(mean_{H,W} y)),  wS = sigmoid(Conv2d_3x3(sum_T wT * y)).

    y: (B, d, T, H, W) -> out: (B, d, T, H, W); wT broadcasts over (H, W), wS over T. `backend` is accepted
    for uniformity (no spectral op here).
    """

    def __init__(self, dim: int, backend: str = "auto"):
        super().__init__()
        self.dim = _check_size("FWM", "dim", dim)
        self.backend = backend
        self.temporal_conv = nn.Conv1d(dim, dim, 3, padding=1)
        self.spatial_conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_input("FWM", y, self.dim)
        wT = torch.sigmoid(self.temporal_conv(y.mean(dim=(3, 4))))  # (B, d, T)
        yt = wT[..., None, None] * y
        wS = torch.sigmoid(self.spatial_conv(yt.sum(dim=2)))  # (B, d, H, W)
        return wS[:, :, None] * yt + y

    def extra_repr(self) -> str:
        return f"{self.dim}, backend={self.backend!r}"


class STFM(nn.Module):
    """Spatiotemporal feature modulation (MTSTWN section 3.5): out = FWM(STFE(z)).

    z: (B, d, T, H, W) -> out: (B, d, T, H, W); d >= 3.
    """

    def __init__(self, dim: int, T: int, norm: Optional[str] = "ortho", backend: str = "auto"):
        super().__init__()
        self.dim, self.T, self.backend = dim, T, backend
        self.stfe = STFE(dim, T, norm=norm, backend=backend)
        self.fwm = FWM(dim, backend=backend)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input("STFM", z, self.dim, self.T)
        return self.fwm(self.stfe(z))

    def extra_repr(self) -> str:
        return f"{self.dim}, T={self.T}, backend={self.backend!r}"


__all__ = ["TemporalFilter", "SpatialExtractor", "STFE", "FWM", "STFM"]

"""FCC layers: FCCV, FCCH, the paper's FCC block and the official MOL/ParC block ParCFCC.

Formulas, shapes and the official block's layout: fxkernels/ops/fcc/README.md, "Modules".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.fcc import circular_conv, circular_conv2d


def _conv_default_(weight: torch.Tensor, fan_in: int):
    # nn.Conv2d's default init (kaiming_uniform with a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class _FCCPass(nn.Module):
    _dim = -2

    def __init__(
        self, channels: int, length: int, bias: bool = True, pos: bool = True, backend: str = "auto"
    ):
        super().__init__()
        self.channels, self.length, self.backend = channels, length, backend
        self.weight = nn.Parameter(torch.empty(channels, length))
        self.pos = nn.Parameter(torch.empty(channels, length)) if pos else None
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        _conv_default_(self.weight, self.length)
        if self.bias is not None:
            _conv_default_(self.bias, self.length)
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x):
        cast = lambda t: None if t is None else t.to(x.dtype)  # noqa: E731  (autocast-friendly)
        return circular_conv(x, cast(self.weight), self._dim, cast(self.pos), cast(self.bias), self.backend)

    def extra_repr(self):
        return f"{self.channels}, {self.length}, bias={self.bias is not None}, pos={self.pos is not None}, backend={self.backend!r}"


class FCCV(_FCCPass):
    """FCC-V: circular fully-connected convolution along H with a positional embedding. x: (B, C, H=length, W)."""

    _dim = -2


class FCCH(_FCCPass):
    """FCC-H: circular fully-connected convolution along W with a positional embedding. x: (B, C, H, W=length)."""

    _dim = -1


class FCC(nn.Module):
    """The MOL paper's FCC block (Fig. 3): 1x1 conv -> [FCC-V then FCC-H] || [FCC-H then FCC-V] -> concat -> 1x1 conv.

    x: (B, C, H, W) -> (B, C, H, W). Each branch runs as one fused `circular_conv2d`.
    `residual=True` adds the input to the output (the F5C block uses it).
    """

    def __init__(self, channels: int, height: int, width: int, residual: bool = False, backend: str = "auto"):
        super().__init__()
        self.channels, self.height, self.width = channels, height, width
        self.residual, self.backend = residual, backend
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.vh = nn.ModuleDict({"v": FCCV(channels, height), "h": FCCH(channels, width)})
        self.hv = nn.ModuleDict({"h": FCCH(channels, width), "v": FCCV(channels, height)})
        self.conv_out = nn.Conv2d(2 * channels, channels, 1)

    @staticmethod
    def _branch(x, first, second, order, backend):
        c = lambda t: None if t is None else t.to(x.dtype)  # noqa: E731
        return circular_conv2d(
            x, c(first.weight), c(second.weight), order, c(first.pos), c(second.pos),
            c(first.bias), c(second.bias), backend,
        )  # fmt: skip

    def forward(self, x):
        if x.dim() != 4 or x.shape[1:] != (self.channels, self.height, self.width):
            raise ValueError(
                f"fxkernels.FCC: x must have shape (B, {self.channels}, {self.height}, {self.width}), "
                f"got {tuple(x.shape)}"
            )
        u = self.conv_in(x)
        y1 = self._branch(u, self.vh["v"], self.vh["h"], "VH", self.backend)
        y2 = self._branch(u, self.hv["h"], self.hv["v"], "HV", self.backend)
        y = self.conv_out(torch.cat([y1, y2], dim=1))
        return y + x if self.residual else y


class ParCFCC(nn.Module):
    """The FCC block of the official MOL code (from ParC-Net), state-dict compatible with it.

    x: (B, 2*dim, H, W) -> (B, 2*dim, H, W). Two branches on the channel halves:
    x1 -> BN1(x1 + pe_1_H) -> FCC-V(K_1_H) -> +pe_2_W -> FCC-H(K_2_W) -> + x1;
    x2 -> BN2(x2 + pe_1_W) -> FCC-H(K_1_W) -> +pe_2_H -> FCC-V(K_2_H) -> + x2.
    Meta kernels of length `meta_kernel_size` are cropped ("crop") or bilinearly resized
    ("interpolation_bilinear", align_corners=True) to the map size. Without `mid_mix` each branch is one fused
    `circular_conv2d`; `mid_mix` channel-shuffles (groups=2) the two intermediates, so the passes run separately.
    Loading an official state dict ignores its unused `ffn.*` entries.
    """

    def __init__(
        self,
        dim: int = 64,
        meta_kernel_size: int = 32,
        instance_kernel_method: str = "crop",
        use_pe: bool = True,
        mid_mix: bool = False,
        bias: bool = True,
        backend: str = "auto",
    ):
        super().__init__()
        if instance_kernel_method not in ("crop", "interpolation_bilinear"):
            raise ValueError(
                "fxkernels.ParCFCC: instance_kernel_method must be 'crop' or 'interpolation_bilinear', "
                f"got {instance_kernel_method!r}"
            )
        self.dim, self.meta_kernel_size = dim, meta_kernel_size
        self.instance_kernel_method, self.use_pe, self.mid_mix = instance_kernel_method, use_pe, mid_mix
        self.backend = backend
        M = meta_kernel_size
        self.meta_kernel_1_H = nn.Parameter(torch.empty(dim, 1, M, 1))
        self.meta_kernel_1_W = nn.Parameter(torch.empty(dim, 1, 1, M))
        self.meta_kernel_2_H = nn.Parameter(torch.empty(dim, 1, M, 1))
        self.meta_kernel_2_W = nn.Parameter(torch.empty(dim, 1, 1, M))
        for name in ("1_H", "1_W", "2_H", "2_W"):
            _conv_default_(getattr(self, f"meta_kernel_{name}"), M)
            setattr(self, f"meta_{name}_bias", nn.Parameter(torch.randn(dim)) if bias else None)
        if use_pe:
            self.meta_pe_1_H = nn.Parameter(torch.randn(1, dim, M, 1))
            self.meta_pe_1_W = nn.Parameter(torch.randn(1, dim, 1, M))
            self.meta_pe_2_H = nn.Parameter(torch.randn(1, dim, M, 1))
            self.meta_pe_2_W = nn.Parameter(torch.randn(1, dim, 1, M))
        self.pre_Norm_1 = nn.BatchNorm2d(dim)
        self.pre_Norm_2 = nn.BatchNorm2d(dim)
        self.mixer = nn.ChannelShuffle(2) if mid_mix else None

    # (C, 1, M, 1) / (1, C, M, 1) meta tensor -> (C, L) instance vector along its long axis
    def _instance(self, meta: torch.Tensor, length: int, along_h: bool) -> torch.Tensor:
        if length > self.meta_kernel_size and self.instance_kernel_method == "crop":
            raise ValueError(
                f"fxkernels.ParCFCC: instance_kernel_method='crop' needs H, W <= meta_kernel_size = "
                f"{self.meta_kernel_size}, got a feature map side of {length}; use a larger meta_kernel_size or "
                "instance_kernel_method='interpolation_bilinear'"
            )
        if self.instance_kernel_method == "crop":
            inst = meta[:, :, :length, :] if along_h else meta[:, :, :, :length]
        else:
            size = (length, 1) if along_h else (1, length)
            inst = F.interpolate(meta, size, mode="bilinear", align_corners=True)
        return inst.reshape(self.dim, length)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != 2 * self.dim:
            raise ValueError(
                f"fxkernels.ParCFCC: x must have shape (B, 2*dim={2 * self.dim}, H, W), got {tuple(x.shape)}"
            )
        H, W = x.shape[2], x.shape[3]
        dt = x.dtype
        x1, x2 = torch.chunk(x, 2, dim=1)
        k1h = self._instance(self.meta_kernel_1_H, H, True).to(dt)
        k1w = self._instance(self.meta_kernel_1_W, W, False).to(dt)
        k2h = self._instance(self.meta_kernel_2_H, H, True).to(dt)
        k2w = self._instance(self.meta_kernel_2_W, W, False).to(dt)
        b = [getattr(self, f"meta_{n}_bias") for n in ("1_H", "1_W", "2_H", "2_W")]
        b1h, b1w, b2h, b2w = (None if t is None else t.to(dt) for t in b)
        pe2h = pe2w = None
        if self.use_pe:
            pe1h = self._instance(self.meta_pe_1_H, H, True).to(dt)
            pe1w = self._instance(self.meta_pe_1_W, W, False).to(dt)
            pe2h = self._instance(self.meta_pe_2_H, H, True).to(dt)
            pe2w = self._instance(self.meta_pe_2_W, W, False).to(dt)
            x1 = x1 + pe1h[None, :, :, None]
            x2 = x2 + pe1w[None, :, None, :]
        x1 = self.pre_Norm_1(x1)
        x2 = self.pre_Norm_2(x2)
        be = self.backend
        if self.mixer is None:
            y1 = circular_conv2d(x1, k1h, k2w, "VH", None, pe2w, b1h, b2w, backend=be)
            y2 = circular_conv2d(x2, k1w, k2h, "HV", None, pe2h, b1w, b2h, backend=be)
        else:
            z1 = circular_conv(x1, k1h, -2, None, b1h, backend=be)
            z2 = circular_conv(x2, k1w, -1, None, b1w, backend=be)
            z1, z2 = torch.chunk(self.mixer(torch.cat([z1, z2], dim=1)), 2, dim=1)
            y1 = circular_conv(z1, k2w, -1, pe2w, b2w, backend=be)
            y2 = circular_conv(z2, k2h, -2, pe2h, b2h, backend=be)
        return torch.cat([y1 + x[:, : self.dim], y2 + x[:, self.dim :]], dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the official module builds an `ffn` it never calls: accept and drop its entries
        for key in [k for k in state_dict if k.startswith(prefix + "ffn.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return (
            f"dim={self.dim}, meta_kernel_size={self.meta_kernel_size}, "
            f"instance_kernel_method={self.instance_kernel_method!r}, use_pe={self.use_pe}, "
            f"mid_mix={self.mid_mix}, backend={self.backend!r}"
        )


__all__ = ["FCCV", "FCCH", "FCC", "ParCFCC"]

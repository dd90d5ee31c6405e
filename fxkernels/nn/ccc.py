"""CCC modules: `CCC`, the paper's `F5C` block, and `MOLF5C`, the official MOL composition.

Math, the two graph semantics and shapes: fxkernels/ops/ccc/README.md.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..ops.ccc import channel_edge_conv, knn_cosine, spatial_edge_conv
from .fcc import FCC, ParCFCC

GRAPHS = ("channel", "spatial")


class CCC(nn.Module):
    """Channel correspondence convolution: k-NN graph + max-aggregated edge convolution.

    graph="channel" (the paper): nodes are the C channels, each an (H*W)-vector.
    graph="spatial" (the official MOL code): nodes are the H*W positions, the edge weights act on the
    flattened map of each channel; needed to reproduce official MOL checkpoints.
    Both graphs, and why they differ: fxkernels/ops/ccc/README.md.
    The edge weights are laid out as the official `edge_feature` module: `conv1`, `conv2` =
    `Conv1d(1, N, kernel_size=N)` with N = H*W, so official state dicts load as they are.
    `out_conv` adds the paper's 1x1 convolution (C -> C); it needs `channels` (or infers it lazily).

    x: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        height: int,
        width: int,
        k: int = 4,
        graph: str = "channel",
        out_conv: bool = True,
        channels: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__()
        if graph not in GRAPHS:
            raise ValueError(f"fxkernels.CCC: graph must be 'channel' or 'spatial', got {graph!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"fxkernels.CCC: k must be a positive int, got {k!r}")
        self.height, self.width, self.k, self.graph, self.backend = height, width, k, graph, backend
        n = height * width
        self.conv1 = nn.Conv1d(1, n, kernel_size=n)
        self.conv2 = nn.Conv1d(1, n, kernel_size=n)
        if out_conv:
            self.out_conv = nn.LazyConv2d(0, 1) if channels is None else nn.Conv2d(channels, channels, 1)
        else:
            self.out_conv = None

    def _lazy_out_conv(self, C: int):
        # the paper's 1x1 conv maps C -> C: a lazy conv learns C on first use
        if isinstance(self.out_conv, nn.LazyConv2d) and self.out_conv.has_uninitialized_params():
            self.out_conv.out_channels = C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[2:]) != (self.height, self.width):
            raise ValueError(
                f"fxkernels.CCC: x must have shape (B, C, H, W) with (H, W) = ({self.height}, {self.width}), "
                f"got {tuple(x.shape)}"
            )
        B, C, H, W = x.shape
        f = x.reshape(B, C, H * W)
        w1, w2 = self.conv1.weight[:, 0], self.conv2.weight[:, 0]  # (N, N)
        b1, b2 = self.conv1.bias, self.conv2.bias
        if self.graph == "channel":
            nbr = knn_cosine(f, self.k, backend=self.backend)
            y = channel_edge_conv(f, nbr, w1, w2, b1, b2, backend=self.backend)
        else:
            nbr = knn_cosine(f.transpose(1, 2), self.k, backend=self.backend)
            y = spatial_edge_conv(f, nbr, w1, w2, b1, b2, backend=self.backend)
        y = y.view(B, C, H, W)
        if self.out_conv is not None:
            self._lazy_out_conv(C)
            y = self.out_conv(y)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.height}, {self.width}, k={self.k}, graph={self.graph!r}, "
            f"out_conv={self.out_conv is not None}, backend={self.backend!r}"
        )


class F5C(nn.Module):
    """The paper's F5C block (MOL Fig. 2): z = FCC(x) + x, y = z + CCC(z).

    x: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        k: int = 4,
        graph: str = "channel",
        out_conv: bool = True,
        backend: str = "auto",
    ):
        super().__init__()
        self.fcc = FCC(channels, height, width, residual=True, backend=backend)
        self.ccc = CCC(height, width, k, graph, out_conv, channels=channels, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fcc(x)
        return z + self.ccc(z)


class MOLF5C(nn.Module):
    """The official MOL composition of one frame's block: `ParCFCC` then the spatial-graph CCC with no
    1x1 conv, y = z + CCC(z) with z = ParCFCC(x) (which has its own residual).

    Children `fcc` (official FCC layout: `meta_kernel_*`, `meta_*_bias`, `meta_pe_*`, `pre_Norm_*`) and
    `ccc` (official `edge_feature` layout: `conv1`, `conv2`). `load_official(fcc_state, ccc_state)` takes
    the state dicts of an official checkpoint's `FCC_1` and `CCC_1` (or `_2`) entries.

    x: (B, 2*dim, height, width) -> same shape. Official MOL: dim=64, 16x16, k=4.
    """

    def __init__(
        self, dim: int = 64, height: int = 16, width: int = 16, k: int = 4, backend: str = "auto", **parc
    ):
        super().__init__()
        self.fcc = ParCFCC(dim, backend=backend, **parc)
        self.ccc = CCC(height, width, k, graph="spatial", out_conv=False, backend=backend)

    def load_official(self, fcc_state: dict, ccc_state: dict, strict: bool = True):
        self.fcc.load_state_dict(fcc_state, strict=strict)
        self.ccc.load_state_dict(ccc_state, strict=strict)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fcc(x)
        return z + self.ccc(z)


__all__ = ["CCC", "F5C", "MOLF5C"]

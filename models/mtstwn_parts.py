"""Building blocks of MTSTWN (models/mtstwn.py): the ASAM mask generator, MViT v1's absolute positional
embedding without a class token, the shared-encoder block plan and the task branches.

User guide: docs/models/mtstwn.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import fxkernels
from fxkernels.nn import MSBlockConfig

MVITS = ("v1", "v2")
MASK_ACTS = ("none", "sigmoid")
# ITU-R BT.601 luma weights: the paper converts the RGB clip to grey before the 3-D stem
GRAY = (0.299, 0.587, 0.114)
KERNEL = (3, 3, 3)  # kernel_q = kernel_kv in every block
KV_STRIDE0 = (1, 8, 8)  # the adaptive kv stride starts here (mvit_v2_s), divided at each q-stride block
Q_STRIDE = (1, 2, 2)  # q stride of the first block of each stage


def conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def to_gray(x: Tensor) -> Tensor:
    """(B, 3, T, H, W) RGB -> (B, 1, T, H, W) grey, 0.299 R + 0.587 G + 0.114 B."""
    return GRAY[0] * x[:, 0:1] + GRAY[1] * x[:, 1:2] + GRAY[2] * x[:, 2:3]


class ASAM(nn.Module):
    """Adaptive spatial attention module (paper section 3.3, eq. 1-3): the clip's dynamic image -> one
    strided 2-D convolution -> a spatial mask on the stem's grid.

        DI = sum_t alpha_t x[:, :, t]   (fxkernels.DynamicImage over the time axis, RGB, not rescaled)
        m  = act(Conv2d(3, 1, 7, stride=4, padding=3)(DI)),  act = identity ("none") | sigmoid

    x: (B, 3, T, S, S) -> m: (B, 1, S', S'), S' = (S - 1) // 4 + 1 (= the stem's spatial size; 56 at 224).
    """

    def __init__(self, mask_act: str = "none", backend: str = "auto"):
        super().__init__()
        if mask_act not in MASK_ACTS:
            raise ValueError(f"MTSTWN: mask_act must be one of {MASK_ACTS}, got {mask_act!r}")
        self.mask_act = mask_act
        self.dynamic_image = fxkernels.DynamicImage(dim=2, backend=backend)
        self.conv = nn.Conv2d(3, 1, 7, stride=4, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        m = self.conv(self.dynamic_image(x))
        return torch.sigmoid(m) if self.mask_act == "sigmoid" else m

    def extra_repr(self) -> str:
        return f"mask_act={self.mask_act!r}"


class PositionalEncoding(nn.Module):
    """MViT v1's absolute space-time positional embedding (torchvision's `PositionalEncoding`, same
    parameter names) without the class token and its position:

        pos[(t*H + h)*W + w] = temporal_pos[t] + spatial_pos[h*W + w]

    forward(x (B, T*H*W, D)) -> x + pos. Parameters trunc_normal_(std=0.02), as torchvision initialises them.
    """

    def __init__(self, embed_size: int, thw: tuple):
        super().__init__()
        self.temporal_size, self.spatial_size = thw[0], tuple(thw[1:])
        self.spatial_pos = nn.Parameter(torch.zeros(thw[1] * thw[2], embed_size))
        self.temporal_pos = nn.Parameter(torch.zeros(thw[0], embed_size))
        for p in (self.spatial_pos, self.temporal_pos):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        hw, d = self.spatial_pos.shape
        pos = self.temporal_pos[:, None, :] + self.spatial_pos[None, :, :]  # (T, HW, D)
        return x + pos.reshape(self.temporal_size * hw, d).to(x.dtype)


@dataclass
class BlockPlan:
    """One shared-encoder block: its config, its input grid (T, H, W), its drop-path rate and whether it is
    the first block of a stage (q stride, width change, STFM)."""

    cnf: MSBlockConfig
    input_size: tuple
    drop_path: float
    first: bool


def block_plan(thw: tuple, embed_dim: int, depths, num_heads, drop_path: float) -> list[BlockPlan]:
    """The 3-stage plan: the first block of stage i has q stride (1, 2, 2) and widens to 2**(i+1) *
    embed_dim with num_heads[i] heads; the kv stride starts at (1, 8, 8) and is divided by the q stride at
    that block (kv = max(kv // stride_q, 1) per axis); drop path grows linearly from 0 to drop_path over all
    blocks (torchvision's rule p * i / (n - 1)). Grids follow the pooling arithmetic (k = 3, padding 1)."""
    n = sum(depths)
    plan, width, kv, grid, i = [], embed_dim, KV_STRIDE0, tuple(thw), 0
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
        out = embed_dim * 2 ** (stage + 1)
        for j in range(depth):
            first = j == 0
            sq = Q_STRIDE if first else (1, 1, 1)
            if first:
                kv = tuple(max(a // b, 1) for a, b in zip(kv, sq))
            cnf = MSBlockConfig(heads, width, out, list(KERNEL), list(KERNEL), list(sq), list(kv))
            plan.append(BlockPlan(cnf, grid, drop_path * i / (n - 1), first))
            grid = tuple(conv_out(g, 3, s, 1) for g, s in zip(grid, sq))
            width, i = out, i + 1
    return plan


def build_block(p: BlockPlan, mvit: str, stfm: bool, backend: str) -> nn.Module:
    """A `fxkernels.nn.MultiscaleBlock` (v2: rel-pos + residual pooling + projection after the attention;
    v1: neither, projection after norm2), no class token, with `fxkernels.nn.STFM` on the first block of a
    stage when `stfm`. STFM runs on the attention residual z, whose width is the attention width: dim_out
    in v2, dim_in in v1 (v1 widens in the MLP's skip projection, after STFM)."""
    make = fxkernels.MultiscaleBlock.v2 if mvit == "v2" else fxkernels.MultiscaleBlock.v1
    mod = None
    if stfm and p.first:
        width = p.cnf.output_channels if mvit == "v2" else p.cnf.input_channels
        mod = fxkernels.STFM(width, p.input_size[0], backend=backend)
    return make(
        list(p.input_size),
        p.cnf,
        stochastic_depth_prob=p.drop_path,
        has_cls=False,
        stfm=mod,
        backend=backend,
    )


class Branch(nn.Module):
    """A task-specific layer (eq. 13-14): a post-norm transformer encoder layer on F_s, the token mean, and
    a linear classifier. (B, L, D) -> logits (B, classes)."""

    def __init__(self, dim: int, classes: int, heads: int, dropout: float):
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(
            dim,
            heads,
            4 * dim,
            dropout=dropout,
            activation="relu",
            batch_first=True,
            norm_first=False,
        )
        self.head = nn.Linear(dim, classes)

    def forward(self, fs: Tensor) -> Tensor:
        return self.head(self.encoder(fs).mean(1))

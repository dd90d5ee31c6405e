"""STT (spatial-temporal transformer for dynamic facial expression recognition), built on fxkernels layers.

Paper: Ma et al., "Spatio-Temporal Transformer for Dynamic Facial Expression Recognition in the Wild" (STT).
User guide: docs/models/stt.md.

At the defaults, x (B, 16, 3, 112, 112) RGB frames in [0, 1] (the clip's 16 sampled frames):

    backbone      torchvision resnet18 conv1 .. layer3 (its module names), per frame    (B*16, 256, 7, 7)
    proj          Conv2d(256, 512, 1)                                                    (B*16, 512, 7, 7)
    tokens        p (B, 16, 49, 512) + pos_space (1, 1, 49, 512) + pos_time[1:] per frame;
                  cls = cls_token + pos_time[0]                                          (B, 1 + 16*49, 512)
    blocks.0-3    fxkernels DividedSpaceTimeBlock(512, 8 heads): space, then time, then MLP
    norm, head    LayerNorm(512, eps 1e-6) on the cls token -> Linear(512, num_classes)

`backbone_stage="layer4"` keeps resnet18's layer4 too: (B*16, 512, 4, 4), 16 patches per frame. Every fused
layer is an fxkernels module with a `backend`; `backend="reference"` makes the whole model plain PyTorch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

import fxkernels

from .metrics import accuracy, uar

#: DFEW / AFEW classes in their label order
CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
STAGES = {"layer3": (256, 7), "layer4": (512, 4)}  # channels and grid side at 112 x 112
FRAMES, SIZE = 16, 112


def _resnet18_trunk(stage: str) -> nn.Sequential:
    """torchvision's resnet18 from conv1 to `stage`, with its module names (its state dict loads unchanged)."""
    from torchvision.models import resnet18

    r = resnet18()
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"] + (
        ["layer4"] if stage == "layer4" else []
    )
    return nn.Sequential(OrderedDict((n, getattr(r, n)) for n in names))


class STT(nn.Module):
    """STT: x (B, frames, 3, size, size) RGB in [0, 1] -> logits (B, num_classes).

    Args:
        num_classes: 7 (DFEW, AFEW).
        backbone_stage: "layer3" (the paper's: 7 x 7 patches at 112) | "layer4" (4 x 4).
        dim, num_heads, depth, mlp_ratio: the transformer (512, 8, 4, 4.0).
        drop_path: the last block's stochastic-depth rate (linear from 0 over the blocks).
        frames, size: the clip's frame count and side (16, 112); size must be a multiple of 16.
        backend: every fused layer's fxkernels backend ("reference": plain PyTorch).
    """

    def __init__(
        self,
        num_classes: int = 7,
        backbone_stage: str = "layer3",
        *,
        dim: int = 512,
        num_heads: int = 8,
        depth: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.1,
        frames: int = FRAMES,
        size: int = SIZE,
        backend: str = "auto",
    ):
        super().__init__()
        if backbone_stage not in STAGES:
            raise ValueError(f"STT: backbone_stage must be one of {tuple(STAGES)}, got {backbone_stage!r}")
        for name, v in (("num_classes", num_classes), ("depth", depth), ("frames", frames)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"STT: {name} must be a positive int, got {v!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 16:
            raise ValueError(f"STT: size must be a multiple of 16 (>= 16), got {size!r}")
        if backend not in fxkernels.BACKENDS:
            raise ValueError(f"STT: backend must be one of {fxkernels.BACKENDS}, got {backend!r}")
        channels = STAGES[backbone_stage][0]
        stride = 16 if backbone_stage == "layer3" else 32
        self.grid = -(-size // stride)  # the trunk's output side (ceil: 112 -> 7 at layer3, 4 at layer4)
        self.num_classes, self.backbone_stage, self.frames, self.size = (
            num_classes,
            backbone_stage,
            frames,
            size,
        )
        self.backbone = _resnet18_trunk(backbone_stage)
        self.proj = nn.Conv2d(channels, dim, 1)
        n = self.grid * self.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_space = nn.Parameter(torch.zeros(1, 1, n, dim))
        self.pos_time = nn.Parameter(torch.zeros(1, frames + 1, dim))
        for p in (self.cls_token, self.pos_space, self.pos_time):
            nn.init.trunc_normal_(p, std=0.02)  # ViT's initialisation (the paper names none)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            fxkernels.DividedSpaceTimeBlock(dim, num_heads, mlp_ratio, r, backend=backend) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self._backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.set_backend(value)

    def set_backend(self, backend: str) -> STT:
        """Sets the fxkernels backend of every fused submodule in place, weights untouched; returns self."""
        if backend not in fxkernels.BACKENDS:
            raise ValueError(f"STT: backend must be one of {fxkernels.BACKENDS}, got {backend!r}")
        for b in self.blocks:
            b.backend = backend
        self._backend = backend
        return self

    def load_backbone(self, state_dict: dict) -> None:
        """Load a torchvision resnet18 state dict (e.g. `resnet18(weights=...).state_dict()` or MS-Celeb
        weights in its layout) into the trunk: every kept layer strictly, the unused layers (fc, and layer4 at
        "layer3") ignored."""
        keep = {
            k: v for k, v in state_dict.items() if k.split(".")[0] in dict(self.backbone.named_children())
        }
        self.backbone.load_state_dict(keep, strict=True)

    def tokens(self, x: Tensor) -> Tensor:
        """x (B, frames, 3, size, size) -> (B, 1 + frames * N, dim) before the blocks."""
        want = f"(B, frames={self.frames}, 3, {self.size}, {self.size})"
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(
                f"STT: x must be a floating-point tensor of shape {want}, got {type(x).__name__}"
            )
        if x.dim() != 5 or x.shape[1:] != (self.frames, 3, self.size, self.size):
            raise ValueError(f"STT: x must have shape {want} (RGB frames in [0, 1]), got {tuple(x.shape)}")
        B, F = x.shape[:2]
        f = self.proj(self.backbone(x.flatten(0, 1)))  # (B*F, dim, g, g)
        p = f.flatten(2).transpose(1, 2).reshape(B, F, -1, f.shape[1])  # (B, F, N, dim)
        p = p + self.pos_space + self.pos_time[:, 1:, None]
        cls = (self.cls_token + self.pos_time[:, :1]).expand(B, 1, -1)
        return torch.cat([cls, p.flatten(1, 2)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        t = self.tokens(x)
        for block in self.blocks:
            t = block(t, self.frames)
        return self.head(self.norm(t[:, 0]))


def stt_loss(logits: Tensor, target: Tensor, beta: float = 0.2, backend: str = "auto") -> Tensor:
    """The paper's training loss: the compact softmax cross-entropy (`fxkernels.compact_softmax_ce`)."""
    return fxkernels.compact_softmax_ce(logits, target, beta=beta, backend=backend)


def stt_metrics(y_true, y_pred, num_classes: int = len(CLASSES)) -> dict[str, float]:
    """The paper's metrics: UAR (mean per-class recall) and WAR (overall accuracy)."""
    return {"uar": uar(y_true, y_pred, num_classes), "war": accuracy(y_true, y_pred, num_classes)}


__all__ = ["STT", "CLASSES", "stt_loss", "stt_metrics"]

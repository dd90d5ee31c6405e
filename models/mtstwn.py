"""MTSTWN (multi-task spatiotemporal network for masked facial expressions), built on fxkernels layers.

Paper: He et al., "Weighted Spatiotemporal Feature and Multi-task Learning for Masked Facial Expression
Recognition" (MTSTWN; sections 3.3-3.5). User guide: docs/models/mtstwn.md (architecture with shapes, the
ablation switches, the choices where the paper is ambiguous, loss and metrics).

At the defaults, x (B, 3, 30, 224, 224) RGB in [0, 1]:

    asam            DynamicImage(dim=2) -> Conv2d(3, 1, 7, s4, p3)          mask m (B, 1, 56, 56)
    stem            grey -> Conv3d(1, 96, (3,7,7), (2,4,4), (1,3,3))     (B, 96, 15, 56, 56), times m
    patch_embed     Conv3d(96, 96, 1) -> tokens                          (B, 47040, 96)
    pos_encoding    (mvit="v1" only) temporal (15, 96) + spatial (3136, 96)
    blocks.0-11     fxkernels MultiscaleBlock x (4, 4, 4), STFM in blocks 0 / 4 / 8
    norm            LayerNorm(768, eps 1e-6)                             F_s (B, 735, 768)
    branch_ex/re    TransformerEncoderLayer(768, 8, 3072) -> token mean -> Linear(768, 6)
    head            (mtl=False) token mean -> Linear(768, 36)

Every fused layer is an fxkernels module with a `backend`; `backend="reference"` makes the whole model
plain PyTorch, `set_backend` switches every fused layer of a built model (the same weights), and a model
built with "auto" also follows `fxkernels.use_backend(...)` blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fxkernels
from fxkernels._checks import has_data

from .metrics import accuracy, uar, uf1
from .mtstwn_parts import (
    ASAM,
    MVITS,
    Branch,
    PositionalEncoding,
    block_plan,
    build_block,
    conv_out,
    to_gray,
)

#: (beta, alpha) of eq. 16, loss = beta * CE_ex + alpha * CE_re, per evaluation protocol (paper 4.3.1)
PROTOCOL_WEIGHTS = {"36": (1.0, 1.0), "6E": (1.0, 0.1), "6R": (0.1, 1.0)}
PROTOCOLS = tuple(PROTOCOL_WEIGHTS)
CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")  # MFED, ex and re alike


def _check_backend(backend) -> str:
    if backend not in fxkernels.BACKENDS:
        raise ValueError(f"MTSTWN: backend must be one of {fxkernels.BACKENDS}, got {backend!r}")
    return backend


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"MTSTWN: {name} must be a positive int, got {v!r}")
    return v


def _triple(name: str, v) -> tuple:
    ok = isinstance(v, (tuple, list)) and len(v) == 3
    if not ok or any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in v):
        raise ValueError(f"MTSTWN: {name} must be 3 positive ints (one per stage), got {v!r}")
    return tuple(v)


def _rate(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ValueError(f"MTSTWN: {name} must be a float in [0, 1), got {v!r}")
    return float(v)


class MTSTWN(nn.Module):
    """MTSTWN: x (B, 3, frames, size, size) RGB in [0, 1] -> dict of
        "ex"    (B, num_ex) experienced-emotion logits             (mtl=True only)
        "re"    (B, num_re) required-expression logits             (mtl=True only)
        "joint" (B, num_ex*num_re), class num_re*ex + re: with mtl the probabilities
                softmax(ex)[ex] * softmax(re)[re]; without mtl the logits of the single 36-way head
        "mask"  (B, 1, S', S') the ASAM mask, S' = (size - 1) // 4 + 1  (asam=True only)

    Switches (the paper's ablation rows): mvit "v2" (rel-pos bias + residual pooling, the default) | "v1"
    (eq. 9 literally: neither, plus MViT v1's absolute positional embedding); asam: the dynamic-image mask
    on the stem features; stfm: STFM in the first block of each stage; mtl: the two task branches (False:
    one linear 36-way head on the token mean of F_s). mask_act: "none" (paper-literal, the raw conv output)
    | "sigmoid". backend: every fused layer's fxkernels backend ("reference": plain PyTorch).

    Sizes: widths embed_dim * (1, 2, 4, 8) (the stem / the stages), heads num_heads per stage, depths blocks
    per stage, drop_path the last block's stochastic-depth rate; branch_heads / branch_dropout: the task
    branches' encoder layers. Each stage width must be divisible by its heads and 8*embed_dim by
    branch_heads.
    """

    def __init__(
        self,
        num_ex: int = 6,
        num_re: int = 6,
        mvit: str = "v2",
        asam: bool = True,
        stfm: bool = True,
        mtl: bool = True,
        *,
        frames: int = 30,
        size: int = 224,
        embed_dim: int = 96,
        depths: Sequence[int] = (4, 4, 4),
        num_heads: Sequence[int] = (2, 4, 8),
        drop_path: float = 0.2,
        branch_heads: int = 8,
        branch_dropout: float = 0.1,
        mask_act: str = "none",
        backend: str = "auto",
    ):
        super().__init__()
        if mvit not in MVITS:
            raise ValueError(f"MTSTWN: mvit must be one of {MVITS}, got {mvit!r}")
        for name, v in (("asam", asam), ("stfm", stfm), ("mtl", mtl)):
            if not isinstance(v, bool):
                raise ValueError(f"MTSTWN: {name} must be a bool, got {v!r}")
        self.num_ex, self.num_re = _positive_int("num_ex", num_ex), _positive_int("num_re", num_re)
        self.frames, self.size = _positive_int("frames", frames), _positive_int("size", size)
        if size < 16:
            raise ValueError(f"MTSTWN: size must be >= 16 (three 2x spatial poolings of size/4), got {size}")
        _positive_int("embed_dim", embed_dim)
        depths, num_heads = _triple("depths", depths), _triple("num_heads", num_heads)
        for i, h in enumerate(num_heads):
            if (embed_dim * 2 ** (i + 1)) % h or (mvit == "v1" and (embed_dim * 2**i) % h):
                raise ValueError(
                    f"MTSTWN: the stage-{i} widths (embed_dim={embed_dim} * 2**{i} -> * 2**{i + 1}) must be "
                    f"divisible by num_heads[{i}] = {h}"
                )
        if stfm and embed_dim < 3:
            raise ValueError(
                f"MTSTWN: stfm needs embed_dim >= 3 (STFM splits channels in thirds), got {embed_dim}"
            )
        _positive_int("branch_heads", branch_heads)
        if (8 * embed_dim) % branch_heads:
            raise ValueError(
                f"MTSTWN: 8*embed_dim = {8 * embed_dim} must be divisible by branch_heads = {branch_heads}"
            )
        drop_path, branch_dropout = _rate("drop_path", drop_path), _rate("branch_dropout", branch_dropout)
        _check_backend(backend)
        self.mvit, self.use_asam, self.use_stfm, self.mtl = mvit, asam, stfm, mtl
        self.embed_dim, self.depths, self.num_heads = embed_dim, depths, num_heads

        self.grid = (conv_out(frames, 3, 2, 1), conv_out(size, 7, 4, 3), conv_out(size, 7, 4, 3))
        self.asam = ASAM(mask_act, backend) if asam else None
        self.stem = nn.Conv3d(1, embed_dim, (3, 7, 7), stride=(2, 4, 4), padding=(1, 3, 3))
        self.patch_embed = nn.Conv3d(embed_dim, embed_dim, 1)
        self.pos_encoding = PositionalEncoding(embed_dim, self.grid) if mvit == "v1" else None
        plan = block_plan(self.grid, embed_dim, depths, num_heads, drop_path)
        self.blocks = nn.ModuleList(build_block(p, mvit, stfm, backend) for p in plan)
        dim = 8 * embed_dim
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.branch_ex = self.branch_re = self.head = None
        if mtl:
            self.branch_ex = Branch(dim, num_ex, branch_heads, branch_dropout)
            self.branch_re = Branch(dim, num_re, branch_heads, branch_dropout)
        else:
            self.head = nn.Linear(dim, num_ex * num_re)
        self._init_weights()
        self._backend = backend

    def _init_weights(self) -> None:
        # torchvision MViT's initialisation for the encoder and the linear classifiers; the branches'
        # transformer layers keep PyTorch's own
        skip = set()
        for b in (self.branch_ex, self.branch_re):
            if b is not None:
                skip.update(id(m) for m in b.encoder.modules())
        for m in self.modules():
            if id(m) in skip:
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------ backend
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.set_backend(value)

    def set_backend(self, backend: str) -> MTSTWN:
        """Sets the fxkernels backend of every fused submodule (dynamic image, attention and its pools,
        STFM) in place, weights untouched; returns self."""
        _check_backend(backend)
        for m in self.modules():
            if m is not self and hasattr(m, "backend"):
                m.backend = backend
        self._backend = backend
        return self

    # ------------------------------------------------------------------------------------------ forward
    def check_input(self, x) -> None:
        want = f"(B, 3, frames={self.frames}, {self.size}, {self.size})"
        if not isinstance(x, Tensor):
            raise ValueError(f"MTSTWN: x must be a tensor of shape {want}, got {type(x).__name__}")
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] != self.frames or x.shape[3:] != (self.size,) * 2:
            raise ValueError(f"MTSTWN: x must have shape {want} (RGB in [0, 1]), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"MTSTWN: x must be a floating-point tensor of shape {want}, got {x.dtype}")

    def encode(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """The shared layers: x (B, 3, frames, S, S) -> (F_s (B, L, 8*embed_dim), the ASAM mask or None),
        L = T' * (S'/8)^2 tokens (735 at the defaults)."""
        self.check_input(x)
        f = self.stem(to_gray(x))  # (B, D, T', S', S')
        mask = None
        if self.asam is not None:
            mask = self.asam(x)  # (B, 1, S', S')
            f = f * mask[:, :, None]  # eq. 4: one mask for every channel and time step
        f = self.patch_embed(f)
        thw = tuple(f.shape[2:])
        tokens = f.flatten(2).transpose(1, 2)  # (B, T'*S'*S', D), t-major
        if self.pos_encoding is not None:
            tokens = self.pos_encoding(tokens)
        for block in self.blocks:
            tokens, thw = block(tokens, thw)
        return self.norm(tokens), mask

    def forward(self, x: Tensor) -> dict:
        fs, mask = self.encode(x)
        out = {}
        if self.mtl:
            ex, re = self.branch_ex(fs), self.branch_re(fs)
            joint = ex.softmax(-1)[:, :, None] * re.softmax(-1)[:, None, :]  # (B, num_ex, num_re)
            out.update(ex=ex, re=re, joint=joint.flatten(1))
        else:
            out["joint"] = self.head(fs.mean(1))
        if mask is not None:
            out["mask"] = mask
        return out

    def extra_repr(self) -> str:
        return (
            f"mvit={self.mvit!r}, asam={self.use_asam}, stfm={self.use_stfm}, mtl={self.mtl}, "
            f"frames={self.frames}, size={self.size}, backend={self.backend!r}"
        )


# ------------------------------------------------------------------------------------------------ loss
def _check_labels(fn: str, name: str, y, n: Optional[int], classes: int) -> Tensor:
    if not isinstance(y, Tensor) or y.dim() != 1 or y.dtype != torch.int64:
        got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{fn}: {name} must be an int64 tensor of shape (B,) = ({n},), got {got}")
    if n is not None and y.shape[0] != n:
        raise ValueError(
            f"{fn}: {name} must have shape (B,) = ({n},) to match the outputs, got {tuple(y.shape)}"
        )
    # an out-of-range required label would silently name another joint class (num_re*ex + re)
    if has_data(y) and y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"{fn}: {name} must hold class indices in [0, {classes}), got {y.min()}..{y.max()}")
    return y


def _num_re(fn: str, out: dict, num_re: Optional[int]) -> int:
    if "re" in out:
        return out["re"].shape[1]
    if num_re is None:
        raise ValueError(f"{fn}: out has no 're' (mtl=False): pass num_re")
    return num_re


def mtstwn_loss(
    out: dict,
    experienced: Tensor,
    required: Tensor,
    protocol: str = "36",
    *,
    weights: Optional[tuple] = None,
    num_re: int = 6,
) -> tuple[Tensor, dict]:
    """Eq. 16: beta * CE(out["ex"], experienced) + alpha * CE(out["re"], required), (beta, alpha) by
    protocol: "36" (1, 1), "6E" (1, 0.1), "6R" (0.1, 1); `weights=(beta, alpha)` overrides them (e.g.
    (1, 0): the experienced task alone). Without the branches (mtl=False, no "ex" in out): CE(out["joint"],
    num_re * experienced + required), whatever the protocol. experienced, required: int64 (B,).
    Returns (loss, parts): parts = {"ex", "re"} or {"joint"}, Python floats of the unweighted CE terms.
    """
    fn = "mtstwn_loss"
    if protocol not in PROTOCOLS:
        raise ValueError(f"{fn}: protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(out, dict) or "joint" not in out:
        raise ValueError(
            f"{fn}: out must be the dict MTSTWN returns (with 'joint'), got {type(out).__name__}"
        )
    B = out["joint"].shape[0]
    if "ex" in out:
        ne, nr = out["ex"].shape[1], out["re"].shape[1]
        _check_labels(fn, "experienced", experienced, B, ne)
        _check_labels(fn, "required", required, B, nr)
        beta, alpha = PROTOCOL_WEIGHTS[protocol] if weights is None else weights
        ce_ex = F.cross_entropy(out["ex"], experienced)
        ce_re = F.cross_entropy(out["re"], required)
        return beta * ce_ex + alpha * ce_re, {"ex": float(ce_ex.detach()), "re": float(ce_re.detach())}
    nr = _num_re(fn, out, num_re)
    if out["joint"].shape[1] % nr:
        raise ValueError(
            f"{fn}: out['joint'] has {out['joint'].shape[1]} classes, not a multiple of num_re={nr}"
        )
    _check_labels(fn, "experienced", experienced, B, out["joint"].shape[1] // nr)
    _check_labels(fn, "required", required, B, nr)
    ce = F.cross_entropy(out["joint"], nr * experienced + required)
    return ce, {"joint": float(ce.detach())}


# --------------------------------------------------------------------------------------------- metrics
def mtstwn_predictions(out: dict, num_re: int = 6) -> dict:
    """Predicted class indices (int64 (B,) each): "ex", "re" and "joint" = num_re * ex + re.

    With the branches, ex / re are the argmax of each branch (the argmax of the 36 joint probabilities is
    the same pair); without them (mtl=False), joint is the argmax of the 36 logits and ex = joint // num_re,
    re = joint % num_re (num_re: only then needed).
    """
    with torch.no_grad():
        if "ex" in out:
            nr = out["re"].shape[1]
            ex, re = out["ex"].argmax(1), out["re"].argmax(1)
            return {"ex": ex, "re": re, "joint": nr * ex + re}
        nr = _num_re("mtstwn_predictions", out, num_re)
        joint = out["joint"].argmax(1)
        return {"ex": joint // nr, "re": joint % nr, "joint": joint}


def mtstwn_metrics(pred: dict, experienced, required, num_ex: int = 6, num_re: int = 6) -> dict:
    """{"36" | "6E" | "6R": {"acc", "f1", "recall"}}: accuracy, macro F1 and macro recall (UF1 and UAR of
    models/metrics.py: F1 averaged over the classes present in the labels or the predictions, recall over
    the classes present in the labels) of the joint / experienced / required predictions.

    pred: `mtstwn_predictions(...)` (or any dict with "ex", "re", "joint" index sequences); experienced,
    required: true class indices. Pass the predictions of all LOSO folds at once.
    """
    yt_ex, yt_re = torch.as_tensor(experienced).reshape(-1), torch.as_tensor(required).reshape(-1)
    for k in ("ex", "re", "joint"):
        if k not in pred:
            raise ValueError(
                f"mtstwn_metrics: pred must have 'ex', 're' and 'joint' (mtstwn_predictions), no {k!r}"
            )
    cases = {
        "36": (num_re * yt_ex + yt_re, pred["joint"], num_ex * num_re),
        "6E": (yt_ex, pred["ex"], num_ex),
        "6R": (yt_re, pred["re"], num_re),
    }
    res = {}
    for name, (yt, yp, n) in cases.items():
        yp = torch.as_tensor(yp).reshape(-1).cpu()
        yt = yt.cpu()
        res[name] = {"acc": accuracy(yt, yp, n), "f1": uf1(yt, yp, n), "recall": uar(yt, yp, n)}
    return res


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

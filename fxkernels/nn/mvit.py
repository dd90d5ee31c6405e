"""MViT block on the fused pooling attention (torchvision `MultiscaleBlock`) and `fuse_mvit`, which puts
`fxkernels.nn.MultiscaleAttention` into a torchvision MViT in place. Exported through
fxkernels.nn.attention."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .attention import MultiscaleAttention, TokenPool, check_backend, check_int, check_triple


@dataclass
class MSBlockConfig:
    """One block of an MViT (torchvision's `MSBlockConfig`, same fields; either works as `cnf`)."""

    num_heads: int
    input_channels: int
    output_channels: int
    kernel_q: list
    kernel_kv: list
    stride_q: list
    stride_kv: list


class StochasticDepth(nn.Module):
    """torchvision's StochasticDepth: in training, x * Bernoulli(1 - p) / (1 - p), one draw per row ("row")
    or for the whole batch ("batch"); the same random draws as torchvision's."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"fxkernels.MultiscaleBlock: stochastic_depth_prob must be in [0, 1], got {p!r}")
        self.p, self.mode = float(p), mode

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


_CNF_FIELDS = (
    "num_heads",
    "input_channels",
    "output_channels",
    "kernel_q",
    "kernel_kv",
    "stride_q",
    "stride_kv",
)


class MultiscaleBlock(nn.Module):
    """MViT block (torchvision `MultiscaleBlock`: same arguments, submodule names and numerics).

        xn = norm1(x);  a, thw_q = attn(xn, thw)
        s = project(xn) if proj_after_attn and dim != dim_out else x;  s = pool_skip(s) if q is strided
        z = s + drop(a);  z = stfm(z on its grid) if stfm is given
        zn = norm2(z);  out = (project(zn) if not proj_after_attn and dim != dim_out else z) + drop(mlp(zn))

    dim = cnf.input_channels, dim_out = cnf.output_channels, the attention width w = dim_out if
    proj_after_attn (v2) else dim (v1); mlp = Linear(w, 4w) -> GELU -> Dropout -> Linear(4w, dim_out) ->
    Dropout (`mlp.0`, `mlp.3`); pool_skip = MaxPool3d(s + 1 where s > 1, stride_q, padding kernel//2) with
    the cls row passed through; drop = StochasticDepth(stochastic_depth_prob, "row").
    `cnf`: an MSBlockConfig (ours or torchvision's). Presets: `MultiscaleBlock.v1(...)`, `.v2(...)`.
    Additions, keyword-only: has_cls, pool, backend (MultiscaleAttention's) and
        stfm: None or a module applied to z as (B, w, Tq, Hq, Wq) (grid tokens t-major; with has_cls the cls
            row is left out and put back), after the attention residual and before norm2 (MTSTWN eq. 10-11).

    forward(x (B, c + T*H*W, dim), thw) -> (out (B, c + Tq*Hq*Wq, dim_out), thw_q).
    """

    def __init__(
        self,
        input_size: Sequence[int],
        cnf,
        residual_pool: bool,
        residual_with_cls_embed: bool,
        rel_pos_embed: bool,
        proj_after_attn: bool,
        dropout: float = 0.0,
        stochastic_depth_prob: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        *,
        has_cls: bool = True,
        pool: str = "conv",
        stfm: Optional[nn.Module] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        name = "MultiscaleBlock"
        missing = [f for f in _CNF_FIELDS if not hasattr(cnf, f)]
        if missing:
            raise ValueError(f"fxkernels.{name}: cnf must be an MSBlockConfig, got {cnf!r} (no {missing})")
        check_int(name, "cnf.input_channels", cnf.input_channels)
        check_int(name, "cnf.output_channels", cnf.output_channels)
        stride_q = check_triple(name, "cnf.stride_q", cnf.stride_q)
        if stfm is not None and not isinstance(stfm, nn.Module):
            raise ValueError(
                f"fxkernels.{name}: stfm must be an nn.Module or None, got {type(stfm).__name__}"
            )
        check_backend(name, backend)
        self.proj_after_attn = bool(proj_after_attn)
        self.has_cls = bool(has_cls)

        # registration order = torchvision's (state dict key order)
        self.pool_skip: Optional[TokenPool] = None
        if math.prod(stride_q) > 1:
            kernel_skip = [s + 1 if s > 1 else s for s in stride_q]
            padding_skip = [k // 2 for k in kernel_skip]
            self.pool_skip = TokenPool(
                nn.MaxPool3d(kernel_skip, stride=stride_q, padding=padding_skip), None, has_cls, backend
            )
        attn_dim = cnf.output_channels if proj_after_attn else cnf.input_channels
        self.norm1 = norm_layer(cnf.input_channels)
        self.norm2 = norm_layer(attn_dim)
        self.needs_transposal = isinstance(self.norm1, nn.BatchNorm1d)
        self.attn = MultiscaleAttention(
            input_size,
            cnf.input_channels,
            attn_dim,
            cnf.num_heads,
            kernel_q=cnf.kernel_q,
            kernel_kv=cnf.kernel_kv,
            stride_q=cnf.stride_q,
            stride_kv=cnf.stride_kv,
            residual_pool=residual_pool,
            residual_with_cls_embed=residual_with_cls_embed,
            rel_pos_embed=rel_pos_embed,
            dropout=dropout,
            norm_layer=norm_layer,
            has_cls=has_cls,
            pool=pool,
            backend=backend,
        )
        self.mlp = nn.Sequential(
            nn.Linear(attn_dim, 4 * attn_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * attn_dim, cnf.output_channels),
            nn.Dropout(dropout),
        )
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.project: Optional[nn.Module] = None
        if cnf.input_channels != cnf.output_channels:
            self.project = nn.Linear(cnf.input_channels, cnf.output_channels)
        self.stfm = stfm

    @classmethod
    def v1(cls, input_size: Sequence[int], cnf, **kwargs) -> MultiscaleBlock:
        """MViTv1 (mvit_v1_b): no rel-pos bias, no residual pooling, the projection after the MLP's norm."""
        return cls(input_size, cnf, **_preset(kwargs, False, True, False, False))

    @classmethod
    def v2(cls, input_size: Sequence[int], cnf, **kwargs) -> MultiscaleBlock:
        """MViTv2 (mvit_v2_s): rel-pos bias, residual pooling without the cls row, the projection after the
        attention."""
        return cls(input_size, cnf, **_preset(kwargs, True, False, True, True))

    @property
    def backend(self) -> str:
        return self.attn.backend

    @backend.setter
    def backend(self, value: str) -> None:
        """Sets the attention's backend (and its pools'); an stfm keeps its own."""
        self.attn.backend = value

    def _norm(self, norm: nn.Module, x: Tensor) -> Tensor:
        return norm(x.transpose(1, 2)).transpose(1, 2) if self.needs_transposal else norm(x)

    def _modulate(self, z: Tensor, thw: tuple) -> Tensor:
        c = int(self.has_cls)
        cls, g = z[:, :c], z[:, c:]
        B, N, D = g.shape
        grid = g.transpose(1, 2).reshape((B, D) + tuple(thw))
        out = self.stfm(grid)
        if not isinstance(out, Tensor) or out.shape != grid.shape:
            raise ValueError(
                f"fxkernels.MultiscaleBlock: stfm must map (B, C, T, H, W) = {tuple(grid.shape)} to the same "
                f"shape, got {tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
            )
        g = out.flatten(2).transpose(1, 2)
        return torch.cat((cls, g), dim=1) if c else g

    def forward(self, x: Tensor, thw: Sequence[int]) -> tuple[Tensor, tuple]:
        x_norm1 = self._norm(self.norm1, x)
        x_attn, thw_new = self.attn(x_norm1, thw)
        x = x if self.project is None or not self.proj_after_attn else self.project(x_norm1)
        x_skip = x if self.pool_skip is None else self.pool_skip(x, thw)[0]
        x = x_skip + self.stochastic_depth(x_attn)
        if self.stfm is not None:
            x = self._modulate(x, thw_new)
        x_norm2 = self._norm(self.norm2, x)
        x_proj = x if self.project is None or self.proj_after_attn else self.project(x_norm2)
        return x_proj + self.stochastic_depth(self.mlp(x_norm2)), thw_new


def _preset(kwargs: dict, rel_pos: bool, with_cls: bool, residual_pool: bool, proj_after: bool) -> dict:
    preset = {
        "residual_pool": residual_pool,
        "residual_with_cls_embed": with_cls,
        "rel_pos_embed": rel_pos,
        "proj_after_attn": proj_after,
        "norm_layer": partial(nn.LayerNorm, eps=1e-6),  # torchvision MViT's norm
    }
    return {**preset, **kwargs}


def fuse_mvit(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Replaces, in place, every torchvision `MultiscaleAttention` in `model` by
    `fxkernels.nn.MultiscaleAttention` around the same submodules and Parameter objects (state dicts load
    unchanged, optimizers built before keep working); returns `model` (ours when `model` itself is one).

    backend: the new modules' backend ("auto" | "reference" | "cpu" | "triton" | "sdpa"). Hooks registered
    on the replaced modules are not carried over.
    """
    check_backend("fuse_mvit", backend)
    try:
        from torchvision.models.video.mvit import MultiscaleAttention as TorchvisionAttention
    except ImportError as e:  # no torchvision: no torchvision module can be in the model
        raise ImportError("fxkernels.fuse_mvit needs torchvision (torchvision.models.video.mvit)") from e
    if isinstance(model, TorchvisionAttention):
        return MultiscaleAttention.from_torchvision(model, backend)
    fused: dict = {}  # id(torchvision module) -> ours: a module shared by two parents stays shared
    targets = [  # _modules, not named_children(): that one lists a module held under two names once
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent._modules.items()
        if isinstance(child, TorchvisionAttention)
    ]
    for parent, name, child in targets:
        if id(child) not in fused:
            fused[id(child)] = MultiscaleAttention.from_torchvision(child, backend)
        setattr(parent, name, fused[id(child)])
    return model


__all__ = ["MSBlockConfig", "MultiscaleBlock", "StochasticDepth", "fuse_mvit"]

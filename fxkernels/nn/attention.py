"""MViT pooling attention on the attention family: MultiscaleAttention, MultiscaleBlock and fuse_mvit.

torchvision's `torchvision.models.video.mvit` modules with the same constructor arguments, parameter names
and numerics (a torchvision state dict loads unchanged), computed by `fxkernels.attention_pool` (q / k / v
conv pooling fused with its LayerNorm) and `fxkernels.attention` (softmax attention with the decomposed
rel-pos bias and the residual pooling, fused); math in fxkernels/ops/attention/README.md. Additions:
`has_cls=False` (a token grid without class token: nothing is split off anywhere, as MTSTWN needs),
`pool="max" | "avg"` (torch pooling, no norm) and `backend`. MultiscaleBlock and fuse_mvit live in mvit.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .._checks import check_tensor
from ..ops.attention import attention, attention_pool

BACKENDS = ("auto", "reference", "cpu", "triton", "sdpa")
POOLS = ("conv", "max", "avg")


# ------------------------------------------------------------------------------------------- checks
def check_int(cls: str, name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"fxkernels.{cls}: {name} must be an int >= {minimum}, got {v!r}")
    return v


def check_triple(cls: str, name: str, v, allow_empty: bool = True) -> tuple:
    """3 positive ints (T, H, W), or (with allow_empty) an empty list as torchvision's configs use it."""
    ok = isinstance(v, (tuple, list)) and all(isinstance(s, int) and not isinstance(s, bool) for s in v)
    if not ok or len(v) not in ((0, 3) if allow_empty else (3,)) or (v and min(v) < 1):
        want = "3 positive ints (T, H, W)" + (" or empty" if allow_empty else "")
        raise ValueError(f"fxkernels.{cls}: {name} must be {want}, got {v!r}")
    return tuple(v)


def check_backend(cls: str, backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"fxkernels.{cls}: backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_thw(cls: str, thw, L: int, c: int) -> tuple:
    thw = check_triple(cls, "thw", thw, allow_empty=False)
    if c + math.prod(thw) != L:
        raise ValueError(
            f"fxkernels.{cls}: thw = {thw} does not multiply out to x's {L} tokens: "
            f"{'1 (cls) + ' if c else ''}T*H*W = {c + math.prod(thw)}"
        )
    return thw


def _pool_backend(backend: str) -> str:
    # "sdpa" means torch for the attention: the pooling then runs torch's conv3d + layer_norm as well
    return "reference" if backend == "sdpa" else backend


# ------------------------------------------------------------------------------------------- pooling
class TokenPool(nn.Module):
    """torchvision MViT's `Pool` (attribute names `pool`, `norm_act`) with an optional class token.

    y = norm_act(cat(x_cls, pool(x_grid))): x (B, nh, c + T*H*W, hd) or (B, c + T*H*W, C), c = int(has_cls),
    the grid viewed as (B*nh, hd, T, H, W) for `pool`. A depthwise Conv3d `pool` (padding kernel//2, no bias)
    runs as `fxkernels.attention_pool`, fused with a LayerNorm(hd) `norm_act`; any other pool (MaxPool3d,
    AvgPool3d) or norm runs as torch modules. Returns (y, (To, Ho, Wo)).
    """

    def __init__(self, pool: nn.Module, norm_act: Optional[nn.Module], has_cls: bool, backend: str = "auto"):
        super().__init__()
        self.pool = pool
        self.norm_act = norm_act
        self.has_cls = bool(has_cls)
        self.backend = backend

    @staticmethod
    def check_conv(where: str, conv: nn.Module) -> None:
        """ValueError unless `conv` is the depthwise, bias-free, zero-padded Conv3d of attention_pool."""
        ok = (
            isinstance(conv, nn.Conv3d)
            and conv.groups == conv.in_channels == conv.out_channels
            and conv.bias is None
            and tuple(conv.padding) == tuple(k // 2 for k in conv.kernel_size)
            and tuple(conv.dilation) == (1, 1, 1)
            and conv.padding_mode == "zeros"
        )
        if not ok:
            raise ValueError(
                f"fxkernels.fuse_mvit: {where} must be Conv3d(hd, hd, k, stride, padding=k//2, groups=hd, "
                f"bias=False) as torchvision builds it, got {conv!r}"
            )

    def _fused_norm(self, hd: int):
        """(weight, bias, eps) of a norm_act that is exactly one affine LayerNorm(hd), else None."""
        if not isinstance(self.norm_act, nn.Sequential) or len(self.norm_act) != 1:
            return None
        n = self.norm_act[0]
        if isinstance(n, nn.LayerNorm) and tuple(n.normalized_shape) == (hd,):
            if n.weight is not None and n.bias is not None:
                return n.weight, n.bias, n.eps
        return None

    def forward(self, x: Tensor, thw: Sequence[int]) -> tuple[Tensor, tuple]:
        if isinstance(self.pool, nn.Conv3d):
            w = self.pool.weight
            fused = self._fused_norm(w.shape[0])
            nw, nb, eps = fused if fused is not None else (None, None, 1e-6)
            cast = (lambda t: t) if w.dtype == x.dtype else (lambda t: t.to(x.dtype))  # autocast
            y, thw_out = attention_pool(
                x,
                cast(w),
                tuple(self.pool.stride),
                tuple(thw),
                self.has_cls,
                None if nw is None else cast(nw),
                None if nb is None else cast(nb),
                eps,
                backend=_pool_backend(self.backend),
            )
            if fused is None and self.norm_act is not None:
                y = self.norm_act(y)
            return y, thw_out
        # torch path, as torchvision's Pool (norm after the pool)
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(1)
        c = int(self.has_cls)
        cls, g = x[:, :, :c], x[:, :, c:]
        B, N, L, C = g.shape
        g = self.pool(g.transpose(2, 3).reshape((B * N, C) + tuple(thw)))
        thw_out = tuple(g.shape[2:])
        g = g.reshape(B, N, C, -1).transpose(2, 3)
        y = torch.cat((cls, g), dim=2) if c else g
        if self.norm_act is not None:
            y = self.norm_act(y)
        return (y.squeeze(1) if squeeze else y), thw_out

    def extra_repr(self) -> str:
        return f"has_cls={self.has_cls}, backend={self.backend!r}"


def _make_pool(kind: str, hd: int, kernel: tuple, stride: tuple, norm_layer, has_cls: bool, backend: str):
    padding = [k // 2 for k in kernel]
    if kind == "conv":
        conv = nn.Conv3d(hd, hd, kernel, stride=stride, padding=padding, groups=hd, bias=False)
        return TokenPool(conv, nn.Sequential(norm_layer(hd)), has_cls, backend)
    torch_pool = nn.MaxPool3d if kind == "max" else nn.AvgPool3d
    return TokenPool(torch_pool(kernel, stride=stride, padding=padding), None, has_cls, backend)


# ----------------------------------------------------------------------------------------- attention
class MultiscaleAttention(nn.Module):
    """MViT multi-head pooling attention (torchvision `MultiscaleAttention`), fused.

        q, k, v = qkv(x) split into heads (B, nh, L, hd), hd = output_dim // num_heads
        k, thw_k = pool_k(k, thw);  v = pool_v(v, thw);  q, thw_q = pool_q(q, thw)
        O = softmax(q k^T / sqrt(hd) + rel-pos bias) v + q (residual_pool; the cls row only with
            residual_with_cls_embed);  y = project(O as (B, Lq, output_dim))

    Arguments as torchvision's (input_size = (T, H, W) the block's input grid, which sizes the rel-pos tables
    rel_pos_h / rel_pos_w (2*max(s // stride_q[1], s // stride_kv[1]) - 1, hd), s = max(H, W), and
    rel_pos_t (2*T - 1, hd); a table is interpolated when the run-time grid needs another length). A pool
    pool_q / pool_k / pool_v exists iff its kernel or stride has a product > 1; kernel and stride are then
    3 ints each (empty lists otherwise, as torchvision's configs write them).
    Additions, keyword-only:
        has_cls: x's row 0 is a class token (torchvision); False: every row is a grid token.
        pool: "conv" (torchvision: depthwise Conv3d + norm_layer(hd), fused) | "max" | "avg" (torch
            Max/AvgPool3d with padding kernel//2, no norm: no pool parameters in the state dict).
        backend: "auto" | "reference" | "cpu" | "triton" | "sdpa", passed to fxkernels.attention and
            fxkernels.attention_pool ("sdpa": torch SDPA with the bias as its float attn_mask, and torch's
            conv3d + layer_norm for the pooling).

    forward(x (B, c + T*H*W, embed_dim), thw = (T, H, W)) -> (y (B, c + Tq*Hq*Wq, output_dim), thw_q).
    """

    def __init__(
        self,
        input_size: Sequence[int],
        embed_dim: int,
        output_dim: int,
        num_heads: int,
        kernel_q: Sequence[int],
        kernel_kv: Sequence[int],
        stride_q: Sequence[int],
        stride_kv: Sequence[int],
        residual_pool: bool,
        residual_with_cls_embed: bool,
        rel_pos_embed: bool,
        dropout: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        *,
        has_cls: bool = True,
        pool: str = "conv",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        name = "MultiscaleAttention"
        input_size = check_triple(name, "input_size", input_size, allow_empty=False)
        check_int(name, "embed_dim", embed_dim)
        check_int(name, "output_dim", output_dim)
        check_int(name, "num_heads", num_heads)
        if output_dim % num_heads:
            raise ValueError(
                f"fxkernels.{name}: output_dim must be a multiple of num_heads, got {output_dim} and "
                f"{num_heads}"
            )
        kernel_q = check_triple(name, "kernel_q", kernel_q)
        kernel_kv = check_triple(name, "kernel_kv", kernel_kv)
        stride_q = check_triple(name, "stride_q", stride_q)
        stride_kv = check_triple(name, "stride_kv", stride_kv)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"fxkernels.{name}: dropout must be a float in [0, 1), got {dropout!r}")
        if pool not in POOLS:
            raise ValueError(f"fxkernels.{name}: pool must be one of {POOLS}, got {pool!r}")
        if not callable(norm_layer):
            raise ValueError(
                f"fxkernels.{name}: norm_layer must be callable (e.g. nn.LayerNorm), got {norm_layer!r}"
            )
        self._init_common(
            embed_dim, output_dim, num_heads, residual_pool, residual_with_cls_embed, has_cls, backend
        )
        self.pool_kind = pool
        hd = self.head_dim

        # registration order = torchvision's: the state dict keys come out in its order
        self.qkv = nn.Linear(embed_dim, 3 * output_dim)
        layers: list[nn.Module] = [nn.Linear(output_dim, output_dim)]
        if dropout > 0.0:
            layers.append(nn.Dropout(dropout, inplace=True))
        self.project = nn.Sequential(*layers)

        def make(which: str, kernel: tuple, stride: tuple) -> Optional[TokenPool]:
            if math.prod(kernel) == 1 and math.prod(stride) == 1:
                return None
            if len(kernel) != 3 or len(stride) != 3:
                raise ValueError(
                    f"fxkernels.{name}: kernel_{which} and stride_{which} must both be 3 ints when {which} "
                    f"is pooled, got {list(kernel)} and {list(stride)}"
                )
            return _make_pool(pool, hd, kernel, stride, norm_layer, self.has_cls, backend)

        self.pool_q = make("q", kernel_q, stride_q)
        self.pool_k = make("kv", kernel_kv, stride_kv)
        self.pool_v = make("kv", kernel_kv, stride_kv)

        tables = [None, None, None]
        if rel_pos_embed:
            size = max(input_size[1:])
            q_size = size // stride_q[1] if stride_q else size
            kv_size = size // stride_kv[1] if stride_kv else size
            spatial = 2 * max(q_size, kv_size) - 1
            tables = [
                torch.zeros(spatial, hd),
                torch.zeros(spatial, hd),
                torch.zeros(2 * input_size[0] - 1, hd),
            ]
            for t in tables:
                nn.init.trunc_normal_(t, std=0.02)
        for tname, t in zip(("rel_pos_h", "rel_pos_w", "rel_pos_t"), tables):
            self.register_parameter(tname, None if t is None else nn.Parameter(t))

    def _init_common(
        self, embed_dim, output_dim, num_heads, residual_pool, residual_with_cls_embed, has_cls, backend
    ):
        self.embed_dim = embed_dim
        self.output_dim = output_dim
        self.num_heads = num_heads
        self.head_dim = output_dim // num_heads
        self.scaler = 1.0 / math.sqrt(self.head_dim)  # torchvision's value (not hd ** -0.5: last-bit equal)
        self.residual_pool = bool(residual_pool)
        self.residual_with_cls_embed = bool(residual_with_cls_embed)
        self.has_cls = bool(has_cls)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        """Sets the attention's backend and its pools'."""
        self._backend = check_backend("MultiscaleAttention", value)
        for which in ("pool_q", "pool_k", "pool_v"):
            p = getattr(self, which, None)
            if p is not None:
                p.backend = value

    @classmethod
    def from_torchvision(cls, tv: nn.Module, backend: str = "auto") -> MultiscaleAttention:
        """Ours around the submodules and Parameters of torchvision's MultiscaleAttention `tv` (shared, not
        copied: its state dict, optimizers and the original module see the same tensors)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._init_common(
            tv.embed_dim,
            tv.output_dim,
            tv.num_heads,
            tv.residual_pool,
            tv.residual_with_cls_embed,
            True,
            backend,
        )
        self.pool_kind = "conv"
        self.qkv = tv.qkv
        self.project = tv.project
        for which in ("pool_q", "pool_k", "pool_v"):
            p = getattr(tv, which)
            if p is not None:
                TokenPool.check_conv(f"{which}.pool", p.pool)
                if p.norm_before_pool:
                    raise ValueError(f"fxkernels.fuse_mvit: {which} normalises before pooling (unsupported)")
                p = TokenPool(p.pool, p.norm_act, True, backend)
            setattr(self, which, p)
        for tname in ("rel_pos_h", "rel_pos_w", "rel_pos_t"):
            self.register_parameter(tname, getattr(tv, tname))
        self.train(tv.training)
        return self

    def forward(self, x: Tensor, thw: Sequence[int]) -> tuple[Tensor, tuple]:
        name = "MultiscaleAttention"
        check_tensor(name, "x", x, 3, shape_desc="(B, L, embed_dim)")
        if x.shape[2] != self.embed_dim:
            raise ValueError(
                f"fxkernels.{name}: x must be (B, L, embed_dim={self.embed_dim}), got {tuple(x.shape)}"
            )
        B, N, _ = x.shape
        thw = check_thw(name, thw, N, int(self.has_cls))
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).transpose(1, 3).unbind(dim=2)
        k, thw_k = self.pool_k(k, thw) if self.pool_k is not None else (k, thw)
        if self.pool_v is not None:
            v = self.pool_v(v, thw)[0]
        q, thw_q = self.pool_q(q, thw) if self.pool_q is not None else (q, thw)
        tables = {}
        if self.rel_pos_h is not None:
            tables = {n: getattr(self, n).to(q.dtype) for n in ("rel_pos_t", "rel_pos_h", "rel_pos_w")}
        o = attention(
            q,
            k,
            v,
            self.scaler,
            thw_q=thw_q,
            thw_k=thw_k,
            **tables,
            has_cls=self.has_cls,
            add_q=self.residual_pool,
            add_q_cls=self.residual_with_cls_embed,
            backend=self.backend,
        )
        o = o.transpose(1, 2).reshape(B, -1, self.output_dim)
        return self.project(o), tuple(thw_q)

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, has_cls={self.has_cls}, "
            f"pool={self.pool_kind!r}, residual_pool={self.residual_pool}, backend={self.backend!r}"
        )


# MultiscaleBlock and fuse_mvit build on the classes above (mvit.py imports this module)
from .divided import DividedSpaceTimeBlock  # noqa: E402
from .mvit import MSBlockConfig, MultiscaleBlock, fuse_mvit  # noqa: E402

__all__ = ["MultiscaleAttention", "MultiscaleBlock", "MSBlockConfig", "fuse_mvit", "DividedSpaceTimeBlock"]

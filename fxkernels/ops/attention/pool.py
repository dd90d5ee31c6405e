"""Public op `attention_pool`: MViT's conv pooling of q / k / v (depthwise Conv3d on the token grid, the cls
row passed through, LayerNorm over hd) in one pass over the token layout (README.md, "attention_pool").

Kit op `fxkernels::attention_pool`; backend="reference" runs torchvision's ops (conv3d + layer_norm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

from torch import Tensor

from ..._checks import check_same, check_tensor
from ..opkit import FusedOp, empty_if_none
from .reference import _acc_dtype, attention_pool_ref, pool_out_size

OP = "attention_pool"
KERNELS = {"triton": True, "cpu": "attention_pool_fwd"}


def _launchers(backend: str):
    if backend == "triton":
        from . import pool_triton as mod

        return mod.attention_pool_fwd_triton, mod.attention_pool_bwd_triton
    from . import cpp as mod

    return mod.attention_pool_fwd_cpp, mod.attention_pool_bwd_cpp


def _ints3(name: str, v, positive: bool = True) -> tuple:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v, v)
    if (
        not isinstance(v, (tuple, list))
        or len(v) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in v)
    ):
        raise ValueError(f"fxkernels.{OP}: {name} must be 3 ints (T, H, W), got {v!r}")
    if positive and min(v) < 1:
        raise ValueError(f"fxkernels.{OP}: {name} must be positive, got {tuple(v)}")
    return tuple(v)


def _check_inputs(x, weight, stride, thw, has_cls, norm_weight, norm_bias, eps):
    check_tensor(OP, "x", x, 4, shape_desc="(B, nh, L, hd)")
    B, nh, L, hd = x.shape
    check_tensor(OP, "weight", weight, 5, shape_desc=f"(hd={hd}, 1, kt, kh, kw)")
    check_same(OP, "x", x, weight=weight, norm_weight=norm_weight, norm_bias=norm_bias)
    if weight.shape[0] != hd or weight.shape[1] != 1 or min(weight.shape[2:]) < 1:
        raise ValueError(
            f"fxkernels.{OP}: weight must be (hd, 1, kt, kh, kw) with x's hd = {hd} (depthwise, shared by the "
            f"heads), got {tuple(weight.shape)}"
        )
    stride, thw = _ints3("stride", stride), _ints3("thw", thw)
    c = int(bool(has_cls))
    if c + math.prod(thw) != L:
        raise ValueError(
            f"fxkernels.{OP}: thw = {thw} does not multiply out to x's {L} tokens: "
            f"{'1 (cls) + ' if c else ''}T*H*W = {c + math.prod(thw)}"
        )
    if (norm_weight is None) != (norm_bias is None):
        raise ValueError(f"fxkernels.{OP}: norm_weight and norm_bias go together: both or neither")
    for name, t in (("norm_weight", norm_weight), ("norm_bias", norm_bias)):
        if t is not None:
            check_tensor(OP, name, t, 1, (hd,), "(hd,) ")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"fxkernels.{OP}: eps must be a positive float, got {eps!r}")
    out = tuple(pool_out_size(n, k, s) for n, k, s in zip(thw, weight.shape[2:], stride))
    if min(out) < 1:
        raise ValueError(
            f"fxkernels.{OP}: kernel {tuple(weight.shape[2:])} with stride {stride} leaves an empty "
            f"grid for thw = {thw}"
        )
    return stride, thw, out


# ---------------------------------------------------------------------------------------------- the op
def _forward(
    x: Tensor,
    weight: Tensor,
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    stride: list[int],
    thw: list[int],
    has_cls: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return _launchers(backend)[0](x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps)


def _out_len(x, weight, stride, thw, has_cls) -> int:
    return int(has_cls) + math.prod(pool_out_size(n, k, s) for n, k, s in zip(thw, weight.shape[2:], stride))


def _forward_fake(x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps, backend):
    B, nh, _, hd = x.shape
    Lo = _out_len(x, weight, stride, thw, has_cls)
    stats = (
        x.new_empty((B, nh, Lo, 2), dtype=_acc_dtype(x.dtype)) if norm_weight is not None else x.new_empty(0)
    )
    return x.new_empty((B, nh, Lo, hd)), stats


def _backward(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    stats: Tensor,
    stride: list[int],
    thw: list[int],
    has_cls: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dx, dw, dnw, dnb = _launchers(backend)[1](
        dy, x, weight, norm_weight, norm_bias, stats, stride, thw, has_cls, eps
    )
    return dx, dw, empty_if_none(dnw, x), empty_if_none(dnb, x)


def _backward_fake(dy, x, weight, norm_weight, norm_bias, stats, stride, thw, has_cls, eps, backend):
    if norm_weight is None:
        return x.new_empty(x.shape), weight.new_empty(weight.shape), x.new_empty(0), x.new_empty(0)
    return (
        x.new_empty(x.shape),
        weight.new_empty(weight.shape),
        norm_weight.new_empty(norm_weight.shape),
        norm_bias.new_empty(norm_bias.shape),
    )


def _setup(ctx, args, output):
    x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps = args
    ctx.save_for_backward(x, weight, norm_weight, norm_bias, output[1])
    ctx.attrs = (list(stride), list(thw), has_cls, eps)


def _grads(ctx, bwd, dy, dstats):
    x, weight, norm_weight, norm_bias, stats = ctx.saved_tensors
    if dy is None:
        dy = x.new_zeros(_forward_fake(x, weight, norm_weight, norm_bias, *ctx.attrs, "")[0].shape)
    dx, dw, dnw, dnb = bwd(dy, x, weight, norm_weight, norm_bias, stats, *ctx.attrs)
    if norm_weight is None:
        dnw = dnb = None
    return dx, dw, dnw, dnb, None, None, None, None


attention_pool_op = FusedOp(
    OP,
    KERNELS,
    forward=_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    setup=_setup,
    grads=_grads,
)


def attention_pool(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    thw: Sequence[int],
    has_cls: bool,
    norm_weight: Optional[Tensor] = None,
    norm_bias: Optional[Tensor] = None,
    eps: float = 1e-6,
    backend: str = "auto",
) -> tuple[Tensor, tuple]:
    """MViT conv pooling of one of q / k / v in its token layout, fused with its LayerNorm.

    y = LayerNorm_hd(cat(x_cls, DepthwiseConv3d_{weight, stride, pad=k//2}(x_grid)))  (torchvision `Pool`).

    Args:
        x: (B, nh, c + T*H*W, hd), c = int(has_cls), grid tokens t-major; fp32/fp64/fp16/bf16, any strides.
        weight: (hd, 1, kt, kh, kw), the depthwise kernel shared by the heads (torchvision `pool.weight`).
        stride: 3 ints (or one int); thw: the input grid (T, H, W).
        norm_weight, norm_bias: (hd,) LayerNorm affine (torchvision `norm_act.0`), or both None (no norm).
        backend: "auto" | "reference" | "cpu" | "triton".
    Returns:
        (y (B, nh, c + To*Ho*Wo, hd) in x's dtype, (To, Ho, Wo)), To = (T + 2*(kt//2) - kt)//st + 1 etc.
        Differentiable w.r.t. x, weight, norm_weight, norm_bias; the fused backward is deterministic.
    """
    stride, thw, thw_out = _check_inputs(x, weight, stride, thw, has_cls, norm_weight, norm_bias, eps)
    has_cls = bool(has_cls)
    be = attention_pool_op.resolve(backend, x.device)
    if be == "reference":
        return attention_pool_ref(x, weight, stride, thw, has_cls, norm_weight, norm_bias, float(eps))
    y, _ = attention_pool_op(
        x, weight, norm_weight, norm_bias, list(stride), list(thw), has_cls, float(eps), be
    )
    return y, thw_out


__all__ = ["attention_pool", "KERNELS"]

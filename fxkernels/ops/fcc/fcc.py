"""Public FCC ops: `circular_conv` (one pass) and `circular_conv2d` (two fused passes).

Both are `torch.library` custom ops (`fxkernels::circular_conv`, `fxkernels::circular_conv2d`, one shared
backward `fxkernels::circular_conv_backward`) defined with the op kit (fxkernels/ops/opkit.py: fakes,
registered autograd, an eager autograd.Function), so they run under `torch.compile(fullgraph=True)`.
backend="reference" bypasses the ops and runs plain PyTorch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._checks import check_same, check_tensor
from ..opkit import FusedOp, empty_if_none
from .reference import MODE_H, MODE_HV, MODE_V, MODE_VH, MODES, fcc2d_ref, fcc_ref

OP = "circular_conv"
# Which compiled kernels serve the op in each backend (used for availability checks and `python -m fxkernels`).
KERNELS = {"triton": True, "cpu": "fcc_fwd", "cuda": "fcc_fwd"}
# dtypes the C++ CPU kernels take (the GPU backends take all four)
CPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _launchers(backend: str):
    if backend == "triton":
        from .triton import fcc_bwd_triton, fcc_fwd_triton

        return fcc_fwd_triton, fcc_bwd_triton
    from .cpp import fcc_bwd_cpp, fcc_fwd_cpp  # "cpu" and "cuda": one C++ op, dispatched on device

    return fcc_fwd_cpp, fcc_bwd_cpp


# ----------------------------------------------------------------------------------------------- checks
def _check_pass(op, x, w, p, b, L, suffix, axis):
    C = x.shape[1]
    for name, t in ((f"weight{suffix}", w), (f"pos{suffix}", p)):
        if t is None:
            continue
        check_tensor(op, name, t, 2, shape_desc=f"(C, {axis})")
        if tuple(t.shape) != (C, L):
            raise ValueError(
                f"fxkernels.{op}: {name} must have shape (C, {axis}) = {(C, L)} for x of shape (B, C, H, W) = "
                f"{tuple(x.shape)}, got {tuple(t.shape)}"
            )
    if b is not None:
        check_tensor(op, f"bias{suffix}", b, 1, (C,), "(C,) ")


def _check_inputs(op, x, mode, w1, w2=None, p1=None, p2=None, b1=None, b2=None):
    check_tensor(op, "x", x, 4, shape_desc="(B, C, H, W)")
    H, W = x.shape[2], x.shape[3]
    first_v = mode in (MODE_V, MODE_VH)
    sfx = "" if mode in (MODE_V, MODE_H) else "1"
    _check_pass(op, x, w1, p1, b1, H if first_v else W, sfx, "H" if first_v else "W")
    if mode in (MODE_VH, MODE_HV):
        _check_pass(op, x, w2, p2, b2, W if first_v else H, "2", "W" if first_v else "H")
    names = {f"weight{sfx}": w1, f"pos{sfx}": p1, f"bias{sfx}": b1, "weight2": w2, "pos2": p2, "bias2": b2}
    check_same(op, "x", x, **names)


# ---------------------------------------------------------------------------------------------- the ops
def _conv_forward(
    x: Tensor, weight: Tensor, pos: Optional[Tensor], bias: Optional[Tensor], mode: int, backend: str
) -> Tensor:
    return _launchers(backend)[0](x, weight, None, pos, None, bias, None, mode)


def _conv2d_forward(
    x: Tensor,
    weight1: Tensor,
    weight2: Tensor,
    pos1: Optional[Tensor],
    pos2: Optional[Tensor],
    bias1: Optional[Tensor],
    bias2: Optional[Tensor],
    mode: int,
    backend: str,
) -> Tensor:
    return _launchers(backend)[0](x, weight1, weight2, pos1, pos2, bias1, bias2, mode)


def _forward_fake(x, *args):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _backward(
    dy: Tensor,
    x: Tensor,
    weight1: Tensor,
    weight2: Optional[Tensor],
    pos1: Optional[Tensor],
    pos2: Optional[Tensor],
    bias1: Optional[Tensor],
    bias2: Optional[Tensor],
    mode: int,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = _launchers(backend)[1](dy, x, weight1, weight2, pos1, pos2, bias1, bias2, mode)
    return tuple(empty_if_none(g, x) for g in grads)


def _eager_backward(dy, x, weight1, weight2, pos1, pos2, bias1, bias2, mode, backend):
    """The eager path keeps the launchers' None gradients (no empty placeholder tensors: ~20 us per call)."""
    return _launchers(backend)[1](dy, x, weight1, weight2, pos1, pos2, bias1, bias2, mode)


def _backward_fake(dy, x, weight1, weight2, pos1, pos2, bias1, bias2, mode, backend):
    def like(t):
        return x.new_empty(0) if t is None else torch.empty(t.shape, dtype=t.dtype, device=t.device)

    return (like(x), like(weight1), like(weight2), like(pos1), like(pos2), like(bias1), like(bias2))


def _all_grads(ctx, bwd, dy):
    g = bwd(dy.contiguous(), *ctx.saved_tensors, ctx.mode)
    return [gi if t is not None else None for gi, t in zip(g, ctx.saved_tensors)]


def _setup_1(ctx, args, output):
    x, w, p, b, mode = args
    ctx.save_for_backward(x, w, None, p, None, b, None)
    ctx.mode = mode


def _grads_1(ctx, bwd, dy):
    dx, dw, _, dp, _, db, _ = _all_grads(ctx, bwd, dy)
    return dx, dw, dp, db, None


def _setup_2(ctx, args, output):
    *tensors, mode = args
    ctx.save_for_backward(*tensors)
    ctx.mode = mode


def _grads_2(ctx, bwd, dy):
    return (*_all_grads(ctx, bwd, dy), None)


circular_conv_op = FusedOp(
    OP,
    KERNELS,
    forward=_conv_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    eager_backward=_eager_backward,
    setup=_setup_1,
    grads=_grads_1,
)
# the fused two-pass op shares the backward op fxkernels::circular_conv_backward (weight2 present)
circular_conv2d_op = FusedOp(
    "circular_conv2d",
    KERNELS,
    forward=_conv2d_forward,
    fake=_forward_fake,
    backward=circular_conv_op.backward,
    setup=_setup_2,
    grads=_grads_2,
)


# ------------------------------------------------------------------------------------ public functions
def _dim_mode(dim) -> int:
    if dim in (-2, 2):
        return MODE_V
    if dim in (-1, 3):
        return MODE_H
    raise ValueError(f"fxkernels.circular_conv: dim must be -2/2 (FCC-V) or -1/3 (FCC-H), got {dim!r}")


def circular_conv(
    x: Tensor,
    weight: Tensor,
    dim: int = -2,
    pos: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    backend: str = "auto",
) -> Tensor:
    """Circular fully-connected convolution along one axis (FCC-V for dim=-2, FCC-H for dim=-1).

    FCC-V: y[b,c,i,j] = bias[c] + sum_{s<H} weight[c,s] * (x[b,c,(i+s)%H,j] + pos[c,(i+s)%H]).

    Args:
        x: (B, C, H, W), any strides.
        weight: (C, L), L = H for dim=-2, W for dim=-1.
        pos: (C, L) positional embedding added along the pass axis, optional.
        bias: (C,), optional.
        backend: "auto" | "reference" | "triton" | "cuda" | "cpu".
    Returns:
        y: (B, C, H, W), contiguous.
    """
    mode = _dim_mode(dim)
    _check_inputs("circular_conv", x, mode, weight, p1=pos, b1=bias)
    be = circular_conv_op.resolve(backend, x.device)
    if be == "reference":
        return fcc_ref(x, weight, -2 if mode == MODE_V else -1, pos, bias)
    return circular_conv_op(x, weight, pos, bias, mode, be)


def circular_conv2d(
    x: Tensor,
    weight1: Tensor,
    weight2: Tensor,
    order: str = "VH",
    pos1: Optional[Tensor] = None,
    pos2: Optional[Tensor] = None,
    bias1: Optional[Tensor] = None,
    bias2: Optional[Tensor] = None,
    backend: str = "auto",
) -> Tensor:
    """Two chained circular passes in one kernel; the intermediate plane stays on chip / in cache.

    order="VH": z = FCC-V(x; weight1, pos1, bias1), y = FCC-H(z; weight2, pos2, bias2).
    order="HV": z = FCC-H(x; weight1, pos1, bias1), y = FCC-V(z; weight2, pos2, bias2).

    Args:
        x: (B, C, H, W), any strides.
        weight1, pos1: (C, L1) with L1 = H for "VH", W for "HV"; bias1: (C,).
        weight2, pos2: (C, L2), the other axis; bias2: (C,).
    Returns:
        y: (B, C, H, W), contiguous.
    """
    if order not in ("VH", "HV"):
        raise ValueError(f"fxkernels.circular_conv2d: order must be 'VH' or 'HV', got {order!r}")
    mode = MODES[order]
    _check_inputs("circular_conv2d", x, mode, weight1, weight2, pos1, pos2, bias1, bias2)
    be = circular_conv2d_op.resolve(backend, x.device)
    if be == "reference":
        return fcc2d_ref(x, weight1, weight2, order, pos1, pos2, bias1, bias2)
    return circular_conv2d_op(x, weight1, weight2, pos1, pos2, bias1, bias2, mode, be)


__all__ = ["circular_conv", "circular_conv2d", "MODE_H", "MODE_HV"]

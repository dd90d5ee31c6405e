"""Self-attention from one packed projection: `qkv_attention(qkv, num_heads)` on qkv (S, L, 3*d), the output of a
`Linear(d, 3d)` (ViT / STT layout: the last axis is [q | k | v], each `num_heads` heads of d / num_heads), returns
(S, L, d), ready for the output projection:

    q, k, v = qkv.view(S, L, 3, nh, hd).permute(2, 0, 3, 1, 4);  out = attention(q, k, v).transpose(1, 2).reshape(S, L, d)

With a fused backend the permutes live in the kernels' indexing: q, k, v are read as strided views of qkv, and
the backward writes the three gradients straight into one (S, L, 3*d) buffer (through autograd, the three
separate gradients would be stacked and then copied again by the reshape: two passes over a 3*d-wide tensor).
The private kit op `fxkernels::_qkv_attention` carries the fused path; the reference and SDPA routes are the
plain formula above.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._checks import check_tensor
from ..opkit import FusedOp
from .attention import KERNELS, _launchers, attention, choose_backend
from .reference import _acc_dtype

OP = "_qkv_attention"


def _views(qkv: Tensor, num_heads: int):
    S, L, d3 = qkv.shape
    hd = d3 // (3 * num_heads)
    return qkv.view(S, L, 3, num_heads, hd).permute(2, 0, 3, 1, 4)


def _forward(qkv: Tensor, num_heads: int, scale: float, backend: str) -> tuple[Tensor, Tensor]:
    S, L, d3 = qkv.shape
    q, k, v = _views(qkv, num_heads)
    out, lse = _launchers(backend)[0](q, k, v, None, scale, [1, 1, L], False, False, False)
    return out.transpose(1, 2).reshape(S, L, d3 // 3), lse


def _forward_fake(qkv, num_heads, scale, backend):
    S, L, d3 = qkv.shape
    return qkv.new_empty(S, L, d3 // 3), qkv.new_empty(S, num_heads, L, dtype=_acc_dtype(qkv.dtype))


def _backward(
    dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, num_heads: int, scale: float, backend: str
) -> Tensor:
    S, L, d3 = qkv.shape
    hd = d3 // (3 * num_heads)
    q, k, v = _views(qkv, num_heads)
    o4 = out.view(S, L, num_heads, hd).transpose(1, 2)
    do4 = dout.reshape(S, L, num_heads, hd).transpose(
        1, 2
    )  # a view of a contiguous gradient (strided is fine)
    dq, dk, dv, _ = _launchers(backend)[1](
        do4, q, k, v, None, o4, lse, scale, [1, 1, L], False, False, False, False
    )
    # one pass into the (S, L, 3, nh, hd) layout of qkv's gradient
    return torch.stack([dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)], dim=2).view(S, L, d3)


def _backward_fake(dout, qkv, out, lse, num_heads, scale, backend):
    return qkv.new_empty(qkv.shape)


def _setup(ctx, args, output):
    qkv, num_heads, scale = args
    out, lse = output
    ctx.save_for_backward(qkv, out, lse)
    ctx.attrs = (num_heads, scale)


def _grads(ctx, bwd, dout, dlse):
    qkv, out, lse = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    return bwd(dout.contiguous(), qkv, out, lse, *ctx.attrs), None, None


qkv_attention_op = FusedOp(
    OP,
    KERNELS,
    forward=_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    setup=_setup,
    grads=_grads,
)


def qkv_attention(
    qkv: Tensor, num_heads: int, scale: Optional[float] = None, backend: str = "auto"
) -> Tensor:
    """Softmax self-attention of the heads packed in one qkv projection, out (S, L, d).

    out[s, l, h*hd:(h+1)*hd] = sum_j softmax_j(scale q_l.k_j) v_j with q, k, v head h of qkv[s, :, :d], [d:2d],
    [2d:]. Same numbers as `attention` on the permuted views (whose "auto" rules pick the backend).

    Args:
        qkv: (S, L, 3*d), d divisible by num_heads; any float dtype; made contiguous if it is not.
        num_heads: heads per projection.
        scale: None = (d / num_heads) ** -0.5.
        backend: as `attention`'s.
    """
    check_tensor("qkv_attention", "qkv", qkv, 3, shape_desc="(S, L, 3 * d)")
    S, L, d3 = qkv.shape
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or d3 % (3 * num_heads):
        raise ValueError(
            f"fxkernels.qkv_attention: qkv's last axis ({d3}) must be 3 * num_heads * head width, "
            f"got num_heads={num_heads!r}"
        )
    if L < 1:
        raise ValueError(f"fxkernels.qkv_attention: qkv needs at least one token, got {tuple(qkv.shape)}")
    hd = d3 // (3 * num_heads)
    scale = float(hd**-0.5 if scale is None else scale)
    qkv = qkv.contiguous()
    q, k, v = _views(qkv, num_heads)
    be = choose_backend(q, k, backend)
    if be not in ("cpu", "triton") or S == 0:
        return attention(q, k, v, scale, backend=be).transpose(1, 2).reshape(S, L, d3 // 3)
    return qkv_attention_op(qkv, num_heads, scale, be)[0]


__all__ = ["qkv_attention"]

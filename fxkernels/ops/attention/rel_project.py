"""The rel-pos projection `rel = [q.Gt | q.Gh | q.Gw]` of the public `attention` op as a kit op with a C++ CPU
kernel (csrc/attention/rel_project_cpu.cpp): `fxkernels::_rel_pos_project`.

In plain PyTorch (`reference.rel_pos_project`) the projection and its backward are nine small einsums with
permuted copies of q: at mvit_v2_s stage 4 they cost about a quarter of the fused attention itself. The cpu
backend of `attention` runs this op instead; every other backend keeps the PyTorch form (on CUDA those einsums
are cuBLAS calls). Private: not exported, the public entry is `fxkernels.attention`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..opkit import FusedOp
from .reference import _acc_dtype, rel_pos_project

OP = "_rel_pos_project"
KERNELS = {"cpu": "rel_pos_project_fwd"}


def _forward(q: Tensor, Gt: Tensor, Gh: Tensor, Gw: Tensor, has_cls: bool, backend: str) -> Tensor:
    return torch.ops.fxkernels.rel_pos_project_fwd(q, Gt, Gh, Gw, has_cls)


def _forward_fake(q, Gt, Gh, Gw, has_cls, backend):
    B, nh = q.shape[:2]
    return Gt.new_empty(
        (B, nh, Gt.shape[0] * Gh.shape[0] * Gw.shape[0], Gt.shape[1] + Gh.shape[1] + Gw.shape[1])
    )


def _backward(
    drel: Tensor,
    q: Tensor,
    Gt: Tensor,
    Gh: Tensor,
    Gw: Tensor,
    has_cls: bool,
    need_q: bool,
    need_g: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dq, dgt, dgh, dgw = torch.ops.fxkernels.rel_pos_project_bwd(drel, q, Gt, Gh, Gw, has_cls, need_q, need_g)
    return dq, dgt, dgh, dgw


def _backward_fake(drel, q, Gt, Gh, Gw, has_cls, need_q, need_g, backend):
    def like(t, need):
        return t.new_empty(t.shape) if need else t.new_empty(0)

    return like(q, need_q), like(Gt, need_g), like(Gh, need_g), like(Gw, need_g)


def _setup(ctx, args, output):
    q, Gt, Gh, Gw, has_cls = args
    ctx.save_for_backward(q, Gt, Gh, Gw)
    ctx.has_cls = has_cls


def _grads(ctx, bwd, drel):
    q, Gt, Gh, Gw = ctx.saved_tensors
    need_q, need_g = ctx.needs_input_grad[0], any(ctx.needs_input_grad[1:4])
    dq, dgt, dgh, dgw = bwd(drel.contiguous(), q, Gt, Gh, Gw, ctx.has_cls, need_q, need_g)
    g = (dgt, dgh, dgw) if need_g else (None, None, None)
    return (dq if need_q else None), *g, None


rel_pos_project_op = FusedOp(
    OP,
    KERNELS,
    forward=_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    setup=_setup,
    grads=_grads,
)


def rel_project(q: Tensor, Gt: Tensor, Gh: Tensor, Gw: Tensor, has_cls: bool, backend: str) -> Tensor:
    """rel (B, nh, Tq*Hq*Wq, Tk+Hk+Wk) of `reference.rel_pos_project`: the C++ kernel for the cpu backend, the
    PyTorch einsums otherwise. q (B, nh, c + Tq*Hq*Wq, hd); Gt (Tq, Tk, hd), Gh (Hq, Hk, hd), Gw (Wq, Wk, hd)."""
    if backend != "cpu":
        return rel_pos_project(q, Gt, Gh, Gw, has_cls)
    acc = _acc_dtype(q.dtype)
    return rel_pos_project_op(q, Gt.to(acc), Gh.to(acc), Gw.to(acc), bool(has_cls), "cpu")


__all__ = ["rel_project", "rel_pos_project_op"]

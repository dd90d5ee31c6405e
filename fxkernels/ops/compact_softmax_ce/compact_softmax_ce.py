"""Public op `compact_softmax_ce`: the compact softmax cross-entropy of a batch of logits in one fused pass per row
(README.md).

Defined with the op kit (fxkernels/ops/opkit.py) as the custom ops `fxkernels::compact_softmax_ce` (logits, target
-> the per-row losses in the accumulation dtype) and `fxkernels::compact_softmax_ce_backward` (the upstream
gradient of each row -> dlogits), with fakes and registered autograd, so it runs under
`torch.compile(fullgraph=True)`; eager calls use an autograd.Function around the same launches. The reduction
("mean" / "sum" / "none") and the final cast to the logits' dtype are plain torch ops on the (N,) row losses, so
autograd hands the backward kernel each row's upstream gradient. backend="reference" runs `compact_softmax_ce_ref`.
There is no hand-written CUDA kernel: CUDA tensors go to Triton.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._checks import check_tensor, has_data
from ..opkit import FusedOp
from .reference import compact_softmax_ce_ref

OP = "compact_softmax_ce"
REDUCTIONS = ("mean", "sum", "none")
TRITON_MAX_C = 1024  # the Triton kernel keeps a whole row in registers
# Which compiled kernels serve the family in each backend (availability checks, `python -m fxkernels`).
KERNELS = {"triton": True, "cpu": "compact_softmax_ce_fwd"}


def _launchers(backend: str):
    if backend == "triton":
        from . import triton as mod

        return mod.compact_softmax_ce_fwd_triton, mod.compact_softmax_ce_bwd_triton
    from . import cpp as mod

    return mod.compact_softmax_ce_fwd_cpp, mod.compact_softmax_ce_bwd_cpp


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_inputs(logits, target, beta, reduction) -> None:
    check_tensor(OP, "logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"fxkernels.{OP}: logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    N, C = logits.shape
    if C < 2:
        raise ValueError(f"fxkernels.{OP}: logits must be (N, C) with C >= 2 classes, got C = {C}")
    if not isinstance(target, torch.Tensor):
        raise ValueError(
            f"fxkernels.{OP}: target must be an int64 torch.Tensor (N,), got {type(target).__name__}"
        )
    if target.dtype != torch.int64:
        raise ValueError(f"fxkernels.{OP}: target must be int64 (N,) class indices, got {target.dtype}")
    if tuple(target.shape) != (N,):
        raise ValueError(f"fxkernels.{OP}: target must have shape (N,) = ({N},), got {tuple(target.shape)}")
    if target.device != logits.device:
        raise ValueError(
            f"fxkernels.{OP}: target is on {target.device} but logits is on {logits.device}; "
            "all inputs must be on one device"
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise ValueError(f"fxkernels.{OP}: beta must be a Python float, got {type(beta).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"fxkernels.{OP}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if N > 0 and has_data(target):
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= C:
            raise ValueError(
                f"fxkernels.{OP}: target values must be in [0, C) = [0, {C}), got values in [{lo}, {hi}]"
            )


# ---------------------------------------------------------------------------------------------- the op
def _forward(logits: Tensor, target: Tensor, beta: float, backend: str) -> Tensor:
    return _launchers(backend)[0](logits, target, beta)


def _forward_fake(logits, target, beta, backend):
    return logits.new_empty(logits.shape[0], dtype=_acc_dtype(logits.dtype))


def _backward(dl: Tensor, logits: Tensor, target: Tensor, beta: float, backend: str) -> Tensor:
    return _launchers(backend)[1](dl, logits, target, beta)


def _backward_fake(dl, logits, target, beta, backend):
    return logits.new_empty(logits.shape)  # contiguous


def _setup(ctx, args, output):
    logits, target, beta = args
    ctx.save_for_backward(logits, target)
    ctx.beta = beta


def _grads(ctx, bwd, dl):
    logits, target = ctx.saved_tensors
    return bwd(dl, logits, target, ctx.beta), None, None


compact_softmax_ce_op = FusedOp(
    OP,
    KERNELS,
    forward=_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    setup=_setup,
    grads=_grads,
)


# ------------------------------------------------------------------------------------ public function
def compact_softmax_ce(
    logits: Tensor, target: Tensor, beta: float = 0.2, reduction: str = "mean", backend: str = "auto"
) -> Tensor:
    """Compact softmax cross-entropy: cross-entropy plus beta/2 times the symmetric KL divergence between the
    softmax over the non-target classes and the uniform distribution over them (README.md).

    Args:
        logits: (N, C) float32/float64/float16/bfloat16, C >= 2, any strides (e.g. a transposed view).
        target: (N,) int64 class indices in [0, C).
        beta: the weight of the symmetric KL term (a Python float; 0 gives plain cross-entropy).
        reduction: "mean" (nan for N = 0, as torch.nn.functional.cross_entropy), "sum" (0 for N = 0) or "none"
            ((N,) per-row losses).
        backend: "auto" | "reference" | "triton" | "cpu" (no hand-written CUDA kernel: "auto" runs Triton on
            CUDA tensors with C <= 1024, the C++ kernel on CPU tensors; larger C on CUDA falls back to the
            reference).
    Returns:
        The loss in logits' dtype (fp32 accumulation for half types, fp64 for fp64). Differentiable w.r.t.
        logits (analytic gradient written in one pass, contiguous); deterministic on every backend. A NaN logit
        gives a NaN loss and a NaN gradient row.
    """
    _check_inputs(logits, target, beta, reduction)
    C = logits.shape[1]

    def why_not(cand):
        if cand == "triton" and C > TRITON_MAX_C:
            return f"the triton backend takes C <= {TRITON_MAX_C} classes (a row in registers), got C = {C}"
        return None

    be = compact_softmax_ce_op.resolve(backend, logits.device, why_not)
    if be == "reference":
        return compact_softmax_ce_ref(logits, target, float(beta), reduction)
    rows = compact_softmax_ce_op(logits, target, float(beta), be)
    if reduction == "mean":
        rows = rows.mean()
    elif reduction == "sum":
        rows = rows.sum()
    return rows.to(logits.dtype)


__all__ = ["compact_softmax_ce", "KERNELS"]

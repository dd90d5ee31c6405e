"""Public op `spatial_correlation` (SPEC section 7): the FlowNetC cost volume used by MOL.

Registered as the `torch.library` custom ops `fxkernels::spatial_correlation` and
`fxkernels::spatial_correlation_backward` (fake implementations and registered autograd), so it runs under
`torch.compile(fullgraph=True)`. Eager calls use a direct autograd.Function around the same launches.
The backends follow the contract in README.md; backend="reference" runs plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._backend import resolve
from ..._checks import check_same, check_tensor
from .reference import spatial_correlation_ref

OP = "spatial_correlation"
# Which compiled kernels serve the family in each backend (availability checks, `python -m fxkernels`).
KERNELS = {"triton": True, "cpu": "corr_fwd", "cuda": "corr_fwd"}


def _launchers(backend: str):
    if backend == "triton":
        from . import triton as mod

        return mod.spatial_correlation_fwd_triton, mod.spatial_correlation_bwd_triton
    from . import cpp as mod  # "cpu" and "cuda": the C++ ops, dispatched on device

    return mod.spatial_correlation_fwd_cpp, mod.spatial_correlation_bwd_cpp


def _triton_max_patch() -> int:
    from . import triton as mod

    return mod.MAX_PATCH


def _check_int(name: str, v, lo: int):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"fxkernels.{OP}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"fxkernels.{OP}: {name} must be >= {lo}, got {v}")


def _check_inputs(f1, f2, patch_size, dilation):
    check_tensor(OP, "f1", f1, 4, shape_desc="(B, C, H, W)")
    check_tensor(OP, "f2", f2, 4, shape_desc="(B, C, H, W)")
    if f2.shape != f1.shape:
        raise ValueError(
            f"fxkernels.{OP}: f2 must have the shape of f1 (B, C, H, W) = {tuple(f1.shape)}, got {tuple(f2.shape)}"
        )
    check_same(OP, "f1", f1, f2=f2)
    _check_int("patch_size", patch_size, 1)
    _check_int("dilation", dilation, 1)


def _pick(backend: str, device, patch: int) -> str:
    be = resolve(backend, device, OP, KERNELS)
    if be == "triton" and patch > _triton_max_patch():
        if backend == "auto":
            return "reference"
        raise ValueError(
            f"fxkernels.{OP}: the triton backend takes patch_size <= {_triton_max_patch()}, got {patch}; "
            "use backend='reference' or 'cuda'"
        )
    return be


# ---------------------------------------------------------------------------------------------- the ops
@torch.library.custom_op("fxkernels::spatial_correlation", mutates_args=())
def _corr_op(f1: Tensor, f2: Tensor, patch: int, dilation: int, backend: str) -> Tensor:
    return _launchers(backend)[0](f1, f2, patch, dilation)


@_corr_op.register_fake
def _(f1, f2, patch, dilation, backend):
    B, _, H, W = f1.shape
    return f1.new_empty((B, patch * patch, H, W))


@torch.library.custom_op("fxkernels::spatial_correlation_backward", mutates_args=())
def _corr_bwd_op(
    dout: Tensor, f1: Tensor, f2: Tensor, patch: int, dilation: int, backend: str
) -> tuple[Tensor, Tensor]:
    df1, df2 = _launchers(backend)[1](dout, f1, f2, patch, dilation)
    return df1, df2


@_corr_bwd_op.register_fake
def _(dout, f1, f2, patch, dilation, backend):
    return (
        torch.empty_like(f1, memory_format=torch.contiguous_format),
        torch.empty_like(f2, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    f1, f2, patch, dilation, backend = inputs
    ctx.save_for_backward(f1, f2)
    ctx.meta = (patch, dilation, backend)


def _backward(ctx, dout):
    f1, f2 = ctx.saved_tensors
    df1, df2 = _corr_bwd_op(dout.contiguous(), f1, f2, *ctx.meta)
    return df1, df2, None, None, None


_corr_op.register_autograd(_backward, setup_context=_setup_context)


class _CorrFunction(torch.autograd.Function):
    """The same launches as the custom op without the custom-op dispatch, for eager calls."""

    @staticmethod
    def forward(ctx, f1, f2, patch, dilation, backend):
        ctx.save_for_backward(f1, f2)
        ctx.meta = (patch, dilation, backend)
        return _launchers(backend)[0](f1, f2, patch, dilation)

    @staticmethod
    def backward(ctx, dout):
        f1, f2 = ctx.saved_tensors
        patch, dilation, backend = ctx.meta
        df1, df2 = _launchers(backend)[1](dout, f1, f2, patch, dilation)
        return df1, df2, None, None, None


# ------------------------------------------------------------------------------------ public function
def spatial_correlation(
    f1: Tensor, f2: Tensor, patch_size: int = 21, dilation: int = 2, backend: str = "auto"
) -> Tensor:
    """FlowNetC spatial correlation (cost volume) of two feature maps, zero outside the map.

    out[b, p*P+q, h, w] = sum_c f1[b,c,h,w] * f2[b,c, h+(p-P//2)*dilation, w+(q-P//2)*dilation].

    Args:
        f1, f2: (B, C, H, W), same dtype (fp32/fp64/fp16/bf16) and device, any strides.
        patch_size: P >= 1 displacements per axis (odd in FlowNetC/MOL: 21); dilation: >= 1 pixels per step.
        backend: "auto" | "reference" | "triton" | "cuda" | "cpu".
    Returns:
        out: (B, P*P, H, W) in f1's dtype (fp32 accumulation; fp64 for fp64). MOL then applies
        ``leaky_relu(out / C, 0.1)``. Differentiable w.r.t. f1 and f2; the fused backward is a gather
        (deterministic on every backend, no float atomics).
    """
    _check_inputs(f1, f2, patch_size, dilation)
    be = _pick(backend, f1.device, patch_size)
    if be == "reference":
        return spatial_correlation_ref(f1, f2, patch_size, dilation)
    if not torch.compiler.is_compiling():
        return _CorrFunction.apply(f1, f2, patch_size, dilation, be)
    return torch.ops.fxkernels.spatial_correlation(f1, f2, patch_size, dilation, be)


__all__ = ["spatial_correlation", "KERNELS"]

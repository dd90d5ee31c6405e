"""Public op `spatial_correlation`: the FlowNetC cost volume used by MOL (math in README.md).

Defined with the op kit (fxkernels/ops/opkit.py) as the custom ops `fxkernels::spatial_correlation` and
`fxkernels::spatial_correlation_backward` (fakes and registered autograd), so it runs under
`torch.compile(fullgraph=True)`; eager calls use an autograd.Function around the same launches.
The backends follow the contract in README.md; backend="reference" runs plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._checks import check_alloc, check_same, check_tensor
from ..opkit import FusedOp
from .reference import spatial_correlation_ref

OP = "spatial_correlation"
# Which compiled kernels serve the family in each backend (availability checks, `python -m fxkernels`).
KERNELS = {"triton": True, "cpu": "corr_fwd", "cuda": "corr_fwd"}
MAX_REACH = 2**30  # bound on patch_size**2 and patch_size * dilation (int32 displacement indexing)


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
    # the kernels index displacements in int32; beyond that no pixel is reached anyway
    if patch_size * patch_size > MAX_REACH or patch_size * dilation > MAX_REACH:
        raise ValueError(
            f"fxkernels.{OP}: patch_size * patch_size and patch_size * dilation must be at most 2^30, got "
            f"patch_size = {patch_size}, dilation = {dilation}"
        )
    B, _, H, W = f1.shape
    check_alloc(OP, "the output (B, patch_size**2, H, W)", (B, patch_size * patch_size, H, W), f1)


def _why_not(patch: int):
    def why(be: str):
        if be == "triton" and patch > _triton_max_patch():
            return (
                f"the triton backend takes patch_size <= {_triton_max_patch()}, got {patch}; "
                "use backend='reference' or 'cuda'"
            )
        return None

    return why


# ---------------------------------------------------------------------------------------------- the op
def _forward(f1: Tensor, f2: Tensor, patch: int, dilation: int, backend: str) -> Tensor:
    return _launchers(backend)[0](f1, f2, patch, dilation)


def _forward_fake(f1, f2, patch, dilation, backend):
    B, _, H, W = f1.shape
    return f1.new_empty((B, patch * patch, H, W))


def _backward(
    dout: Tensor, f1: Tensor, f2: Tensor, patch: int, dilation: int, backend: str
) -> tuple[Tensor, Tensor]:
    df1, df2 = _launchers(backend)[1](dout, f1, f2, patch, dilation)
    return df1, df2


def _backward_fake(dout, f1, f2, patch, dilation, backend):
    return (
        torch.empty_like(f1, memory_format=torch.contiguous_format),
        torch.empty_like(f2, memory_format=torch.contiguous_format),
    )


def _setup(ctx, args, output):
    f1, f2, patch, dilation = args
    ctx.save_for_backward(f1, f2)
    ctx.meta = (patch, dilation)


def _grads(ctx, bwd, dout):
    f1, f2 = ctx.saved_tensors
    df1, df2 = bwd(dout.contiguous(), f1, f2, *ctx.meta)
    return df1, df2, None, None


spatial_correlation_op = FusedOp(
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
def spatial_correlation(
    f1: Tensor, f2: Tensor, patch_size: int = 21, dilation: int = 2, backend: str = "auto"
) -> Tensor:
    """FlowNetC spatial correlation (cost volume) of two feature maps, zero outside the map.

    out[b, p*P+q, h, w] = sum_c f1[b,c,h,w] * f2[b,c, h+(p-P//2)*dilation, w+(q-P//2)*dilation].

    Args:
        f1, f2: (B, C, H, W), same dtype (fp32/fp64/fp16/bf16) and device, any strides.
        patch_size: P >= 1 displacements per axis (odd in FlowNetC/MOL: 21); dilation: >= 1 pixels per step;
            P * P and P * dilation at most 2^30 (int32 indexing; a larger reach only adds zero channels).
        backend: "auto" | "reference" | "triton" | "cuda" | "cpu".
    Returns:
        out: (B, P*P, H, W) in f1's dtype (fp32 accumulation; fp64 for fp64). MOL then applies
        ``leaky_relu(out / C, 0.1)``. Differentiable w.r.t. f1 and f2; the fused backward is a gather
        (deterministic on every backend, no float atomics).
    """
    _check_inputs(f1, f2, patch_size, dilation)
    be = spatial_correlation_op.resolve(backend, f1.device, _why_not(patch_size))
    if be == "reference":
        return spatial_correlation_ref(f1, f2, patch_size, dilation)
    return spatial_correlation_op(f1, f2, patch_size, dilation, be)


__all__ = ["spatial_correlation", "KERNELS"]

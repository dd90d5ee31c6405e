"""Public op `spectral_filter`: rfft -> complex filter -> irfft (+ residual) in one pass (math in README.md).

Defined with the op kit (fxkernels/ops/opkit.py) as the custom ops `fxkernels::spectral_filter` and
`fxkernels::spectral_filter_backward` (fakes and registered autograd), so it runs under
`torch.compile(fullgraph=True)`; eager calls use an autograd.Function around the same launches.
The ops see the canonical layout (time axis at position 2, README.md "Backend contract"); the public function
moves `dim` there and back with views. backend="reference" runs `torch.fft`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._checks import check_same, check_tensor
from ..opkit import FusedOp, empty_if_none
from .reference import NORMS, spectral_filter_ref

OP = "spectral_filter"
# Which compiled kernels serve the family in each backend (availability checks, `python -m fxkernels`).
KERNELS = {"triton": True, "cpu": "spectral_fwd", "cuda": "spectral_fwd"}
MAX_T = 64  # longest time axis of the fused kernels (register DFT tiles sized for M <= 33)


def _launchers(backend: str):
    if backend == "triton":
        from . import triton as mod

        return mod.spectral_filter_fwd_triton, mod.spectral_filter_bwd_triton
    from . import cpp as mod  # "cpu" and "cuda": the C++ ops, dispatched on device

    return mod.spectral_filter_fwd_cpp, mod.spectral_filter_bwd_cpp


# ----------------------------------------------------------------------------------------------- checks
def _check_inputs(x, filt, residual, dim, norm) -> int:
    check_tensor(OP, "x", x, 5, shape_desc="(B, C, T, H, W)")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"fxkernels.{OP}: dim must be an int, got {type(dim).__name__}")
    if not -5 <= dim <= 4:
        raise ValueError(f"fxkernels.{OP}: dim must name an axis of the 5-D x, in [-5, 4], got {dim}")
    d = dim % 5
    if norm is not None and norm not in NORMS:
        raise ValueError(f"fxkernels.{OP}: norm must be one of {NORMS} (or None), got {norm!r}")
    T = x.shape[d]
    if T < 1:
        raise ValueError(f"fxkernels.{OP}: the time axis (dim={dim}) of x must have length >= 1, got {T}")
    M = T // 2 + 1
    want = list(x.shape)
    want[d] = M
    desc = (
        f"x's shape with the time axis (dim={dim}) T={T} -> T//2+1={M}, each other axis 1 or x's size, then 2"
    )
    check_tensor(OP, "filt", filt, 6, shape_desc=f"({desc})")
    fs = tuple(filt.shape)
    if fs[-1] != 2:
        raise ValueError(f"fxkernels.{OP}: filt's last axis must be 2 (real, imag), got shape {fs}")
    if fs[d] != M:
        raise ValueError(
            f"fxkernels.{OP}: filt must have T//2+1 = {M} frequencies on axis {d} (T = {T}), got {fs[d]} "
            f"(filt shape {fs})"
        )
    for a in range(5):
        if a != d and fs[a] not in (1, want[a]):
            raise ValueError(
                f"fxkernels.{OP}: filt of shape {fs} does not broadcast against x of shape {tuple(x.shape)}: "
                f"axis {a} must be 1 or {want[a]}, got {fs[a]}"
            )
    if residual is not None:
        check_tensor(OP, "residual", residual, 5, tuple(x.shape), "x's shape ")
    check_same(OP, "x", x, filt=filt, residual=residual)
    return d


def _why_not(T: int):
    def why(be: str):
        if T > MAX_T:
            return (
                f"the fused backends take T <= {MAX_T} (register DFT tiles), got T={T}; "
                "use backend='reference' (torch.fft) or 'auto'"
            )
        return None

    return why


# ------------------------------------------------------------------------------- shared forward/backward
def _expand_filt(x: Tensor, filt: Tensor) -> Tensor:
    B, C, T, H, W = x.shape
    return filt.expand(B, C, T // 2 + 1, H, W, 2)


def _fwd(be, x, filt, residual):
    return _launchers(be)[0](x, _expand_filt(x, filt), residual)


def _grad_strides(t: Tensor) -> tuple:
    """The strides of torch.empty_like(t) (t's own when it is non-overlapping and dense, else contiguous),
    from a meta tensor: nothing is allocated."""
    return tuple(torch.empty_like(t, device="meta").stride())


def _bwd(be, dy, x, filt, need_dx: bool, need_dfilt: bool, like_filt: bool):
    """like_filt: return dfilt laid out as torch.empty_like(filt) (eager: autograd then keeps it as filt.grad
    without a copy), else contiguous (the registered op, whose fake impl cannot know the runtime layout)."""
    dx, dfull = _launchers(be)[1](dy, x, _expand_filt(x, filt), need_dx, need_dfilt)
    dfilt = None
    if need_dfilt:
        # sum the per-column gradient over the axes filt broadcasts on (deterministic torch.sum)
        axes = [a for a in range(5) if filt.shape[a] == 1 and dfull.shape[a] != 1]
        dfilt = (dfull.sum(axes, keepdim=True) if axes else dfull).to(filt.dtype)
        if not like_filt:
            dfilt = dfilt.contiguous()
        elif tuple(dfilt.stride()) != _grad_strides(filt):
            dfilt = torch.empty_like(filt).copy_(dfilt)
    return dx, dfilt


# ---------------------------------------------------------------------------------------------- the op
def _forward(x: Tensor, filt: Tensor, residual: Optional[Tensor], backend: str) -> Tensor:
    return _fwd(backend, x, filt, residual)


def _forward_fake(x, filt, residual, backend):
    return x.new_empty(x.shape)


def _backward(
    dy: Tensor, x: Tensor, filt: Tensor, need_dx: bool, need_dfilt: bool, backend: str
) -> tuple[Tensor, Tensor]:
    dx, dfilt = _bwd(backend, dy, x, filt, need_dx, need_dfilt, like_filt=False)
    return empty_if_none(dx, x), empty_if_none(dfilt, filt)


def _eager_backward(dy, x, filt, need_dx, need_dfilt, backend):
    return _bwd(backend, dy, x, filt, need_dx, need_dfilt, like_filt=True)


def _backward_fake(dy, x, filt, need_dx, need_dfilt, backend):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
    dfilt = filt.new_empty(filt.shape) if need_dfilt else filt.new_empty(0)
    return dx, dfilt


def _setup(ctx, args, output):
    x, filt, residual = args
    ctx.save_for_backward(x, filt)


def _grads(ctx, bwd, dy):
    x, filt = ctx.saved_tensors
    need_dx, need_dfilt, need_dres = ctx.needs_input_grad[:3]
    dx = dfilt = None
    if need_dx or need_dfilt:
        dx, dfilt = bwd(dy, x, filt, need_dx, need_dfilt)
    return (dx if need_dx else None), (dfilt if need_dfilt else None), (dy if need_dres else None)


spectral_filter_op = FusedOp(
    OP,
    KERNELS,
    forward=_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    eager_backward=_eager_backward,
    setup=_setup,
    grads=_grads,
)


# ------------------------------------------------------------------------------------ public function
def spectral_filter(
    x: Tensor,
    filt: Tensor,
    residual: Optional[Tensor] = None,
    dim: int = 2,
    norm: Optional[str] = "ortho",
    backend: str = "auto",
) -> Tensor:
    """Frequency-domain filter along the time axis (DTF / MTSTWN STFE), one pass over memory.

    y = irfft(rfft(x, dim, norm) * complex(filt[..., 0], filt[..., 1]), n=T, dim, norm) (+ residual).

    Args:
        x: (B, C, T, H, W) with the time axis at `dim` (any of the 5 axes; the shape names are for dim=2),
            float32/float64/float16/bfloat16, any strides.
        filt: (Bf, C', M, Hf, Wf, 2) = (real, imag), M = T//2+1 at axis `dim`; every other axis 1 (broadcast:
            a static per-channel filter is (1, C, M, 1, 1, 2)) or x's size (a data-dependent per-position filter
            is (B, C, M, H, W, 2)); x's dtype and device, any strides (e.g. a permuted view).
        residual: None or x's shape: added to the output in the same pass.
        norm: "ortho" | "backward" | "forward" (torch.fft meanings; None = "backward"). The pair of transforms
            always scales by 1/T, so the result does not depend on it beyond rounding.
        backend: "auto" | "reference" | "triton" | "cuda" | "cpu". The fused backends take T <= 64; "auto" uses
            the reference (torch.fft) above that.
    Returns:
        y: x's shape and dtype (fp32 accumulation; fp64 for fp64), contiguous for dim=2. Differentiable w.r.t.
        x, filt and residual; the fused backward is deterministic on every backend (each column is owned by one
        program; broadcast filter gradients are summed with torch.sum), no float atomics.
    """
    d = _check_inputs(x, filt, residual, dim, norm)
    be = spectral_filter_op.resolve(backend, x.device, _why_not(x.shape[d]))
    if be == "reference":
        return spectral_filter_ref(x, filt, residual, d, norm)
    xc, fc = x.movedim(d, 2), filt.movedim(d, 2)  # canonical (B, C, T, H, W) views
    rc = residual.movedim(d, 2) if residual is not None else None
    return spectral_filter_op(xc, fc, rc, be).movedim(2, d)


__all__ = ["spectral_filter", "KERNELS", "MAX_T"]

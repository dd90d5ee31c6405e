"""Triton backend of the dynamic image (math and contract in ./README.md).

Launchers (the backend contract: x as it is, any rank and strides, the canonical dim):

    dynamic_image_fwd_triton(x, dim) -> y          y = sum_t alpha_t x_t, x's shape without dim, contiguous
    dynamic_image_bwd_triton(dy, dim, T) -> dx     dx_t = alpha_t dy, dy's shape with T inserted at dim, contiguous

The launcher merges the axes other than ``dim`` (size-1 axes dropped, neighbours merged where the outer stride
steps over the inner axis): a contiguous ``(P, T, Q)`` tensor leaves the two axes ``(P, Q)``, a tensor with the
time axis first or last (contiguous) one. ``ND`` (constexpr 1, 2 or 4) is the number of merged axes the kernel
decomposes the flat output index into; a layout that does not merge into 4 axes is copied to a contiguous one
first (one extra pass: a tensor whose strides interleave five or more axes).

* ``_dynamic_image_fwd_kernel``: one program per ``BLOCK`` consecutive outputs ``o`` (y is contiguous); each lane
  finds its x offset from the merged axes once, then walks the time axis (pointer += the time stride) and
  accumulates ``alpha_t x_t`` in fp32 (fp64 for fp64), time order, one rounding at the store (bf16 to nearest
  even, exact under ``TRITON_INTERPRET`` too). Consecutive lanes read consecutive addresses when the innermost
  merged axis has unit stride (coalesced loads); x is read once.
* ``_dynamic_image_bwd_kernel``: one program per ``BLOCK`` outputs of dy: load ``dy[o]`` once (through its merged
  strides), then store ``alpha_t dy[o]`` to ``dx[p, t, q]`` for every ``t`` (``p = o // Q``, ``q = o % Q``; dx is
  contiguous ``(P, T, Q)``): dx is written in one pass, each element once.

The coefficients come from ``reference.dynamic_image_coefficients`` (fp64, rounded once to the accumulation
dtype; cached per ``(T, dtype, device)``). Every runtime argument is unspecialised
(``fxkernels._triton_utils.kernel``): ``aot_specs()`` lists the 24 variants (4 dtypes x ND in {1, 2, 4} x
forward / backward) that the launchers can pick, and ``aot_launch_samples()`` launches each.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from fxkernels._triton_utils import (
    FLOAT_DTYPES,
    TORCH_TO_SIG,
    KernelSpec,
    acc_dtype,
    acc_torch_dtype,
    cdiv,
    check_i32,
    kernel,
    launch,
    make_spec,
    to_storage,
)

from .reference import dynamic_image_coefficients

BLOCK = 1024
NUM_WARPS = 4
ND_CLASSES = (1, 2, 4)


# ==================================================================================================
# kernels


@triton.jit
def _offsets(o, n1, n2, n3, s0, s1, s2, s3, ND: tl.constexpr):
    """Element offsets (int64) of the flat indices o over the merged axes (n0, n1, n2, n3), innermost last; ND
    of them in use (ND = 1: o * s3, ND = 2: the axes 2 and 3)."""
    if ND == 1:
        off = o.to(tl.int64) * s3
    elif ND == 2:
        i3 = o % n3
        i2 = o // n3
        off = i2.to(tl.int64) * s2 + i3.to(tl.int64) * s3
    else:
        i3 = o % n3
        r = o // n3
        i2 = r % n2
        r = r // n2
        i1 = r % n1
        i0 = r // n1
        off = i0.to(tl.int64) * s0 + i1.to(tl.int64) * s1 + i2.to(tl.int64) * s2 + i3.to(tl.int64) * s3
    return off


@kernel
def _dynamic_image_fwd_kernel(
    x_ptr,
    y_ptr,
    a_ptr,
    N,
    T,
    st,
    n1,
    n2,
    n3,
    s0,
    s1,
    s2,
    s3,
    BLOCK: tl.constexpr,
    ND: tl.constexpr,
    ACC: tl.constexpr,
):
    """y[o] = sum_t alpha_t x[offset(o) + t * st] for BLOCK outputs o."""
    DT = y_ptr.dtype.element_ty
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < N
    xp = x_ptr + _offsets(o, n1, n2, n3, s0, s1, s2, s3, ND)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(T):
        a = tl.load(a_ptr + t)
        acc += a * tl.load(xp, mask=m, other=0.0).to(ACC)
        xp += st
    tl.store(y_ptr + o, to_storage(acc, DT), mask=m)


@kernel
def _dynamic_image_bwd_kernel(
    dy_ptr,
    dx_ptr,
    a_ptr,
    N,
    T,
    Q,
    n1,
    n2,
    n3,
    s0,
    s1,
    s2,
    s3,
    BLOCK: tl.constexpr,
    ND: tl.constexpr,
    ACC: tl.constexpr,
):
    """dx[p, t, q] = alpha_t dy[o] for BLOCK outputs o = p * Q + q of dy (dx contiguous (P, T, Q))."""
    DT = dx_ptr.dtype.element_ty
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < N
    g = tl.load(dy_ptr + _offsets(o, n1, n2, n3, s0, s1, s2, s3, ND), mask=m, other=0.0).to(ACC)
    p = o // Q
    q = o - p * Q
    dp = dx_ptr + p.to(tl.int64) * T * Q + q
    for t in range(T):
        a = tl.load(a_ptr + t)
        tl.store(dp, to_storage(a * g, DT), mask=m)
        dp += Q


# ==================================================================================================
# launch configurations (shared by the launchers and aot_specs, so the AOT compiles what runs)


def _meta(dtype, nd):
    return dict(BLOCK=BLOCK, ND=nd, ACC=acc_dtype(dtype), num_warps=NUM_WARPS, num_stages=1)


def _spec(fn, dtype, nd) -> KernelSpec:
    meta = _meta(dtype, nd)
    constexprs = {k: meta[k] for k in ("BLOCK", "ND", "ACC")}
    return make_spec(
        fn,
        TORCH_TO_SIG[dtype],
        constexprs,
        meta["num_warps"],
        meta["num_stages"],
        dtype=TORCH_TO_SIG[dtype],
        config=f"BLOCK{BLOCK}-ND{nd}-w{NUM_WARPS}-s1",
        ptr_overrides={"a_ptr": TORCH_TO_SIG[acc_torch_dtype(dtype)]},
    )


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    return [
        _spec(fn, dtype, nd)
        for fn in (_dynamic_image_fwd_kernel, _dynamic_image_bwd_kernel)
        for dtype in FLOAT_DTYPES
        for nd in ND_CLASSES
    ]


# ==================================================================================================
# layout


def _merged(sizes, strides) -> list:
    """(size, stride) of the axes, size-1 ones dropped, neighbours merged where the outer stride is the inner
    stride times the inner size (the same elements in the same logical order), outermost first."""
    out = []
    for n, s in zip(sizes, strides):
        if n == 1:
            continue
        if out and out[-1][1] == s * n:
            out[-1] = (out[-1][0] * n, s)
        else:
            out.append((n, s))
    return out


def _axes_args(axes) -> tuple[int, tuple]:
    """(ND, (n1, n2, n3, s0, s1, s2, s3)) for at most 4 merged axes, padded in front with (1, 0)."""
    nd = next(c for c in ND_CLASSES if c >= len(axes))
    axes = [(1, 0)] * (4 - len(axes)) + list(axes)
    (_, s0), (n1, s1), (n2, s2), (n3, s3) = axes
    return nd, (n1, n2, n3, s0, s1, s2, s3)


@functools.lru_cache(maxsize=64)
def _alpha(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return dynamic_image_coefficients(T, dtype, device)


def _check_src(name, t) -> None:
    if not (isinstance(t, torch.Tensor) and t.dtype in FLOAT_DTYPES):
        got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(
            f"dynamic_image (triton): {name} must be a float32/float64/float16/bfloat16 tensor, got {got}"
        )


def _grid(N: int, *ints: int) -> tuple[int]:
    """Kernel arguments stay int32 (the AOT signature; in-kernel offsets are int64)."""
    check_i32(N + BLOCK, *ints)
    return (cdiv(N, BLOCK),)


# ==================================================================================================
# launchers


def dynamic_image_fwd_triton(x: torch.Tensor, dim: int) -> torch.Tensor:
    """y = sum_t alpha_t x.select(dim, t) (README.md "Backend contract"): x any rank >= 1, any strides,
    0 <= dim < x.dim(); y has x's shape without dim, contiguous, x's dtype."""
    _check_src("x", x)
    if not 0 <= dim < x.dim():
        raise ValueError(
            f"dynamic_image (triton): dim must be in [0, {x.dim() - 1}] for x of shape {tuple(x.shape)}, got {dim}"
        )
    T = x.shape[dim]
    shape = [n for a, n in enumerate(x.shape) if a != dim]
    y = torch.empty(shape, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    if T == 0:
        return y.zero_()  # an empty sum
    others = [(n, s) for a, (n, s) in enumerate(zip(x.shape, x.stride())) if a != dim]
    axes = _merged(*zip(*others)) if others else []
    if len(axes) > 4:  # strides interleaving too many axes: one copy, then at most (P, Q)
        x = x.contiguous()
        axes = _merged(
            [n for a, n in enumerate(x.shape) if a != dim], [s for a, s in enumerate(x.stride()) if a != dim]
        )
    nd, args = _axes_args(axes)
    N = y.numel()
    grid = _grid(N, T, x.stride(dim), *args)
    alpha = _alpha(T, acc_torch_dtype(x.dtype), x.device)
    launch(_dynamic_image_fwd_kernel, grid, x, y, alpha, N, T, x.stride(dim), *args, **_meta(x.dtype, nd))
    return y


def dynamic_image_bwd_triton(dy: torch.Tensor, dim: int, T: int) -> torch.Tensor:
    """dx = alpha_t dy (README.md "Backend contract"): dy any strides, 0 <= dim <= dy.dim(), T >= 0; dx has dy's
    shape with T inserted at dim, contiguous, dy's dtype (every element written once)."""
    _check_src("dy", dy)
    if not 0 <= dim <= dy.dim() or T < 0:
        raise ValueError(
            f"dynamic_image (triton): need 0 <= dim <= {dy.dim()} and T >= 0 for dy of shape {tuple(dy.shape)}, "
            f"got dim={dim}, T={T}"
        )
    shape = list(dy.shape)
    shape.insert(dim, T)
    dx = torch.empty(shape, dtype=dy.dtype, device=dy.device)
    if dx.numel() == 0:
        return dx
    axes = _merged(dy.shape, dy.stride())
    if len(axes) > 4:
        dy = dy.contiguous()
        axes = _merged(dy.shape, dy.stride())
    nd, args = _axes_args(axes)
    N = dy.numel()
    Q = 1
    for n in dy.shape[dim:]:
        Q *= n
    grid = _grid(N, T, Q, *args)
    alpha = _alpha(T, acc_torch_dtype(dy.dtype), dy.device)
    launch(_dynamic_image_bwd_kernel, grid, dy, dx, alpha, N, T, Q, *args, **_meta(dy.dtype, nd))
    return dx


# ==================================================================================================
# AOT launch coverage


def aot_launch_samples() -> None:
    """Call both launchers on small CPU tensors for every dtype and ND class. ``fxkernels.aot`` runs this inside
    ``record_launches()`` (nothing executes) and checks that every recorded launch is one of ``aot_specs()``."""
    for dtype in FLOAT_DTYPES:
        base = torch.zeros(2, 3, 5, 4, 6, dtype=dtype)
        # (x, dim) with 1, 2 and 4 merged other axes: time first, contiguous (P, T, Q), a permuted view
        for x, dim in ((base, 0), (base, 2), (base.permute(0, 3, 2, 1, 4), 2)):
            y = dynamic_image_fwd_triton(x, dim)
            dynamic_image_bwd_triton(y, dim, x.shape[dim])  # dy contiguous: 1 merged axis
        # dy with 2 and 4 merged axes: a transposed matrix, all axes reversed
        dynamic_image_bwd_triton(torch.zeros(4, 6, dtype=dtype).t(), 1, 3)
        dynamic_image_bwd_triton(torch.zeros(5, 4, 3, 2, dtype=dtype).permute(3, 2, 1, 0), 2, 3)

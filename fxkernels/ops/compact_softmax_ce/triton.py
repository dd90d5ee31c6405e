"""Triton backend of the compact softmax cross-entropy (math and contract in ./README.md).

Launchers (the backend contract: logits as they are, any strides):

    compact_softmax_ce_fwd_triton(logits, target, beta) -> rows       (N,) per-row losses, accumulation dtype
    compact_softmax_ce_bwd_triton(dl, logits, target, beta) -> dz     (N, C) contiguous, logits' dtype

* ``_compact_softmax_ce_fwd_kernel``: one program per ``BLOCK_N`` rows; the whole row (``BLOCK_C`` = the next
  power of two of C, 16 <= BLOCK_C <= 1024) is loaded once into registers in the accumulation dtype (fp32, fp64
  for fp64). Both maxima (all columns, non-target columns), the sum-exp over all columns and over the non-target
  ones (the target column is masked out, nothing is gathered), the p'-weighted sum and the plain sum of the
  shifted non-target logits are row reductions of that tile; the loss follows in closed form.
* ``_compact_softmax_ce_bwd_kernel``: the same row statistics from the same tile, then the gradient row
  ``dl_n (p_c - [c=y] + beta/2 [c!=y] (p'_c - 1/K + p'_c (log p'_c - S)))`` stored once (rounded once to the
  logits' dtype, bf16 to nearest even).

``BLOCK_N = 2048 // BLOCK_C`` rows per program (a 2048-element tile, 4 warps; fp64 at most 8 rows, 16 for
``BLOCK_C = 32``: the spill-free choices). beta/2 and 1/K travel in a
2-element tensor in the accumulation dtype (runtime arguments are int32 in the AOT signatures). Every runtime
argument is unspecialised (``fxkernels._triton_utils.kernel``): ``aot_specs()`` lists the 56 variants
(4 dtypes x 7 BLOCK_C classes x forward / backward) that the launchers can pick, and ``aot_launch_samples()``
launches each. C > 1024 is refused (the public op's ``why_not`` sends it elsewhere).
"""

from __future__ import annotations

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
    next_pow2,
    to_storage,
)

MAX_C = 1024
TILE = 2048  # elements per program
FP64_MAX_ROWS = 8
NUM_WARPS = 4
BLOCK_C_CLASSES = (16, 32, 64, 128, 256, 512, 1024)


# ==================================================================================================
# kernels


@triton.jit
def _row_stats(
    z_ptr, y_ptr, pid, N, C, szn, szc, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr
):
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_C)
    rm = rows < N
    valid = rm[:, None] & (cols < C)[None, :]
    ptrs = z_ptr + rows.to(tl.int64)[:, None] * szn + cols.to(tl.int64)[None, :] * szc
    z = tl.load(ptrs, mask=valid, other=0.0).to(ACC)
    t = tl.load(y_ptr + rows, mask=rm, other=0).to(tl.int32)
    is_t = valid & (cols[None, :] == t[:, None])
    nt = valid & ~is_t
    m = tl.max(tl.where(valid, z, float("-inf")), 1)
    m2 = tl.max(tl.where(nt, z, float("-inf")), 1)
    d = tl.where(valid, z - m[:, None], 0.0)
    s = tl.sum(tl.where(valid, tl.exp(d), 0.0), 1)
    d2 = tl.where(nt, z - m2[:, None], 0.0)
    e2 = tl.where(nt, tl.exp(d2), 0.0)
    s2 = tl.sum(e2, 1)
    t2 = tl.sum(e2 * d2, 1)
    a2 = tl.sum(d2, 1)
    zy = tl.sum(tl.where(is_t, z, 0.0), 1)
    s = tl.where(rm, s, 1.0)  # rows past N: no log(0), 0 / 0 (never stored)
    s2 = tl.where(rm, s2, 1.0)
    return rows, cols, rm, valid, is_t, d, d2, m, zy, s, s2, t2, a2


@kernel
def _compact_softmax_ce_fwd_kernel(
    z_ptr,
    y_ptr,
    out_ptr,
    par_ptr,
    N,
    C,
    szn,
    szc,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
):
    """out[n] = (m - z_y) + log s + beta/2 (E_{p'}[z - m2] - mean_{c!=y}(z_c - m2)) for BLOCK_N rows n."""
    hb = tl.load(par_ptr)
    inv_k = tl.load(par_ptr + 1)
    rows, cols, rm, valid, is_t, d, d2, m, zy, s, s2, t2, a2 = _row_stats(
        z_ptr, y_ptr, tl.program_id(0), N, C, szn, szc, BLOCK_N, BLOCK_C, ACC
    )
    loss = (m - zy) + tl.log(s) + hb * (t2 / s2 - a2 * inv_k)
    tl.store(out_ptr + rows, loss, mask=rm)


@kernel
def _compact_softmax_ce_bwd_kernel(
    dl_ptr,
    z_ptr,
    y_ptr,
    dz_ptr,
    par_ptr,
    N,
    C,
    szn,
    szc,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
):
    """dz[n, c] = dl[n] (p_c - [c=y] + beta/2 [c!=y] (p'_c - 1/K + p'_c (log p'_c - S))), dz contiguous."""
    DT = dz_ptr.dtype.element_ty
    hb = tl.load(par_ptr)
    inv_k = tl.load(par_ptr + 1)
    rows, cols, rm, valid, is_t, d, d2, m, zy, s, s2, t2, a2 = _row_stats(
        z_ptr, y_ptr, tl.program_id(0), N, C, szn, szc, BLOCK_N, BLOCK_C, ACC
    )
    ls2 = tl.log(s2)
    S = t2 / s2 - ls2
    p = tl.exp(d - tl.log(s)[:, None])
    lq = d2 - ls2[:, None]
    q = tl.exp(lq)
    r = tl.where(is_t, p - 1.0, p + hb * (q - inv_k + q * (lq - S[:, None])))
    g = tl.load(dl_ptr + rows, mask=rm, other=0.0)
    ptrs = dz_ptr + rows.to(tl.int64)[:, None] * C + cols[None, :]
    tl.store(ptrs, to_storage(g[:, None] * r, DT), mask=valid)


# ==================================================================================================
# launch configurations (shared by the launchers and aot_specs, so the AOT compiles what runs)


def _block_c(C: int) -> int:
    return max(BLOCK_C_CLASSES[0], next_pow2(C))


def _block_n(dtype, block_c) -> int:
    """Rows per program: a TILE-element tile; fp64 at most FP64_MAX_ROWS rows (the fp64 exp / log of more
    rows per thread spill on sm_80 / sm_90), and 16 for BLOCK_C = 32 (8 rows spill 4 bytes on sm_80, 16 none:
    measured with `python -m fxkernels.aot`)."""
    n = TILE // block_c
    if dtype != torch.float64:
        return n
    return 16 if block_c == 32 else min(n, FP64_MAX_ROWS)


def _meta(dtype, block_c):
    return dict(
        BLOCK_N=_block_n(dtype, block_c),
        BLOCK_C=block_c,
        ACC=acc_dtype(dtype),
        num_warps=NUM_WARPS,
        num_stages=1,
    )


def _spec(fn, dtype, block_c) -> KernelSpec:
    meta = _meta(dtype, block_c)
    acc = TORCH_TO_SIG[acc_torch_dtype(dtype)]
    over = {"y_ptr": "i64", "par_ptr": acc, "dl_ptr": acc}
    if fn is _compact_softmax_ce_fwd_kernel:
        over["out_ptr"] = acc
    return make_spec(
        fn,
        TORCH_TO_SIG[dtype],
        {k: meta[k] for k in ("BLOCK_N", "BLOCK_C", "ACC")},
        meta["num_warps"],
        meta["num_stages"],
        dtype=TORCH_TO_SIG[dtype],
        config=f"BN{meta['BLOCK_N']}-BC{block_c}-w{NUM_WARPS}-s1",
        ptr_overrides=over,
    )


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    return [
        _spec(fn, dtype, bc)
        for fn in (_compact_softmax_ce_fwd_kernel, _compact_softmax_ce_bwd_kernel)
        for dtype in FLOAT_DTYPES
        for bc in BLOCK_C_CLASSES
    ]


# ==================================================================================================
# launchers


def _check(logits, target) -> tuple[int, int]:
    if not (isinstance(logits, torch.Tensor) and logits.dtype in FLOAT_DTYPES and logits.dim() == 2):
        got = (
            f"{tuple(logits.shape)} {logits.dtype}"
            if isinstance(logits, torch.Tensor)
            else type(logits).__name__
        )
        raise ValueError(
            f"compact_softmax_ce (triton): logits must be a 2-D (N, C) float32/float64/float16/bfloat16 tensor, "
            f"got {got}"
        )
    N, C = logits.shape
    if not 2 <= C <= MAX_C:
        raise ValueError(
            f"compact_softmax_ce (triton): logits must have 2 <= C <= {MAX_C} classes, got C = {C}"
        )
    if not (isinstance(target, torch.Tensor) and target.dtype == torch.int64 and tuple(target.shape) == (N,)):
        raise ValueError(f"compact_softmax_ce (triton): target must be an int64 tensor of shape ({N},)")
    return N, C


def _params(beta: float, C: int, dtype, device) -> torch.Tensor:
    return torch.tensor([beta / 2, 1.0 / (C - 1)], dtype=torch.float64).to(acc_torch_dtype(dtype)).to(device)


def _grid(N: int, block_n: int, *ints: int) -> tuple[int]:
    """Kernel arguments stay int32 (the AOT signature; in-kernel offsets are int64)."""
    check_i32(N + TILE, *ints)
    return (cdiv(N, block_n),)


def compact_softmax_ce_fwd_triton(logits: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row losses (N,) in the accumulation dtype (README.md "Backend contract"): logits (N, C), 2 <= C <= 1024,
    any strides; target (N,) int64 in [0, C) (not checked here: the public op checks it)."""
    N, C = _check(logits, target)
    out = torch.empty(N, dtype=acc_torch_dtype(logits.dtype), device=logits.device)
    if N == 0:
        return out
    bc = _block_c(C)
    szn, szc = logits.stride()
    grid = _grid(N, _block_n(logits.dtype, bc), C, szn, szc)
    par = _params(beta, C, logits.dtype, logits.device)
    launch(
        _compact_softmax_ce_fwd_kernel,
        grid,
        logits,
        target,
        out,
        par,
        N,
        C,
        szn,
        szc,
        **_meta(logits.dtype, bc),
    )
    return out


def compact_softmax_ce_bwd_triton(
    dl: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, beta: float
) -> torch.Tensor:
    """dlogits (N, C), contiguous, logits' dtype (README.md "Backend contract"): dl (N,) the upstream gradient of
    each row's loss (any float dtype, converted to the accumulation dtype)."""
    N, C = _check(logits, target)
    dz = torch.empty(N, C, dtype=logits.dtype, device=logits.device)
    if N == 0:
        return dz
    bc = _block_c(C)
    szn, szc = logits.stride()
    grid = _grid(N, _block_n(logits.dtype, bc), C, szn, szc, N * C)
    par = _params(beta, C, logits.dtype, logits.device)
    g = dl.to(acc_torch_dtype(logits.dtype)).contiguous()
    launch(
        _compact_softmax_ce_bwd_kernel,
        grid,
        g,
        logits,
        target,
        dz,
        par,
        N,
        C,
        szn,
        szc,
        **_meta(logits.dtype, bc),
    )
    return dz


# ==================================================================================================
# AOT launch coverage


def aot_launch_samples() -> None:
    """Call both launchers on small CPU tensors for every dtype and BLOCK_C class. ``fxkernels.aot`` runs this
    inside ``record_launches()`` (nothing executes) and checks that every recorded launch is one of
    ``aot_specs()``."""
    for dtype in FLOAT_DTYPES:
        for C in (2, 17, 33, 100, 255, 512, 1000):
            z = torch.zeros(3, C, dtype=dtype)
            y = torch.zeros(3, dtype=torch.int64)
            rows = compact_softmax_ce_fwd_triton(z.t().contiguous().t(), y, 0.2)
            compact_softmax_ce_bwd_triton(rows, z, y, 0.2)

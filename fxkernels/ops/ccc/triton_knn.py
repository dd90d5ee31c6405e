"""CCC Triton backend: the fused k-NN (``knn_cosine_triton``; kernels described in triton.py)."""

from __future__ import annotations

import operator

import torch
import triton.language as tl

from fxkernels._triton_utils import KernelSpec, acc_dtype, cdiv, check_i32, kernel, launch, next_pow2

from .reference import knn_cosine_ref
from .triton_common import _DTYPES, _EPS, _check_float, _need, _spec

KNN_FUSED_MAX = 256  # rows held entirely in registers by _knn_cosine_kernel
KNN_TILED_KMAX = 64  # largest k of the streamed top-k kernel (R > KNN_FUSED_MAX)
KNN_RP_CLASSES = (16, 32, 64, 128, 256)
KNN_KP_CLASSES = (16, 32, 64)


# ==================================================================================================
# kernels


@kernel
def _knn_cosine_kernel(
    x_ptr,
    nbr_ptr,
    R,
    D,
    k,
    sxb,
    sxr,
    sxd,
    RP: tl.constexpr,
    BM: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
):
    """nbr[b, r, :k] = top-k of sim[b, r, :] (ties -> lower index) for the BM rows of this program."""
    b = tl.program_id(0)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    cols = tl.arange(0, RP)
    rmask = rows < R
    cmask = cols < R
    x_base = x_ptr + b.to(tl.int64) * sxb
    gram = tl.zeros([BM, RP], dtype=ACC)
    sq = tl.zeros([RP], dtype=ACC)
    for d0 in range(0, D, BK):
        d = d0 + tl.arange(0, BK)
        dmask = d < D
        xa = tl.load(
            x_base + rows[:, None] * sxr + d[None, :] * sxd, mask=rmask[:, None] & dmask[None, :], other=0.0
        )
        xt = tl.load(
            x_base + cols[None, :] * sxr + d[:, None] * sxd, mask=dmask[:, None] & cmask[None, :], other=0.0
        )
        gram = tl.dot(xa, xt, gram, input_precision="ieee", out_dtype=ACC)
        xf = xt.to(ACC)
        sq += tl.sum(xf * xf, axis=0)
    if ACC == tl.float64:
        nq = tl.maximum(tl.sqrt(sq), _EPS)
    else:
        nq = tl.maximum(tl.sqrt_rn(sq), _EPS)
    # the rows' own norms, taken from the column norms (bitwise the same values)
    nr = tl.sum(tl.where(cols[None, :] == rows[:, None], nq[None, :], 0.0), axis=1)
    den = nr[:, None] * nq[None, :]
    if ACC == tl.float64:
        sim = gram / den
    else:
        sim = tl.div_rn(gram, den)
    # NaN first (as the reference's descending sort): finite similarities are within [-1, 1] up to rounding,
    # so a NaN can take +inf as its key (+inf never occurs otherwise)
    sim = tl.where(cmask[None, :], tl.where(sim != sim, float("inf"), sim), float("-inf"))
    out = nbr_ptr + (b * R + rows).to(tl.int64) * k
    for t in range(0, k):
        best = tl.max(sim, axis=1)
        idx = tl.min(tl.where(sim == best[:, None], cols[None, :], RP), axis=1)
        tl.store(out + t, idx.to(tl.int64), mask=rmask)
        sim = tl.where(cols[None, :] == idx[:, None], float("-inf"), sim)


@kernel
def _knn_cosine_tiled_kernel(
    x_ptr,
    nbr_ptr,
    R,
    D,
    k,
    sxb,
    sxr,
    sxd,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    KP: tl.constexpr,
    ACC: tl.constexpr,
):
    """Streamed top-k (k <= KP) over column tiles of BN: the running top-KP of each row stays sorted
    (value descending, index ascending) in registers; each tile is merged into it by k selection rounds."""
    b = tl.program_id(0)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    rmask = rows < R
    x_base = x_ptr + b.to(tl.int64) * sxb
    # row norms
    sqr = tl.zeros([BM], dtype=ACC)
    for d0 in range(0, D, BK):
        d = d0 + tl.arange(0, BK)
        xa = tl.load(
            x_base + rows[:, None] * sxr + d[None, :] * sxd,
            mask=rmask[:, None] & (d < D)[None, :],
            other=0.0,
        ).to(ACC)
        sqr += tl.sum(xa * xa, axis=1)
    if ACC == tl.float64:
        nr = tl.maximum(tl.sqrt(sqr), _EPS)
    else:
        nr = tl.maximum(tl.sqrt_rn(sqr), _EPS)
    slots = tl.arange(0, KP)
    bv = tl.full([BM, KP], float("-inf"), dtype=ACC)
    bi = tl.zeros([BM, KP], dtype=tl.int32)
    for c0 in range(0, R, BN):
        cols = c0 + tl.arange(0, BN)
        cmask = cols < R
        gram = tl.zeros([BM, BN], dtype=ACC)
        sq = tl.zeros([BN], dtype=ACC)
        for d0 in range(0, D, BK):
            d = d0 + tl.arange(0, BK)
            dmask = d < D
            xa = tl.load(
                x_base + rows[:, None] * sxr + d[None, :] * sxd,
                mask=rmask[:, None] & dmask[None, :],
                other=0.0,
            )
            xt = tl.load(
                x_base + cols[None, :] * sxr + d[:, None] * sxd,
                mask=dmask[:, None] & cmask[None, :],
                other=0.0,
            )
            gram = tl.dot(xa, xt, gram, input_precision="ieee", out_dtype=ACC)
            xf = xt.to(ACC)
            sq += tl.sum(xf * xf, axis=0)
        if ACC == tl.float64:
            nq = tl.maximum(tl.sqrt(sq), _EPS)
            sim = gram / (nr[:, None] * nq[None, :])
        else:
            nq = tl.maximum(tl.sqrt_rn(sq), _EPS)
            sim = tl.div_rn(gram, nr[:, None] * nq[None, :])
        sim = tl.where(cmask[None, :], tl.where(sim != sim, float("inf"), sim), float("-inf"))  # NaN first
        nv = tl.full([BM, KP], float("-inf"), dtype=ACC)
        ni = tl.zeros([BM, KP], dtype=tl.int32)
        for t in range(0, k):
            best = tl.maximum(tl.max(bv, axis=1), tl.max(sim, axis=1))
            ib = tl.min(tl.where(bv == best[:, None], bi, 2147483647), axis=1)
            it = tl.min(tl.where(sim == best[:, None], cols[None, :], 2147483647), axis=1)
            idx = tl.minimum(ib, it)
            nv = tl.where(slots[None, :] == t, best[:, None], nv)
            ni = tl.where(slots[None, :] == t, idx[:, None], ni)
            bv = tl.where(bi == idx[:, None], float("-inf"), bv)
            sim = tl.where(cols[None, :] == idx[:, None], float("-inf"), sim)
        bv = nv
        bi = ni
    out = nbr_ptr + (b * R + rows).to(tl.int64) * k
    tl.store(out[:, None] + slots[None, :], bi.to(tl.int64), mask=rmask[:, None] & (slots < k)[None, :])


# ==================================================================================================
# launch configurations (shared by the launcher and the AOT specs)


def _knn_meta(dtype, R):
    rp = max(16, next_pow2(R))
    half = dtype in (torch.float16, torch.bfloat16)
    return dict(
        RP=rp,
        BM=16,
        BK=32 if half else 16,
        ACC=acc_dtype(dtype),
        num_warps=16 if rp >= 256 else 4,  # 4 / 8 warps spill a little at RP = 256
        num_stages=1,
    )


def _knn_tiled_meta(dtype, k):
    half = dtype in (torch.float16, torch.bfloat16)
    return dict(
        BM=16,
        BN=64,
        BK=32 if half else 16,
        KP=max(16, next_pow2(k)),
        ACC=acc_dtype(dtype),
        num_warps=8 if dtype == torch.float64 else 4,
        num_stages=1,
    )


def knn_specs() -> list[KernelSpec]:
    """Every k-NN kernel variant the launcher can use."""
    specs = []
    for dtype in _DTYPES:
        for rp in KNN_RP_CLASSES:
            specs.append(_spec(_knn_cosine_kernel, dtype, "ieee", _knn_meta(dtype, rp), {"nbr_ptr": "i64"}))
        for kp in KNN_KP_CLASSES:
            specs.append(
                _spec(_knn_cosine_tiled_kernel, dtype, "ieee", _knn_tiled_meta(dtype, kp), {"nbr_ptr": "i64"})
            )
    return specs


# ==================================================================================================
# launcher


def knn_cosine_triton(x: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k cosine neighbours of every row (self included, ties -> lower index).

    x: (B, R, D) float, any strides; 1 <= k <= R.  Returns (B, R, k) int64, contiguous.
    R <= 256: ``_knn_cosine_kernel`` (norms + Gram + top-k fused, nothing R x R in memory).  R > 256:
    ``_knn_cosine_tiled_kernel`` (streamed over column tiles with a running top-k) when k <= 64,
    otherwise the reference ``knn_cosine_ref`` (normalise first, similarity in the input dtype).
    """
    _check_float("x", x, 3)
    B, R, D = x.shape
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"ccc: k must be an int, got {type(k).__name__}") from None
    _need(1 <= k <= R, f"k must be in [1, R={R}] for x of shape {tuple(x.shape)}, got {k}")
    nbr = torch.empty((B, R, k), dtype=torch.int64, device=x.device)
    if B == 0:
        return nbr
    if R > KNN_FUSED_MAX and k > KNN_TILED_KMAX:
        return knn_cosine_ref(x, k).contiguous()
    sx = x.stride()
    check_i32(*sx, (R - 1) * sx[1] + (D - 1) * sx[2], B * R, R * k)
    if R <= KNN_FUSED_MAX:
        meta = _knn_meta(x.dtype, R)
        fn = _knn_cosine_kernel
    else:
        meta = _knn_tiled_meta(x.dtype, k)
        fn = _knn_cosine_tiled_kernel
    launch(fn, (B, cdiv(R, meta["BM"])), x, nbr, R, D, k, *sx, **meta)
    return nbr

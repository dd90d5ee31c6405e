"""Triton backend of the spatial-correlation family (math and contract in ./README.md).

Launchers (the backend contract):

    spatial_correlation_fwd_triton(f1, f2, patch, dilation) -> out
    spatial_correlation_bwd_triton(dout, f1, f2, patch, dilation) -> (df1, df2)

With ``R = patch // 2`` and ``o(p) = (p - R) * dilation``:

* ``_spatial_correlation_fwd_kernel``: one program per (batch, row ``h``, tile of ``BW`` columns, row
  displacement ``p``).  If the row ``h + o(p)`` is inside the map it accumulates, over blocks of ``BC``
  channels, ``acc[c, q, w] += f1[b, c, h, w] * f2[b, c, h + o(p), w + o(q)]`` (a ``(BC, BQ, BW)`` register
  tile, the ``f2`` values gathered for all ``q < patch`` at once with masked loads that give 0 outside the
  map), reduces over ``c`` once at the end and stores ``out[b, p*patch + q, h, w]`` (zeros for a row
  outside the map).
* ``_spatial_correlation_bwd_kernel``: both input gradients are gathers (no atomics, deterministic).  One
  program per (batch, row ``h``, block of ``BC`` channels, tile of ``BW`` columns) loops over the row
  displacements ``p`` whose row is inside and accumulates a ``(BC, BQ, BW)`` tile, reduced over ``q`` at
  the end:

      DF2 = False:  df1[b,c,h,w] = sum_{p,q} dout[b,pq,h,w] f2[b,c,h+o(p),w+o(q)]
      DF2 = True:   df2[b,c,h,w] = sum_{p,q} dout[b,pq,h-o(p),w-o(q)] f1[b,c,h-o(p),w-o(q)]

  Both loads are masked by "inside the map", so a non-finite ``dout`` at a displacement that leaves the
  map contributes nothing (as in the reference, whose gather drops those entries).

Tile classes: ``BQ = max(4, next_pow2(patch))`` in ``BQ_CLASSES`` (so ``1 <= patch <= MAX_PATCH = 64``; a
larger patch raises ``ValueError`` and the public op falls back), ``BW = 16`` and ``BC`` such that the
register tile keeps a fixed number of elements.  Accumulation is fp32 for fp32/fp16/bf16 and fp64 for
fp64, one rounding at the store (bf16 rounds to nearest even by bit arithmetic, exact under
``TRITON_INTERPRET`` too).  Every runtime argument is unspecialised (``fxkernels._triton_utils.kernel``)
and the launch configurations come from the same functions as ``aot_specs()``, so the AOT-compiled
binaries are exactly what runs.
"""

from __future__ import annotations

import operator

import torch
import triton.language as tl

from fxkernels._triton_utils import (
    FLOAT_DTYPES,
    TORCH_TO_SIG,
    KernelSpec,
    acc_dtype,
    cdiv,
    check_i32,
    kernel,
    launch,
    make_spec,
    next_pow2,
    to_storage,
)

BQ_CLASSES = (4, 8, 16, 32, 64)
MAX_PATCH = BQ_CLASSES[-1]
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_BW = 16


# ==================================================================================================
# kernels


@kernel
def _spatial_correlation_fwd_kernel(
    f1_ptr,
    f2_ptr,
    out_ptr,
    C,
    H,
    W,
    P,
    D,
    s1b,
    s1c,
    s1h,
    s1w,
    s2b,
    s2c,
    s2h,
    s2w,
    BC: tl.constexpr,
    BQ: tl.constexpr,
    BW: tl.constexpr,
    ACC: tl.constexpr,
):
    """out[b, p*P+q, h, w] = sum_c f1[b,c,h,w] f2[b,c,h+o(p),w+o(q)] for one (b, h, w-tile, p)."""
    DT = out_ptr.dtype.element_ty
    nwt = tl.cdiv(W, BW)
    pid = tl.program_id(0)  # (b * H + h) * nwt + wt
    p = tl.program_id(1)
    wt = pid % nwt
    bh = pid // nwt
    h = bh % H
    b = bh // H
    R = P // 2
    hh = h + (p - R) * D
    w = wt * BW + tl.arange(0, BW)
    q = tl.arange(0, BQ)
    wmask = w < W
    ww = w[None, :] + (q[:, None] - R) * D  # (BQ, BW) columns in f2
    qw_in = (q[:, None] < P) & wmask[None, :] & (ww >= 0) & (ww < W)
    acc = tl.zeros([BQ, BW], dtype=ACC)
    if (hh >= 0) & (hh < H):
        f1_base = f1_ptr + b.to(tl.int64) * s1b + h * s1h
        f2_base = f2_ptr + b.to(tl.int64) * s2b + hh * s2h
        f1_off = w * s1w  # (BW,)
        f2_off = ww * s2w  # (BQ, BW)
        acc3 = tl.zeros([BC, BQ, BW], dtype=ACC)
        for c0 in range(0, C, BC):
            c = c0 + tl.arange(0, BC)
            cm = c < C
            a = tl.load(
                f1_base + c[:, None] * s1c + f1_off[None, :],
                mask=cm[:, None] & wmask[None, :],
                other=0.0,
            ).to(ACC)
            g = tl.load(
                f2_base + c[:, None, None] * s2c + f2_off[None, :, :],
                mask=cm[:, None, None] & qw_in[None, :, :],
                other=0.0,
            ).to(ACC)
            acc3 += a[:, None, :] * g
        acc = tl.sum(acc3, axis=0)
    HW = H * W
    out_base = out_ptr + b.to(tl.int64) * (P * P * HW)
    out_off = (p * P + q[:, None]) * HW + h * W + w[None, :]
    tl.store(out_base + out_off, to_storage(acc, DT), mask=(q[:, None] < P) & wmask[None, :])


@kernel
def _spatial_correlation_bwd_kernel(
    dout_ptr,
    src_ptr,
    dst_ptr,
    C,
    H,
    W,
    P,
    D,
    sdb,
    sdp,
    sdh,
    sdw,
    ssb,
    ssc,
    ssh,
    ssw,
    BC: tl.constexpr,
    BQ: tl.constexpr,
    BW: tl.constexpr,
    DF2: tl.constexpr,
    ACC: tl.constexpr,
):
    """DF2 = False: dst = df1, src = f2; DF2 = True: dst = df2, src = f1 (see the module docstring)."""
    DT = dst_ptr.dtype.element_ty
    nwt = tl.cdiv(W, BW)
    ncb = tl.cdiv(C, BC)
    pid = tl.program_id(0)  # ((b * H + h) * ncb + cb) * nwt + wt
    wt = pid % nwt
    t = pid // nwt
    cb = t % ncb
    t = t // ncb
    h = t % H
    b = t // H
    R = P // 2
    if DF2:
        sgn = -1
    else:
        sgn = 1
    w = wt * BW + tl.arange(0, BW)
    q = tl.arange(0, BQ)
    c = cb * BC + tl.arange(0, BC)
    wmask = w < W
    cm = c < C
    ww = w[None, :] + sgn * (q[:, None] - R) * D  # (BQ, BW) source columns
    qw_in = (q[:, None] < P) & wmask[None, :] & (ww >= 0) & (ww < W)
    src_base = src_ptr + b.to(tl.int64) * ssb
    dout_base = dout_ptr + b.to(tl.int64) * sdb
    src_off = c[:, None, None] * ssc + (ww * ssw)[None, :, :]  # (BC, BQ, BW)
    if DF2:
        d_off = q[:, None] * sdp + ww * sdw
    else:
        d_off = q[:, None] * sdp + h * sdh + w[None, :] * sdw
    m3 = cm[:, None, None] & qw_in[None, :, :]
    acc3 = tl.zeros([BC, BQ, BW], dtype=ACC)
    # only the rows p whose source row h + sgn * o(p) lies in [0, H)
    if DF2:
        p_lo = tl.maximum(R - (H - 1 - h) // D, 0)
        p_hi = tl.minimum(R + h // D + 1, P)
    else:
        p_lo = tl.maximum(R - h // D, 0)
        p_hi = tl.minimum(R + (H - 1 - h) // D + 1, P)
    for p in range(p_lo, p_hi):
        hh = h + sgn * (p - R) * D
        if DF2:
            dp = (p * P) * sdp + hh * sdh
        else:
            dp = (p * P) * sdp
        g = tl.load(dout_base + dp + d_off, mask=qw_in, other=0.0).to(ACC)
        s = tl.load(src_base + hh * ssh + src_off, mask=m3, other=0.0).to(ACC)
        acc3 += g[None, :, :] * s
    acc = tl.sum(acc3, axis=1)  # (BC, BW)
    dst_off = (c[:, None] * H + h) * W + w[None, :]
    dst_base = dst_ptr + b.to(tl.int64) * C * H * W
    tl.store(dst_base + dst_off, to_storage(acc, DT), mask=cm[:, None] & wmask[None, :])


# ==================================================================================================
# launch configurations (shared by the launchers and aot_specs, so the AOT compiles what runs)


def _bq(patch: int) -> int:
    bq = max(BQ_CLASSES[0], next_pow2(patch))
    assert bq in BQ_CLASSES
    return bq


def _fwd_meta(dtype, bq):
    elems = 1024 if dtype == torch.float64 else 2048
    return dict(
        BC=max(1, elems // (bq * _BW)),
        BQ=bq,
        BW=_BW,
        ACC=acc_dtype(dtype),
        num_warps=4,
        num_stages=1,
    )


def _bwd_meta(dtype, bq, df2):
    elems = 2048 if dtype == torch.float64 else 4096
    return dict(
        BC=max(1, elems // (bq * _BW)),
        BQ=bq,
        BW=_BW,
        DF2=bool(df2),
        ACC=acc_dtype(dtype),
        num_warps=8,
        num_stages=1,
    )


_CONSTEXPR_KEYS = ("BC", "BQ", "BW", "DF2", "ACC")


def _spec(fn, dtype, meta) -> KernelSpec:
    constexprs = {k: v for k, v in meta.items() if k in _CONSTEXPR_KEYS}
    cfg = "-".join(f"{k}{int(v)}" for k, v in constexprs.items() if k != "ACC")
    cfg += f"-w{meta['num_warps']}-s{meta['num_stages']}"
    return make_spec(
        fn,
        TORCH_TO_SIG[dtype],
        constexprs,
        meta["num_warps"],
        meta["num_stages"],
        dtype=TORCH_TO_SIG[dtype],
        config=cfg,
    )


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    specs = []
    for dtype in _DTYPES:
        for bq in BQ_CLASSES:
            specs.append(_spec(_spatial_correlation_fwd_kernel, dtype, _fwd_meta(dtype, bq)))
            for df2 in (False, True):
                specs.append(_spec(_spatial_correlation_bwd_kernel, dtype, _bwd_meta(dtype, bq, df2)))
    return specs


# ==================================================================================================
# argument checks


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError("spatial_correlation (triton): " + msg)


def _desc(t) -> str:
    return f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__


def _check(f1, f2, patch, dilation):
    _need(
        isinstance(f1, torch.Tensor) and f1.dim() == 4 and f1.dtype in FLOAT_DTYPES,
        f"f1 must be a (B, C, H, W) float32/float64/float16/bfloat16 tensor, got {_desc(f1)}",
    )
    _need(
        isinstance(f2, torch.Tensor)
        and tuple(f2.shape) == tuple(f1.shape)
        and f2.dtype == f1.dtype
        and f2.device == f1.device,
        f"f2 must match f1 ({_desc(f1)}), got {_desc(f2)}",
    )
    patch, dilation = _as_int("patch_size", patch), _as_int("dilation", dilation)
    _need(patch >= 1, f"patch_size must be >= 1, got {patch}")
    _need(dilation >= 1, f"dilation must be >= 1, got {dilation}")
    _need(
        patch <= MAX_PATCH,
        f"patch_size {patch} > {MAX_PATCH} is not supported by the Triton kernels (use another backend)",
    )
    return (*f1.shape, patch, dilation)


def _as_int(name, v) -> int:
    _need(not isinstance(v, (bool, float)), f"{name} must be an int, got {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise ValueError(f"spatial_correlation (triton): {name} must be an int, got {v!r}") from None


def _check_sizes(f1, patch, dilation, *tensors):
    """Kernel arguments and within-sample offsets stay int32 (the AOT signature); the batch offset is int64."""
    B, C, H, W = f1.shape
    reach = (patch // 2 + 1) * dilation  # |o(p)| < reach
    for t in tensors:
        st = t.stride()
        check_i32(*st, sum((n - 1) * s for n, s in zip(t.shape[1:], st[1:])))
        check_i32((H + reach) * st[2], (W + reach) * st[3])
    check_i32(B * H * cdiv(W, _BW), patch * patch * H * W, C * H * W, H + reach, W + reach)


# ==================================================================================================
# launchers


def spatial_correlation_fwd_triton(f1: torch.Tensor, f2: torch.Tensor, patch: int, dilation: int):
    """out[b, p*P+q, h, w] = sum_c f1[b,c,h,w] f2[b,c,h+o(p),w+o(q)], o(p) = (p - P//2) * dilation.

    f1, f2: (B, C, H, W) same float dtype / device, any strides; 1 <= patch <= MAX_PATCH, dilation >= 1.
    Returns (B, patch*patch, H, W), contiguous, f1's dtype; 0 for displacements outside the map.
    """
    B, C, H, W, patch, dilation = _check(f1, f2, patch, dilation)
    out = torch.empty((B, patch * patch, H, W), dtype=f1.dtype, device=f1.device)
    if out.numel() == 0:
        return out
    if C == 0:
        return out.zero_()
    _check_sizes(f1, patch, dilation, f1, f2)
    meta = _fwd_meta(f1.dtype, _bq(patch))
    grid = (B * H * cdiv(W, meta["BW"]), patch)
    launch(
        _spatial_correlation_fwd_kernel,
        grid,
        f1,
        f2,
        out,
        C,
        H,
        W,
        patch,
        dilation,
        *f1.stride(),
        *f2.stride(),
        **meta,
    )
    return out


def spatial_correlation_bwd_triton(
    dout: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, patch: int, dilation: int
):
    """Gradients of ``spatial_correlation_fwd_triton`` (gathers: deterministic, no atomics):

    df1[b,c,h,w] = sum_{p,q inside} dout[b,pq,h,w] f2[b,c,h+o(p),w+o(q)]
    df2[b,c,y,x] = sum_{p,q inside} dout[b,pq,y-o(p),x-o(q)] f1[b,c,y-o(p),x-o(q)]

    dout: (B, patch*patch, H, W) f1's dtype, any strides.  Returns (df1, df2), contiguous, f1's dtype.
    """
    B, C, H, W, patch, dilation = _check(f1, f2, patch, dilation)
    _need(
        isinstance(dout, torch.Tensor)
        and tuple(dout.shape) == (B, patch * patch, H, W)
        and dout.dtype == f1.dtype
        and dout.device == f1.device,
        f"dout must be {(B, patch * patch, H, W)} {f1.dtype} on {f1.device}, got {_desc(dout)}",
    )
    df1 = torch.empty((B, C, H, W), dtype=f1.dtype, device=f1.device)
    df2 = torch.empty((B, C, H, W), dtype=f1.dtype, device=f1.device)
    if df1.numel() == 0:
        return df1, df2
    _check_sizes(f1, patch, dilation, f1, f2, dout)
    bq = _bq(patch)
    for df2_flag, src, dst in ((False, f2, df1), (True, f1, df2)):
        meta = _bwd_meta(f1.dtype, bq, df2_flag)
        ncb = cdiv(C, meta["BC"])
        grid = (B * H * ncb * cdiv(W, meta["BW"]),)
        check_i32(grid[0])
        launch(
            _spatial_correlation_bwd_kernel,
            grid,
            dout,
            src,
            dst,
            C,
            H,
            W,
            patch,
            dilation,
            *dout.stride(),
            *src.stride(),
            **meta,
        )
    return df1, df2


# ==================================================================================================
# AOT launch coverage


def aot_launch_samples() -> None:
    """Call both launchers on small CPU tensors for every dtype and tile class (recorded by
    ``fxkernels.aot`` inside ``record_launches()``, not run)."""
    for dtype in _DTYPES:
        for patch in (1, 5, 9, 21, 64):
            f1 = torch.zeros(2, 3, 5, 7, dtype=dtype)
            f2 = torch.zeros(2, 3, 5, 7, dtype=dtype)
            out = spatial_correlation_fwd_triton(f1, f2, patch, 2)
            spatial_correlation_bwd_triton(out, f1, f2, patch, 2)

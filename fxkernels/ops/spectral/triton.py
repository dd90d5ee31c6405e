"""Triton backend of the spectral temporal filter (math and contract in ./README.md).

Launchers (the backend contract, canonical layout: time axis at position 2):

    spectral_filter_fwd_triton(x, filt, residual) -> y
    spectral_filter_bwd_triton(dy, x, filt, need_dx, need_dfilt) -> (dx or None, dfilt or None)

One program per ``(b, c, block of BP positions of the flattened H*W)`` owns those columns: it loads the
``(TP, BP)`` tile of the column (strided loads, any layout), computes the real DFT as small matrix products
with ``tl.dot`` and writes every output element of its columns once (deterministic, no atomics).

Packed real DFT.  ``TP`` is the tile class of ``T`` (16, 32 or 64) and ``KP = TP / 2`` the number of
frequency *slots*: the real parts of ``k = 0 .. NR-1`` (``NR = ceil(T/2)``) sit in the real slots ``k``, the
imaginary parts of ``k = 1 .. NR-1`` in the imaginary slots ``k``, and for even ``T`` the Nyquist term
``k = T/2`` (real, its imaginary part is 0) in the imaginary slot 0, which the DC term leaves free.  So
``M = T//2 + 1`` frequencies take ``T`` rows in all and the DFT products are ``(KP, TP) x (TP, BP)``: the
``2 T^2`` multiply-adds per column of the README (padding ``M = 33`` to 64 slots for ``T = 64`` would double it).
The host packs four zero-padded ``(KP, TP)`` matrices in the accumulation dtype (cached per
``(T, dtype, device)``, from ``reference.dft_matrices``), so their loads need no masks:

    AR, AI:   analysis        Xr = AR x,   Xi = AI x          (AI[0] = c[T/2 t] for even T, else 0)
    CR, CI:   weighted        CR[k, t] = w_k AR[k, t], CI likewise (w of the slot's frequency)

Every product runs as a K loop over chunks of ``TC = 8`` time steps (only the chunks below the runtime ``T``):
the analysis accumulates ``X += A[:, chunk] x[chunk]`` from strided loads of the chunk, the synthesis writes
``TC`` output rows per step from the ``(KP, BP)`` spectra held in registers.  Small K chunks keep the fp32
"ieee" / half products (FMA ``tl.dot``, which holds a whole K chunk of both operands per thread) free of
register spills; ``num_warps`` is 8 for ``TP = 64`` (4 otherwise), about 8 elements of each ``(KP, BP)``
frequency tile per thread, ``BP = 64``.

* ``_spectral_filter_fwd_kernel``: ``Zr = Fr Xr - Fi' Xi``, ``Zi = Fr' Xi + Fi' Xr`` with ``Fi' = 0`` in slot
  0 (DC real part; the Nyquist slot has no imaginary filter part) and ``Fr' = Fr`` except ``Fr'[0] =
  Fr[T/2]`` (the Nyquist filter, even T); ``y = CR^T Zr + CI^T Zi (+ residual)``.
* ``_spectral_filter_bwd_kernel`` (constexpr ``NEED_DX``, ``NEED_DFILT``): ``Gr = CR dy``, ``Gi = CI dy``
  (``= w * analysis(dy)``); with ``NEED_DFILT`` it recomputes ``X`` and stores the per-column
  ``dFr = Gr Xr + Gi Xi``, ``dFi = Gi Xr - Gr Xi`` (0 at DC and Nyquist, NaN there where ``Xr`` or ``Gr`` is
  not finite, as ``torch.fft``'s complex product; the Nyquist ``dFr`` is the slot-0
  product of the imaginary slots) into the ``(B, C, M, H, W, 2)`` fp32 / fp64 ``dfilt``; with ``NEED_DX``
  ``dXr = Fr Gr + Fi' Gi``, ``dXi = Fr' Gi - Fi' Gr`` and ``dx = AR^T dXr + AI^T dXi``.

``T <= MAX_T = 64`` (larger raises ``ValueError``; the public op falls back to ``torch.fft`` for "auto").
Accumulation is fp32 for fp32/fp16/bf16 and fp64 for fp64, one rounding at the store (bf16 rounds to nearest
even by bit arithmetic, exact under ``TRITON_INTERPRET`` too); fp32 ``tl.dot`` uses ``"ieee"`` unless
PyTorch's fp32 matmul TF32 switch is on (then ``"tf32"``), half inputs are widened to fp32 before the
(``"ieee"``) products.  Every runtime argument is unspecialised (``fxkernels._triton_utils.kernel``) and the
launch configurations come from the same functions as ``aot_specs()``, so the AOT-compiled binaries are
exactly what runs.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from fxkernels._triton_utils import (
    DTYPE_VARIANTS,
    FLOAT_DTYPES,
    TORCH_TO_SIG,
    KernelSpec,
    acc_dtype,
    acc_torch_dtype,
    cdiv,
    check_i32,
    dot_precision,
    kernel,
    launch,
    make_spec,
    next_pow2,
    to_storage,
    variant_name,
)

from .reference import dft_matrices

TP_CLASSES = (16, 32, 64)
MAX_T = TP_CLASSES[-1]


# ==================================================================================================
# kernels


@triton.jit
def _columns(HW, W, C, BP: tl.constexpr):
    """The program's BP columns: (b, c, b * C + c, positions p, p < HW, their h, w)."""
    npb = tl.cdiv(HW, BP)
    pid = tl.program_id(0)  # (b * C + c) * npb + pb
    pb = pid % npb
    bc = pid // npb
    c = bc % C
    b = bc // C
    p = pb * BP + tl.arange(0, BP)
    return b, c, bc, p, p < HW, p // W, p % W


@triton.jit
def _load_filter(f_ptr, b, c, h, w, pm, kk, T, NR, sfb, sfc, sfm, sfh, sfw, sfz, ACC: tl.constexpr):
    """The filter of the columns in the packed slots, (KP, BP) each: Fr, Fi (0 in slot 0: DC has no imaginary
    part and slot 0 of the imaginary rows holds the Nyquist term) and Fr' (Fr with the Nyquist filter in slot 0)."""
    f_base = f_ptr + b.to(tl.int64) * sfb + c.to(tl.int64) * sfc
    f_pos = (h * sfh + w * sfw)[None, :]
    fm = (kk < NR) & pm[None, :]
    fr = tl.load(f_base + kk * sfm + f_pos, mask=fm, other=0.0).to(ACC)
    fi = tl.load(f_base + kk * sfm + sfz + f_pos, mask=fm & (kk > 0), other=0.0).to(ACC)
    frn = tl.load(f_base + (T // 2) * sfm + f_pos, mask=pm[None, :] & (T % 2 == 0), other=0.0).to(ACC)
    return fr, fi, tl.where(kk == 0, frn, fr)


@kernel
def _spectral_filter_fwd_kernel(
    x_ptr,
    f_ptr,
    r_ptr,
    y_ptr,
    m_ptr,
    C,
    T,
    HW,
    W,
    has_res,
    sxb,
    sxc,
    sxt,
    sxh,
    sxw,
    sfb,
    sfc,
    sfm,
    sfh,
    sfw,
    sfz,
    srb,
    src,
    srt,
    srh,
    srw,
    TP: tl.constexpr,
    KP: tl.constexpr,
    TC: tl.constexpr,
    BP: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """y[b, c, :, p] = irfft(rfft(x[b, c, :, p]) * F[b, c, :, p]) (+ residual) for BP positions p."""
    DT = y_ptr.dtype.element_ty
    b, c, bc, p, pm, h, w = _columns(HW, W, C, BP)
    tc = tl.arange(0, TC)
    k = tl.arange(0, KP)
    kk = k[:, None]
    NR = (T + 1) // 2  # real slots in use
    # analysis X = [AR; AI] x over chunks of TC time steps (the K loop of the products)
    x_base = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
    x_pos = (h * sxh + w * sxw)[None, :]
    xr = tl.zeros([KP, BP], dtype=ACC)
    xi = tl.zeros([KP, BP], dtype=ACC)
    for t0 in range(0, T, TC):
        t = t0 + tc
        xt = tl.load(x_base + t[:, None] * sxt + x_pos, mask=(t < T)[:, None] & pm[None, :], other=0.0)
        xt = xt.to(ACC)
        mk = kk * TP + t[None, :]
        xr = tl.dot(tl.load(m_ptr + mk), xt, xr, input_precision=PREC, out_dtype=ACC)
        xi = tl.dot(tl.load(m_ptr + KP * TP + mk), xt, xi, input_precision=PREC, out_dtype=ACC)
    # filter (KP, BP) through its strides; slot 0 of the imaginary parts is the Nyquist term
    fr, fi, fr2 = _load_filter(f_ptr, b, c, h, w, pm, kk, T, NR, sfb, sfc, sfm, sfh, sfw, sfz, ACC)
    zr = fr * xr - fi * xi
    zi = fr2 * xi + fi * xr
    # synthesis y = CR^T Zr + CI^T Zi (+ residual), TC output rows at a time
    r_base = r_ptr + b.to(tl.int64) * srb + c.to(tl.int64) * src
    r_pos = (h * srh + w * srw)[None, :]
    y_base = y_ptr + bc.to(tl.int64) * T * HW
    for t0 in range(0, T, TC):
        t = t0 + tc
        om = (t < T)[:, None] & pm[None, :]
        mt = t[:, None] + k[None, :] * TP
        y = tl.dot(tl.load(m_ptr + 2 * KP * TP + mt), zr, input_precision=PREC, out_dtype=ACC)
        y = tl.dot(tl.load(m_ptr + 3 * KP * TP + mt), zi, y, input_precision=PREC, out_dtype=ACC)
        res = tl.load(r_base + t[:, None] * srt + r_pos, mask=om & (has_res != 0), other=0.0)
        y += res.to(ACC)
        tl.store(y_base + t[:, None] * HW + p[None, :], to_storage(y, DT), mask=om)


@kernel
def _spectral_filter_bwd_kernel(
    dy_ptr,
    x_ptr,
    f_ptr,
    dx_ptr,
    df_ptr,
    m_ptr,
    C,
    T,
    HW,
    W,
    sdb,
    sdc,
    sdt,
    sdh,
    sdw,
    sxb,
    sxc,
    sxt,
    sxh,
    sxw,
    sfb,
    sfc,
    sfm,
    sfh,
    sfw,
    sfz,
    sgb,
    sgc,
    sgm,
    sgh,
    sgw,
    sgz,
    TP: tl.constexpr,
    KP: tl.constexpr,
    TC: tl.constexpr,
    BP: tl.constexpr,
    NEED_DX: tl.constexpr,
    NEED_DFILT: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """dx (NEED_DX) and the per-column dfilt (NEED_DFILT) of BP columns (see the module docstring)."""
    DT = dx_ptr.dtype.element_ty
    b, c, bc, p, pm, h, w = _columns(HW, W, C, BP)
    tc = tl.arange(0, TC)
    k = tl.arange(0, KP)
    kk = k[:, None]
    NR = (T + 1) // 2
    # G = w * analysis(dy) (packed like X) and, for dfilt, X = analysis(x): one K loop over time chunks
    dy_base = dy_ptr + b.to(tl.int64) * sdb + c.to(tl.int64) * sdc
    dy_pos = (h * sdh + w * sdw)[None, :]
    x_base = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
    x_pos = (h * sxh + w * sxw)[None, :]
    gr = tl.zeros([KP, BP], dtype=ACC)
    gi = tl.zeros([KP, BP], dtype=ACC)
    xr = tl.zeros([KP, BP], dtype=ACC)
    xi = tl.zeros([KP, BP], dtype=ACC)
    for t0 in range(0, T, TC):
        t = t0 + tc
        om = (t < T)[:, None] & pm[None, :]
        mk = kk * TP + t[None, :]
        g = tl.load(dy_base + t[:, None] * sdt + dy_pos, mask=om, other=0.0).to(ACC)
        gr = tl.dot(tl.load(m_ptr + 2 * KP * TP + mk), g, gr, input_precision=PREC, out_dtype=ACC)
        gi = tl.dot(tl.load(m_ptr + 3 * KP * TP + mk), g, gi, input_precision=PREC, out_dtype=ACC)
        if NEED_DFILT:
            xt = tl.load(x_base + t[:, None] * sxt + x_pos, mask=om, other=0.0).to(ACC)
            xr = tl.dot(tl.load(m_ptr + mk), xt, xr, input_precision=PREC, out_dtype=ACC)
            xi = tl.dot(tl.load(m_ptr + KP * TP + mk), xt, xi, input_precision=PREC, out_dtype=ACC)
    if NEED_DFILT:
        ii = gi * xi
        dfr = gr * xr + tl.where(kk == 0, 0.0, ii)
        # dFi = Gi Xr - Gr Xi at DC / Nyquist, where Gi = Xi = 0: NaN iff Xr or Gr is not finite (0 * inf), as
        # the reference's complex product; (Xr + Gr) * 0 has that class
        dfi = tl.where(kk == 0, (xr + gr) * 0.0, gi * xr - gr * xi)
        dfn = tl.sum(tl.where(kk == 0, ii, 0.0), axis=0)  # Nyquist dFr (even T): slot 0 of the imag. parts
        dfn_i = tl.sum(tl.where(kk == 0, (xi + gi) * 0.0, 0.0), axis=0)  # Nyquist dFi, as dFi at DC
        # dfilt through its strides (filt's layout when filt is dense, see the launcher)
        df_base = df_ptr + b.to(tl.int64) * sgb + c.to(tl.int64) * sgc
        g_pos = h * sgh + w * sgw
        d_off = kk * sgm + g_pos[None, :]
        dm = (kk < NR) & pm[None, :]
        tl.store(df_base + d_off, dfr, mask=dm)
        tl.store(df_base + d_off + sgz, dfi, mask=dm)
        n_off = (T // 2) * sgm + g_pos
        nm = pm & (T % 2 == 0)
        tl.store(df_base + n_off, dfn, mask=nm)
        tl.store(df_base + n_off + sgz, dfn_i, mask=nm)
    if NEED_DX:
        fr, fi, fr2 = _load_filter(f_ptr, b, c, h, w, pm, kk, T, NR, sfb, sfc, sfm, sfh, sfw, sfz, ACC)
        dxr = fr * gr + fi * gi
        dxi = fr2 * gi - fi * gr
        dx_base = dx_ptr + bc.to(tl.int64) * T * HW
        for t0 in range(0, T, TC):
            t = t0 + tc
            om = (t < T)[:, None] & pm[None, :]
            mt = t[:, None] + k[None, :] * TP
            dx = tl.dot(tl.load(m_ptr + mt), dxr, input_precision=PREC, out_dtype=ACC)
            dx = tl.dot(tl.load(m_ptr + KP * TP + mt), dxi, dx, input_precision=PREC, out_dtype=ACC)
            tl.store(dx_base + t[:, None] * HW + p[None, :], to_storage(dx, DT), mask=om)


# ==================================================================================================
# launch configurations (shared by the launchers and aot_specs, so the AOT compiles what runs)


def _tp(T: int) -> int:
    """Tile class of the time axis (16, 32 or 64): TP >= T, KP = TP / 2 frequency slots."""
    tp = max(TP_CLASSES[0], next_pow2(T))
    assert tp in TP_CLASSES, T
    return tp


def _base_meta(dtype, prec, tp):
    """TC = 8 time steps per K chunk of the products (the minimum fp32 tl.dot K; the FMA products of
    fp32 "ieee" / fp16 / bf16 hold a whole K chunk of both operands in registers), and num_warps such that
    each thread holds 8 elements of a (KP, BP) frequency tile for TP >= 32."""
    return dict(
        TP=tp,
        KP=tp // 2,
        TC=8,
        BP=64,
        ACC=acc_dtype(dtype),
        PREC=prec,
        num_warps=8 if tp == 64 else 4,
        num_stages=1,
    )


def _fwd_meta(dtype, prec, tp):
    return _base_meta(dtype, prec, tp)


def _bwd_meta(dtype, prec, tp, need_dx, need_dfilt):
    return dict(_base_meta(dtype, prec, tp), NEED_DX=bool(need_dx), NEED_DFILT=bool(need_dfilt))


_CONSTEXPR_KEYS = ("TP", "KP", "TC", "BP", "NEED_DX", "NEED_DFILT", "ACC", "PREC")
_BWD_FLAGS = ((True, True), (True, False), (False, True))


def _spec(fn, dtype, prec, meta, acc_ptrs) -> KernelSpec:
    constexprs = {k: v for k, v in meta.items() if k in _CONSTEXPR_KEYS}
    cfg = "-".join(f"{k}{int(v)}" for k, v in constexprs.items() if k not in ("ACC", "PREC"))
    cfg += f"-w{meta['num_warps']}-s{meta['num_stages']}"
    acc_sig = TORCH_TO_SIG[acc_torch_dtype(dtype)]
    return make_spec(
        fn,
        TORCH_TO_SIG[dtype],
        constexprs,
        meta["num_warps"],
        meta["num_stages"],
        dtype=variant_name(dtype, prec),
        config=cfg,
        ptr_overrides={name: acc_sig for name in acc_ptrs},
    )


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    specs = []
    for dtype, prec in DTYPE_VARIANTS:
        for tp in TP_CLASSES:
            specs.append(
                _spec(_spectral_filter_fwd_kernel, dtype, prec, _fwd_meta(dtype, prec, tp), ("m_ptr",))
            )
            for need_dx, need_dfilt in _BWD_FLAGS:
                meta = _bwd_meta(dtype, prec, tp, need_dx, need_dfilt)
                specs.append(_spec(_spectral_filter_bwd_kernel, dtype, prec, meta, ("m_ptr", "df_ptr")))
    return specs


# ==================================================================================================
# packed DFT matrices


@functools.lru_cache(maxsize=64)
def _packed_dft(T: int, tp: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(4, KP, TP) = [AR, AI, CR, CI] of the module docstring, zero-padded, in `dtype` on `device`."""
    kp = tp // 2
    ca, sa, cs, ss = dft_matrices(T, torch.float64, "cpu")  # (M, T), (M, T), (T, M), (T, M)
    nr = (T + 1) // 2
    m = torch.zeros(4, kp, tp, dtype=torch.float64)
    m[0, :nr, :T] = ca[:nr]
    m[1, 1:nr, :T] = sa[1:nr]
    m[2, :nr, :T] = cs.t()[:nr]
    m[3, 1:nr, :T] = ss.t()[1:nr]
    if T % 2 == 0:  # Nyquist (real) in the free imaginary slot 0
        m[1, 0, :T] = ca[T // 2]
        m[3, 0, :T] = cs[:, T // 2]
    return m.to(dtype=dtype, device=device).contiguous()


# ==================================================================================================
# argument checks


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError("spectral_filter (triton): " + msg)


def _desc(t) -> str:
    return f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__


def _check_x(x) -> None:
    _need(
        isinstance(x, torch.Tensor) and x.dim() == 5 and x.dtype in FLOAT_DTYPES,
        f"x must be a (B, C, T, H, W) float32/float64/float16/bfloat16 tensor, got {_desc(x)}",
    )
    T = x.shape[2]
    _need(T >= 1, f"the time axis T (axis 2) of x must have length >= 1, got shape {tuple(x.shape)}")
    _need(T <= MAX_T, f"T = {T} > {MAX_T} is not supported by the Triton kernels (use another backend)")


def _check_like(name, t, x, shape) -> None:
    _need(
        isinstance(t, torch.Tensor)
        and tuple(t.shape) == tuple(shape)
        and t.dtype == x.dtype
        and t.device == x.device,
        f"{name} must be {tuple(shape)} {x.dtype} on {x.device}, got {_desc(t)}",
    )


def _filt_shape(x):
    B, C, T, H, W = x.shape
    return (B, C, T // 2 + 1, H, W, 2)


def _check_sizes(x, bp, *tensors) -> tuple[int]:
    """Kernel arguments and within-(b, c) offsets stay int32 (the AOT signature); (b, c) offsets are int64.
    Returns the grid."""
    B, C, T, H, W = x.shape
    for t in tensors:
        st = t.stride()
        check_i32(*st, sum((n - 1) * s for n, s in zip(t.shape[2:], st[2:])))
    grid = (B * C * cdiv(H * W, bp),)
    check_i32(grid[0], 2 * (T // 2 + 1) * H * W, T * H * W)
    return grid


def _dft_for(x):
    T = x.shape[2]
    tp = _tp(T)
    return tp, _packed_dft(T, tp, acc_torch_dtype(x.dtype), x.device)


# ==================================================================================================
# launchers


def spectral_filter_fwd_triton(x: torch.Tensor, filt: torch.Tensor, residual: torch.Tensor | None):
    """y = irfft(rfft(x) * complex(filt), n=T) (+ residual) along axis 2 (README.md "Backend contract").

    x: (B, C, T, H, W), 1 <= T <= MAX_T, any strides; filt: (B, C, T//2+1, H, W, 2) x's dtype / device, any
    strides (0 on expanded axes); residual: None or x's shape / dtype.  Returns y contiguous in x's dtype.
    """
    _check_x(x)
    _check_like("filt", filt, x, _filt_shape(x))
    if residual is not None:
        _check_like("residual", residual, x, x.shape)
    B, C, T, H, W = x.shape
    y = torch.empty((B, C, T, H, W), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    res = residual if residual is not None else x
    tp, mats = _dft_for(x)
    meta = _fwd_meta(x.dtype, dot_precision(x.dtype), tp)
    grid = _check_sizes(x, meta["BP"], x, filt, res)
    launch(
        _spectral_filter_fwd_kernel,
        grid,
        x,
        filt,
        res,
        y,
        mats,
        C,
        T,
        H * W,
        W,
        int(residual is not None),
        *x.stride(),
        *filt.stride(),
        *res.stride(),
        **meta,
    )
    return y


def spectral_filter_bwd_triton(
    dy: torch.Tensor, x: torch.Tensor, filt: torch.Tensor, need_dx: bool, need_dfilt: bool
):
    """Gradients of ``spectral_filter_fwd_triton`` (README.md "Backend contract").

    Returns (dx, dfilt): dx (B, C, T, H, W) contiguous in x's dtype or None (not need_dx); dfilt the per-column
    gradient (B, C, T//2+1, H, W, 2), contiguous in fp32 (fp64 for fp64), not summed over broadcast axes, or
    None (not need_dfilt).
    """
    _check_x(x)
    _check_like("dy", dy, x, x.shape)
    fshape = _filt_shape(x)
    _check_like("filt", filt, x, fshape)
    need_dx, need_dfilt = bool(need_dx), bool(need_dfilt)
    adt = acc_torch_dtype(x.dtype)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_dx else None
    # filt's layout when filt is dense (autograd then keeps it as filt.grad without a copy), else contiguous
    dfilt = torch.empty_like(filt, dtype=adt) if need_dfilt else None
    if not (need_dx or need_dfilt) or x.numel() == 0:
        return dx, dfilt
    B, C, T, H, W = x.shape
    tp, mats = _dft_for(x)
    meta = _bwd_meta(x.dtype, dot_precision(x.dtype), tp, need_dx, need_dfilt)
    grid = _check_sizes(x, meta["BP"], dy, x, filt, *([dfilt] if need_dfilt else []))
    launch(
        _spectral_filter_bwd_kernel,
        grid,
        dy,
        x,
        filt,
        dx if need_dx else dy,  # an unused pointer of x's dtype
        dfilt if need_dfilt else mats,  # an unused pointer of the accumulation dtype
        mats,
        C,
        T,
        H * W,
        W,
        *dy.stride(),
        *x.stride(),
        *filt.stride(),
        *(dfilt.stride() if need_dfilt else filt.stride()),
        **meta,
    )
    return dx, dfilt


# ==================================================================================================
# AOT launch coverage


def aot_launch_samples() -> None:
    """Call both launchers on small CPU tensors for every dtype variant, tile class and backward flag pair.
    ``fxkernels.aot`` runs this inside ``record_launches()`` (nothing executes) and checks that every
    recorded launch is one of ``aot_specs()``."""
    m = torch.backends.cuda.matmul
    has_new = isinstance(getattr(m, "fp32_precision", None), str)
    saved = m.fp32_precision if has_new else m.allow_tf32
    try:
        for dtype, prec in DTYPE_VARIANTS:
            if has_new:
                m.fp32_precision = "tf32" if prec == "tf32" else "ieee"
            else:  # pragma: no cover - older torch
                m.allow_tf32 = prec == "tf32"
            for T in (1, 7, 16, 17, 30, 33, 64):
                x = torch.zeros(2, 3, T, 3, 5, dtype=dtype)
                filt = torch.zeros(1, 3, T // 2 + 1, 1, 1, 2, dtype=dtype).expand(2, 3, T // 2 + 1, 3, 5, 2)
                spectral_filter_fwd_triton(x, filt, None)
                spectral_filter_fwd_triton(x, filt, x)
                for need_dx, need_dfilt in _BWD_FLAGS:
                    spectral_filter_bwd_triton(x, x, filt, need_dx, need_dfilt)
    finally:
        if has_new:
            m.fp32_precision = saved
        else:  # pragma: no cover
            m.allow_tf32 = saved

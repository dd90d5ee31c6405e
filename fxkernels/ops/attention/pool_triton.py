"""Triton backend of `attention_pool` (README.md, "attention_pool"): MViT's depthwise Conv3d pooling of the token
grid, the cls row passed through, and the LayerNorm over hd, reading x in its (B, nh, L, hd) token layout.

Launchers (the kit op's backend contract):

    attention_pool_fwd_triton(x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps) -> (y, stats)
    attention_pool_bwd_triton(dy, x, weight, norm_weight, norm_bias, stats, stride, thw, has_cls, eps)
        -> (dx, dw, dnw or None, dnb or None)

Kernels (one 1-D grid each, a program per (b, h, ``BLOCK_P`` token rows) with all hd channels, ``BLOCK_D`` the
next power of two of hd):

* ``_attention_pool_fwd_kernel``: ``z[o] = sum_taps w[:, tap] x[n(o, tap)]`` over the ``kt*kh*kw`` taps (zero
  padding ``k//2``: the out-of-grid taps are masked), ``z = x`` for the cls row, then (NORM) the LayerNorm in
  registers, ``y = (z - mean) rstd nw + nb``; stores y and (NORM) ``stats = (mean, rstd)``.
* ``_attention_pool_bwd_out_kernel`` (per output rows): with NORM recomputes z and
  ``dz = rstd (g - mean(g) - xhat mean(g xhat))``, ``g = dy nw``, ``xhat = (z - mean) rstd``, stores dz (fp32 /
  fp64 scratch) and the program's partial sums of ``dnw = sum dy xhat`` and ``dnb = sum dy``. Without NORM
  (``dz = dy``, or a second launch on the stored dz) the partial ``dw[tap] = sum_o dz[o] x[n(o, tap)]`` of its
  rows: two launches with a norm because one program doing both spills registers.
* ``_attention_pool_bwd_in_kernel`` (per input rows): ``dx[n] = sum_taps w[:, tap] dz[o(n, tap)]`` through
  the inverse index map (``o = (n + pad - tap) / stride`` on each axis where that divides and lands in the
  output grid), ``dx = dz`` for the cls row: a gather, no atomics.

The per-program partials of dw / dnw / dnb are summed by torch in a fixed order: deterministic. Accumulation in
fp32 (fp64 for fp64), one rounding at the store. Runtime kernel sizes, strides and grids (one compiled variant per
dtype, ``BLOCK_D`` and NORM, tiles from ``POOL_TILES``, listed by ``pool_specs``); x and dy take any strides on
their first 3 axes.
"""

from __future__ import annotations

import math

import torch

from fxkernels._triton_utils import (
    TORCH_TO_SIG,
    acc_dtype,
    acc_torch_dtype,
    cdiv,
    check_i32,
    launch,
    make_spec,
)

from .pool_triton_kernels import (
    _attention_pool_bwd_in_kernel,
    _attention_pool_bwd_out_kernel,
    _attention_pool_fwd_kernel,
)
from .triton_common import FLOAT_DTYPES, desc, last_contiguous, split_scale

POOL_BD_CLASSES = (32, 64, 128, 256)
POOL_MAX_HD = POOL_BD_CLASSES[-1]


# ==================================================================================================
# launch configurations (shared with pool_specs)


# (kernel kind, dtype class, BLOCK_D, NORM) -> (BLOCK_P, num_warps): the largest tiles that compile with 0
# spills on sm_80 and sm_90 (tools/tune_attention_blocks.py --pool; checked by python -m fxkernels.aot)
POOL_TILES = {
    ("fwd", "f32", 32, False): (64, 4),
    ("fwd", "f32", 32, True): (64, 4),
    ("fwd", "f32", 64, False): (32, 4),
    ("fwd", "f32", 64, True): (32, 4),
    ("fwd", "f32", 128, False): (16, 4),
    ("fwd", "f32", 128, True): (16, 4),
    ("fwd", "f32", 256, False): (8, 4),
    ("fwd", "f32", 256, True): (8, 4),
    ("fwd", "f64", 32, False): (64, 4),
    ("fwd", "f64", 32, True): (64, 4),
    ("fwd", "f64", 64, False): (32, 4),
    ("fwd", "f64", 64, True): (32, 4),
    ("fwd", "f64", 128, False): (16, 4),
    ("fwd", "f64", 128, True): (16, 4),
    ("fwd", "f64", 256, False): (8, 4),
    ("fwd", "f64", 256, True): (8, 4),
    ("fwd", "half", 32, False): (64, 4),
    ("fwd", "half", 32, True): (64, 4),
    ("fwd", "half", 64, False): (32, 4),
    ("fwd", "half", 64, True): (32, 4),
    ("fwd", "half", 128, False): (16, 4),
    ("fwd", "half", 128, True): (16, 4),
    ("fwd", "half", 256, False): (4, 4),
    ("fwd", "half", 256, True): (2, 4),
    ("in", "f32", 32, None): (64, 4),
    ("in", "f32", 64, None): (32, 4),
    ("in", "f32", 128, None): (8, 4),
    ("in", "f32", 256, None): (2, 4),
    ("in", "f64", 32, None): (64, 4),
    ("in", "f64", 64, None): (32, 4),
    ("in", "f64", 128, None): (16, 4),
    ("in", "f64", 256, None): (8, 4),
    ("in", "half", 32, None): (64, 4),
    ("in", "half", 64, None): (32, 4),
    ("in", "half", 128, None): (8, 4),
    ("in", "half", 256, None): (2, 4),
    ("out", "f32", 32, False): (128, 4),
    ("out", "f32", 32, True): (16, 4),
    ("out", "f32", 64, False): (64, 4),
    ("out", "f32", 64, True): (8, 4),
    ("out", "f32", 128, False): (32, 4),
    ("out", "f32", 128, True): (4, 4),
    ("out", "f32", 256, False): (16, 4),
    ("out", "f32", 256, True): (2, 4),
    ("out", "f64", 32, False): (64, 4),
    ("out", "f64", 32, True): (64, 4),
    ("out", "f64", 64, False): (32, 4),
    ("out", "f64", 64, True): (32, 4),
    ("out", "f64", 128, False): (16, 4),
    ("out", "f64", 128, True): (16, 4),
    ("out", "f64", 256, False): (8, 4),
    ("out", "f64", 256, True): (4, 4),
    ("out", "half", 32, False): (128, 4),
    ("out", "half", 32, True): (16, 4),
    ("out", "half", 64, False): (64, 4),
    ("out", "half", 64, True): (8, 4),
    ("out", "half", 128, False): (32, 4),
    ("out", "half", 128, True): (4, 4),
    ("out", "half", 256, False): (16, 4),
    ("out", "half", 256, True): (2, 4),
}


def pool_dtype_class(dtype: torch.dtype) -> str:
    return {torch.float64: "f64", torch.float32: "f32"}.get(dtype, "half")


def _meta(kind: str, dtype: torch.dtype, hd: int, norm: bool | None = None) -> dict:
    """BLOCK_P rows x BLOCK_D channels of kernel `kind` ("fwd", "out": bwd_out, "in": bwd_in), POOL_TILES."""
    bd = max(POOL_BD_CLASSES[0], 1 << (hd - 1).bit_length())
    bp, warps = POOL_TILES[(kind, pool_dtype_class(dtype), bd, None if norm is None else bool(norm))]
    m = dict(BLOCK_P=bp, BLOCK_D=bd, ACC=acc_dtype(dtype), num_warps=warps, num_stages=1)
    if norm is not None:
        m["NORM"] = bool(norm)
    return m


_CONSTEXPR_KEYS = ("BLOCK_P", "BLOCK_D", "NORM", "ACC")
_FLOAT_ARGS = ("eps_hi", "eps_lo")


def _spec(fn, dtype, m, acc_ptrs=(), ptr_dtypes=None):
    constexprs = {k: v for k, v in m.items() if k in _CONSTEXPR_KEYS}
    cfg = f"BP{m['BLOCK_P']}-BD{m['BLOCK_D']}" + (f"-norm{int(m['NORM'])}" if "NORM" in m else "")
    cfg += "".join(f"-{k.removesuffix('_ptr')}:{v}" for k, v in (ptr_dtypes or {}).items())
    acc_sig = TORCH_TO_SIG[acc_torch_dtype(dtype)]
    s = make_spec(
        fn,
        TORCH_TO_SIG[dtype],
        constexprs,
        m["num_warps"],
        m["num_stages"],
        dtype=TORCH_TO_SIG[dtype],
        config=cfg + f"-w{m['num_warps']}",
        ptr_overrides={**{name: acc_sig for name in acc_ptrs}, **(ptr_dtypes or {})},
    )
    for name in _FLOAT_ARGS:
        if name in s.signature:
            s.signature[name] = "fp32"
    return s


def pool_specs() -> list:
    """Every compiled variant of the pool launchers (no tl.dot: one per dtype, BLOCK_D and NORM)."""
    specs = []
    for dtype in FLOAT_DTYPES:
        for bd in POOL_BD_CLASSES:
            for norm in (False, True):
                m = _meta("fwd", dtype, bd, norm)
                specs.append(_spec(_attention_pool_fwd_kernel, dtype, m, ("stats_ptr",)))
            acc = ("stats_ptr", "dz_ptr", "dwp_ptr", "dnwp_ptr", "dnbp_ptr")
            specs.append(_spec(_attention_pool_bwd_out_kernel, dtype, _meta("out", dtype, bd, True), acc))
            # dz: the fp32 / fp64 scratch after a norm, else dy itself (one variant for fp32 / fp64)
            dz_ptrs = {TORCH_TO_SIG[dtype], TORCH_TO_SIG[acc_torch_dtype(dtype)]}
            for sig in sorted(dz_ptrs):  # the tap pass: dy or the stored dz
                m = _meta("out", dtype, bd, False)
                specs.append(_spec(_attention_pool_bwd_out_kernel, dtype, m, acc, ptr_dtypes={"dy_ptr": sig}))
            for sig in sorted(dz_ptrs):
                m = _meta("in", dtype, bd)
                specs.append(_spec(_attention_pool_bwd_in_kernel, dtype, m, ptr_dtypes={"dz_ptr": sig}))
    return specs


# ==================================================================================================
# argument checks


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError("attention_pool (triton): " + msg)


def _geometry(x, weight, norm_weight, norm_bias, stride, thw, has_cls):
    """Checks; returns (c, (T, H, W), (To, Ho, Wo), (kt, kh, kw), (st, sh, sw), (pt, ph, pw))."""
    _need(
        isinstance(x, torch.Tensor) and x.dim() == 4 and x.dtype in FLOAT_DTYPES,
        f"x must be a (B, nh, L, hd) float32/float64/float16/bfloat16 tensor, got {desc(x)}",
    )
    B, nh, L, hd = x.shape
    _need(1 <= hd <= POOL_MAX_HD, f"head width hd must be in [1, {POOL_MAX_HD}], got {hd}")
    _need(
        isinstance(weight, torch.Tensor)
        and weight.dim() == 5
        and weight.shape[:2] == (hd, 1)
        and min(weight.shape[2:]) >= 1
        and weight.dtype == x.dtype
        and weight.device == x.device,
        f"weight must be (hd={hd}, 1, kt, kh, kw) {x.dtype} on {x.device}, got {desc(weight)}",
    )
    _need((norm_weight is None) == (norm_bias is None), "norm_weight and norm_bias go together")
    for name, t in (("norm_weight", norm_weight), ("norm_bias", norm_bias)):
        if t is not None:
            _need(
                isinstance(t, torch.Tensor)
                and t.shape == (hd,)
                and t.dtype == x.dtype
                and t.device == x.device,
                f"{name} must be ({hd},) {x.dtype} on {x.device}, got {desc(t)}",
            )
    _need(len(stride) == 3 and min(stride) >= 1, f"stride must be 3 positive ints, got {stride!r}")
    _need(len(thw) == 3 and min(thw) >= 1, f"thw must be 3 positive ints, got {thw!r}")
    c = int(bool(has_cls))
    _need(c + math.prod(thw) == L, f"thw = {tuple(thw)} does not multiply out to x's {L} tokens (c = {c})")
    ks = tuple(int(s) for s in weight.shape[2:])
    pad = tuple(k // 2 for k in ks)
    out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(thw, ks, stride, pad))
    _need(
        min(out) >= 1, f"kernel {ks} with stride {tuple(stride)} leaves an empty grid for thw = {tuple(thw)}"
    )
    return c, tuple(int(n) for n in thw), out, ks, tuple(int(s) for s in stride), pad


def _geom_args(c, thw, out, ks, stride, pad):
    T, H, W = thw
    _, Ho, Wo = out
    kt, kh, kw = ks
    return (c, T, H, W, Ho, Wo, kt, kh, kw, *stride, *pad)


# ==================================================================================================
# launchers


def attention_pool_fwd_triton(x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps):
    """(y, stats) of README.md "attention_pool": y (B, nh, Lo, hd) contiguous in x's dtype, stats (B, nh, Lo, 2)
    = (mean, rstd) of each pooled row in the accumulation dtype with a norm, else an empty tensor.

    x: (B, nh, c + T*H*W, hd), any strides on the first 3 axes; weight: (hd, 1, kt, kh, kw); norm_weight,
    norm_bias: (hd,) or both None; stride, thw: 3 ints each; eps: the LayerNorm epsilon.
    """
    c, thw, out, ks, stride, pad = _geometry(x, weight, norm_weight, norm_bias, stride, thw, has_cls)
    B, nh, L, hd = x.shape
    Lo = c + math.prod(out)
    norm = norm_weight is not None
    adt = acc_torch_dtype(x.dtype)
    y = torch.empty((B, nh, Lo, hd), dtype=x.dtype, device=x.device)
    stats = torch.empty((B, nh, Lo, 2) if norm else (0,), dtype=adt, device=x.device)
    if y.numel() == 0:
        return y, stats
    x = last_contiguous(x)
    check_i32(*x.stride(), (L - 1) * x.stride(2) + hd, B * nh * Lo)
    w = weight.contiguous()
    m = _meta("fwd", x.dtype, hd, norm)
    grid = (B * nh * cdiv(Lo, m["BLOCK_P"]),)
    nw, nb = (norm_weight, norm_bias) if norm else (w, w)
    hi, lo = split_scale(float(eps))
    launch(
        _attention_pool_fwd_kernel,
        grid,
        x,
        w,
        nw,
        nb,
        y,
        stats if norm else torch.empty(1, dtype=adt, device=x.device),
        nh,
        Lo,
        hd,
        *_geom_args(c, thw, out, ks, stride, pad),
        hi,
        lo,
        *x.stride()[:3],
        **m,
    )
    return y, stats


def attention_pool_bwd_triton(dy, x, weight, norm_weight, norm_bias, stats, stride, thw, has_cls, eps):
    """(dx, dw, dnw, dnb) of the forward: dx contiguous in x's dtype, dw weight's shape and dtype, dnw / dnb (hd,)
    (None without a norm). dy: (B, nh, Lo, hd), any strides on the first 3 axes; stats: the forward's."""
    c, thw, out, ks, stride, pad = _geometry(x, weight, norm_weight, norm_bias, stride, thw, has_cls)
    B, nh, L, hd = x.shape
    Lo = c + math.prod(out)
    norm = norm_weight is not None
    adt = acc_torch_dtype(x.dtype)
    _need(
        isinstance(dy, torch.Tensor)
        and dy.shape == (B, nh, Lo, hd)
        and dy.dtype == x.dtype
        and dy.device == x.device,
        f"dy must be ({B}, {nh}, {Lo}, {hd}) {x.dtype} on {x.device}, got {desc(dy)}",
    )
    if norm:
        _need(
            isinstance(stats, torch.Tensor) and stats.shape == (B, nh, Lo, 2) and stats.dtype == adt,
            f"stats must be ({B}, {nh}, {Lo}, 2) {adt}, got {desc(stats)}",
        )
    K = math.prod(ks)
    dx = torch.empty((B, nh, L, hd), dtype=x.dtype, device=x.device)
    if dx.numel() == 0:
        zeros = torch.zeros(hd, dtype=x.dtype, device=x.device)
        return dx, torch.zeros_like(weight), (zeros if norm else None), (zeros.clone() if norm else None)
    x, dy = last_contiguous(x), last_contiguous(dy)
    check_i32(*x.stride(), *dy.stride(), (L - 1) * x.stride(2) + hd, (Lo - 1) * dy.stride(2) + hd, B * nh * L)
    w = weight.contiguous()
    stats = stats.contiguous()
    geom = _geom_args(c, thw, out, ks, stride, pad)
    dnp = torch.empty((2, 1), dtype=adt, device=x.device)
    dz = torch.empty((1,), dtype=adt, device=x.device)
    if norm:  # dz and the norm partials (the tap pass below reads dz)
        mn = _meta("out", x.dtype, hd, True)
        n_norm = B * nh * cdiv(Lo, mn["BLOCK_P"])
        check_i32(n_norm * hd)
        dz = torch.empty((B, nh, Lo, hd), dtype=adt, device=x.device)
        dnp = torch.empty((2, n_norm, hd), dtype=adt, device=x.device)
        launch(
            _attention_pool_bwd_out_kernel,
            (n_norm,),
            dy,
            x,
            w,
            norm_weight,
            stats,
            dz,
            dz,
            dnp[0],
            dnp[1],
            nh,
            Lo,
            hd,
            *geom,
            *x.stride()[:3],
            *dy.stride()[:3],
            **mn,
        )
    src = dz if norm else dy
    m = _meta("out", x.dtype, hd, False)
    n_prog = B * nh * cdiv(Lo, m["BLOCK_P"])
    check_i32(n_prog * K * hd)
    dwp = torch.empty((n_prog, K, hd), dtype=adt, device=x.device)
    launch(
        _attention_pool_bwd_out_kernel,
        (n_prog,),
        src,
        x,
        w,
        w,
        dwp,
        dwp,
        dwp,
        dwp,
        dwp,
        nh,
        Lo,
        hd,
        *geom,
        *x.stride()[:3],
        *src.stride()[:3],
        **m,
    )
    mi = _meta("in", x.dtype, hd)
    launch(
        _attention_pool_bwd_in_kernel,
        (B * nh * cdiv(L, mi["BLOCK_P"]),),
        src,
        w,
        dx,
        nh,
        L,
        hd,
        c,
        thw[0],
        thw[1],
        thw[2],
        *out,
        *ks,
        *stride,
        *pad,
        *src.stride()[:3],
        **mi,
    )
    # the per-program partials, summed in a fixed order (deterministic)
    dw = dwp.sum(0).t().reshape(weight.shape).to(weight.dtype)
    if not norm:
        return dx, dw, None, None
    return dx, dw, dnp[0].sum(0).to(x.dtype), dnp[1].sum(0).to(x.dtype)  # (two tensors: no aliasing outputs)


# ==================================================================================================
# AOT launch coverage


def pool_launch_samples(dtype: torch.dtype) -> None:
    """Both pool launchers on small CPU tensors for every head class, with and without the norm."""
    for hd in (8, 64, 96, 128, 256):
        x = torch.zeros(1, 2, 1 + 3 * 4 * 5, hd, dtype=dtype)
        w = torch.zeros(hd, 1, 3, 3, 3, dtype=dtype)
        for nw in (None, torch.ones(hd, dtype=dtype)):
            y, stats = attention_pool_fwd_triton(x, w, nw, nw, (1, 2, 2), (3, 4, 5), True, 1e-6)
            attention_pool_bwd_triton(y, x, w, nw, nw, stats, (1, 2, 2), (3, 4, 5), True, 1e-6)

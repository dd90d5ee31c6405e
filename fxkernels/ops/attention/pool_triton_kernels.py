"""Kernels of the `attention_pool` Triton backend (module docstring of ./pool_triton.py)."""

from __future__ import annotations

import triton
import triton.language as tl

from fxkernels._triton_utils import kernel, to_storage

# ==================================================================================================
# jit helpers


@triton.jit
def _program_rows(n_rows, BLOCK_P: tl.constexpr):
    """(b*nh + h, the program's BLOCK_P row indices) of a grid of cdiv(n_rows, BLOCK_P) programs per (b, h)."""
    pid = tl.program_id(0)
    npb = tl.cdiv(n_rows, BLOCK_P)
    return pid // npb, (pid % npb) * BLOCK_P + tl.arange(0, BLOCK_P)


@triton.jit
def _coords(g, H, W):
    """(t, h, w) of t-major grid indices g."""
    return g // (W * H), (g // W) % H, g % W


@triton.jit
def _tap_row(ot, oh, ow, grid_row, dt, dh, dw, c, T, H, W, st, sh, sw, pt, ph, pw):
    """(the input row tap (dt, dh, dw) of output grid coordinates (ot, oh, ow) reads, whether it lies in the
    grid): an input row outside the grid is the zero padding (a masked load)."""
    it = ot * st - pt + dt
    ih = oh * sh - ph + dh
    iw = ow * sw - pw + dw
    ok = grid_row & (it >= 0) & (it < T) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    return c + (it * H + ih) * W + iw, ok


@triton.jit
def _pooled(
    x_base,
    sxm,
    w_ptr,
    offs_o,
    offs_d,
    dmask,
    grid_row,
    cls_row,
    c,
    T,
    H,
    W,
    Ho,
    Wo,
    kt,
    kh,
    kw,
    st,
    sh,
    sw,
    pt,
    ph,
    pw,
    ACC: tl.constexpr,
):
    """z rows [BLOCK_P, BLOCK_D] of output rows offs_o: the depthwise conv taps for grid rows (an input row
    outside the grid is the zero padding: a masked load), x's row for the cls row."""
    ot, oh, ow = _coords(offs_o - c, Ho, Wo)
    xd = x_base + offs_d[None, :]
    wd = w_ptr + offs_d * (kt * kh * kw)
    z = tl.load(xd + offs_o[:, None] * sxm, mask=cls_row[:, None] & dmask[None, :], other=0.0).to(ACC)
    for dt in range(0, kt):
        for dh in range(0, kh):
            for dw in range(0, kw):
                n, ok = _tap_row(ot, oh, ow, grid_row, dt, dh, dw, c, T, H, W, st, sh, sw, pt, ph, pw)
                xv = tl.load(xd + n[:, None] * sxm, mask=ok[:, None] & dmask[None, :], other=0.0)
                wv = tl.load(wd + ((dt * kh + dh) * kw + dw), mask=dmask, other=0.0)
                z += xv.to(ACC) * wv.to(ACC)[None, :]
    return z


@triton.jit
def _ln_backward(z, dyv, mean, rstd, nwv, dmask, hd):
    """(dz, xhat) of y = xhat nw + nb, xhat = (z - mean) rstd: dz = rstd (g - mean(g) - xhat mean(g xhat)),
    g = dy nw (means over the hd channels)."""
    xhat = tl.where(dmask[None, :], (z - mean[:, None]) * rstd[:, None], 0.0)
    g = dyv * nwv[None, :]
    c1 = tl.sum(g * xhat, axis=1) / hd
    c2 = tl.sum(g, axis=1) / hd
    dz = rstd[:, None] * (g - c2[:, None] - xhat * c1[:, None])
    return tl.where(dmask[None, :], dz, 0.0), xhat


@kernel
def _attention_pool_fwd_kernel(
    x_ptr,
    w_ptr,
    nw_ptr,
    nb_ptr,
    y_ptr,
    stats_ptr,
    nh,
    Lo,
    hd,
    c,
    T,
    H,
    W,
    Ho,
    Wo,
    kt,
    kh,
    kw,
    st,
    sh,
    sw,
    pt,
    ph,
    pw,
    eps_hi,
    eps_lo,
    sxb,
    sxh,
    sxm,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NORM: tl.constexpr,
    ACC: tl.constexpr,
):
    """y[o] = LayerNorm_hd(z[o]) (NORM) or z[o], z[o] = sum_taps w[:, tap] x[n(o, tap)] (x[o] for the cls row),
    for BLOCK_P output rows of one (b, h)."""
    DT = y_ptr.dtype.element_ty
    bh, offs_o = _program_rows(Lo, BLOCK_P)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < hd
    omask = offs_o < Lo
    x_base = x_ptr + (bh // nh).to(tl.int64) * sxb + (bh % nh).to(tl.int64) * sxh
    z = _pooled(
        x_base,
        sxm,
        w_ptr,
        offs_o,
        offs_d,
        dmask,
        omask & (offs_o >= c),
        omask & (offs_o < c),
        c,
        T,
        H,
        W,
        Ho,
        Wo,
        kt,
        kh,
        kw,
        st,
        sh,
        sw,
        pt,
        ph,
        pw,
        ACC,
    )
    row = bh.to(tl.int64) * Lo + offs_o
    if NORM:
        eps = tl.cast(eps_hi, ACC) + tl.cast(eps_lo, ACC)
        mean = tl.sum(z, axis=1) / hd  # the padding channels of z are 0
        diff = tl.where(dmask[None, :], z - mean[:, None], 0.0)
        var = tl.sum(diff * diff, axis=1) / hd
        if ACC == tl.float64:
            rstd = 1.0 / tl.sqrt(var + eps)
        else:
            rstd = 1.0 / tl.sqrt_rn(var + eps)  # IEEE-rounded (tl.sqrt is approximate for fp32)
        nwv = tl.load(nw_ptr + offs_d, mask=dmask, other=0.0).to(ACC)
        nbv = tl.load(nb_ptr + offs_d, mask=dmask, other=0.0).to(ACC)
        z = diff * rstd[:, None] * nwv[None, :] + nbv[None, :]
        tl.store(stats_ptr + row * 2, mean, mask=omask)
        tl.store(stats_ptr + row * 2 + 1, rstd, mask=omask)
    tl.store(
        y_ptr + row[:, None] * hd + offs_d[None, :], to_storage(z, DT), mask=omask[:, None] & dmask[None, :]
    )


@kernel
def _attention_pool_bwd_out_kernel(
    dy_ptr,
    x_ptr,
    w_ptr,
    nw_ptr,
    stats_ptr,
    dz_ptr,
    dwp_ptr,
    dnwp_ptr,
    dnbp_ptr,
    nh,
    Lo,
    hd,
    c,
    T,
    H,
    W,
    Ho,
    Wo,
    kt,
    kh,
    kw,
    st,
    sh,
    sw,
    pt,
    ph,
    pw,
    sxb,
    sxh,
    sxm,
    sdb,
    sdh,
    sdm,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NORM: tl.constexpr,
    ACC: tl.constexpr,
):
    """For BLOCK_P output rows of one (b, h). NORM: dz = the LayerNorm backward on z recomputed (stored) and
    this program's partials dnwp[pid] = sum_o dy xhat, dnbp[pid] = sum_o dy. Else (dz = dy, or the stored dz
    after a NORM launch): the partials dwp[pid, tap] = sum_o dz[o] x[n(o, tap)]."""
    pid = tl.program_id(0)
    bh, offs_o = _program_rows(Lo, BLOCK_P)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < hd
    omask = offs_o < Lo
    grid_row = omask & (offs_o >= c)
    od = omask[:, None] & dmask[None, :]
    b = (bh // nh).to(tl.int64)
    h = (bh % nh).to(tl.int64)
    x_base = x_ptr + b * sxb + h * sxh
    dz = tl.load(dy_ptr + b * sdb + h * sdh + offs_o[:, None] * sdm + offs_d[None, :], mask=od, other=0.0).to(
        ACC
    )
    if NORM:
        z = _pooled(
            x_base,
            sxm,
            w_ptr,
            offs_o,
            offs_d,
            dmask,
            grid_row,
            omask & (offs_o < c),
            c,
            T,
            H,
            W,
            Ho,
            Wo,
            kt,
            kh,
            kw,
            st,
            sh,
            sw,
            pt,
            ph,
            pw,
            ACC,
        )
        row = bh.to(tl.int64) * Lo + offs_o
        mean = tl.load(stats_ptr + row * 2, mask=omask, other=0.0)
        rstd = tl.load(stats_ptr + row * 2 + 1, mask=omask, other=0.0)
        nwv = tl.load(nw_ptr + offs_d, mask=dmask, other=0.0).to(ACC)
        dyv = dz
        dz, xhat = _ln_backward(z, dyv, mean, rstd, nwv, dmask, hd)
        tl.store(dnwp_ptr + pid * hd + offs_d, tl.sum(dyv * xhat, axis=0), mask=dmask)
        tl.store(dnbp_ptr + pid * hd + offs_d, tl.sum(dyv, axis=0), mask=dmask)
        tl.store(dz_ptr + row[:, None] * hd + offs_d[None, :], dz, mask=od)
    else:
        # the tap pass (the NORM variant only stores dz: both in one program would spill registers)
        ot, oh, ow = _coords(offs_o - c, Ho, Wo)
        xd = x_base + offs_d[None, :]
        dwp = dwp_ptr + pid.to(tl.int64) * (kt * kh * kw) * hd + offs_d
        for dt in range(0, kt):
            for dh in range(0, kh):
                for dw in range(0, kw):
                    n, ok = _tap_row(ot, oh, ow, grid_row, dt, dh, dw, c, T, H, W, st, sh, sw, pt, ph, pw)
                    xv = tl.load(xd + n[:, None] * sxm, mask=ok[:, None] & dmask[None, :], other=0.0)
                    tap = (dt * kh + dh) * kw + dw
                    tl.store(dwp + tap * hd, tl.sum(dz * xv.to(ACC), axis=0), mask=dmask)


@kernel
def _attention_pool_bwd_in_kernel(
    dz_ptr,
    w_ptr,
    dx_ptr,
    nh,
    L,
    hd,
    c,
    T,
    H,
    W,
    To,
    Ho,
    Wo,
    kt,
    kh,
    kw,
    st,
    sh,
    sw,
    pt,
    ph,
    pw,
    szb,
    szh,
    szm,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    """dx[n] = sum_taps w[:, tap] dz[o(n, tap)] for BLOCK_P input rows of one (b, h), o(n, tap) the output whose
    tap reads n (on each axis o = (n + pad - d) / stride where that divides and lies in the output grid);
    dx = dz for the cls row."""
    DT = dx_ptr.dtype.element_ty
    bh, offs_r = _program_rows(L, BLOCK_P)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < hd
    rmask = offs_r < L
    grid_row = rmask & (offs_r >= c)
    z_base = dz_ptr + (bh // nh).to(tl.int64) * szb + (bh % nh).to(tl.int64) * szh
    it, ih, iw = _coords(offs_r - c, H, W)
    cls_row = rmask & (offs_r < c)
    dx = tl.load(
        z_base + offs_r[:, None] * szm + offs_d[None, :], mask=cls_row[:, None] & dmask[None, :], other=0.0
    )
    dx = dx.to(ACC)
    zd = z_base + offs_d[None, :]
    wd = w_ptr + offs_d * (kt * kh * kw)
    for dt in range(0, kt):
        nt = it + pt - dt
        ot = nt // st
        okt = grid_row & (nt >= 0) & (nt == ot * st) & (ot < To)
        for dh in range(0, kh):
            nhh = ih + ph - dh
            oh = nhh // sh
            okh = okt & (nhh >= 0) & (nhh == oh * sh) & (oh < Ho)
            row_th = c + (ot * Ho + oh) * Wo
            for dw in range(0, kw):
                nww = iw + pw - dw
                ow = nww // sw
                ok = okh & (nww >= 0) & (nww == ow * sw) & (ow < Wo)
                zv = tl.load(zd + (row_th + ow)[:, None] * szm, mask=ok[:, None] & dmask[None, :], other=0.0)
                wv = tl.load(wd + ((dt * kh + dh) * kw + dw), mask=dmask, other=0.0)
                dx += zv.to(ACC) * wv.to(ACC)[None, :]
    out = (bh.to(tl.int64) * L + offs_r)[:, None] * hd + offs_d[None, :]
    tl.store(dx_ptr + out, to_storage(dx, DT), mask=rmask[:, None] & dmask[None, :])

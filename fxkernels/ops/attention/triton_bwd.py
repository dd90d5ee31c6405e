"""Backward of the attention Triton backend: the row pass ``_attention_bwd_row_kernel`` (delta, dq, drel), the
column pass ``_attention_bwd_col_kernel`` (dk, dv) and ``attention_bwd_triton`` (README.md "Backend
contract"; module docstring of ./triton.py)."""

from __future__ import annotations

import torch
import triton.language as tl

from fxkernels._triton_utils import (
    acc_torch_dtype,
    cdiv,
    check_i32,
    dot_precision,
    kernel,
    launch,
    to_storage,
)

from .triton_common import (
    BR_CLASSES,
    _dot_rows,
    _key_onehot,
    _load_rel,
    _onehot_dot,
    bd_class,
    br_class,
    check_offsets,
    desc,
    last_contiguous,
    meta,
    need,
)
from .triton_fwd import fwd_launch_args
from .triton_packed import attention_packed_bwd, uses_packed


@kernel
def _attention_bwd_row_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    rel_ptr,
    o_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    dq_ptr,
    drel_ptr,
    nh,
    Lq,
    Lk,
    hd,
    c,
    Tk,
    Hk,
    Wk,
    R,
    scale_hi,
    scale_lo,
    add_q,
    add_q_cls,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    srb,
    srh,
    srm,
    sdb,
    sdh,
    sdm,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    HAS_REL: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
    RPREC: tl.constexpr,
    SPLIT: tl.constexpr,
    OH_DT: tl.constexpr,
):
    """For BLOCK_M rows of one (b, h): delta_i = dO_i.(O_i - r_i q_i) (stored for the column pass),
    dq_i = scale sum_j dS_ij k_j + r_i dO_i, drel[i, bins(j)] += dS_ij, dS_ij = P_ij (dO_i.v_j - delta_i),
    P recomputed from lse over BLOCK_N key tiles; the drel row is binned in registers as dS @ onehot.
    BLOCK_DC < BLOCK_D: q k^T and dO v^T contracted in chunks, dq for the head slice pid_d (delta and drel
    stored by slice 0)."""
    DT = dq_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    nmb = tl.cdiv(Lq, BLOCK_M)
    bh = pid // nmb
    b = (bh // nh).to(tl.int64)
    h = (bh % nh).to(tl.int64)
    scale = tl.cast(scale_hi, ACC) + tl.cast(scale_lo, ACC)
    offs_m = (pid % nmb) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = tl.arange(0, BLOCK_DC)  # the head columns of dq this program writes
    if BLOCK_DC < BLOCK_D:
        offs_o += pid_d * BLOCK_DC
    mmask = offs_m < Lq
    md = mmask[:, None] & (offs_o < hd)[None, :]
    q_base = q_ptr + b * sqb + h * sqh
    do_base = do_ptr + b * sdb + h * sdh
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    if HAS_REL:
        rel_q = _load_rel(rel_ptr + b * srb + h * srh, srm, offs_m, c, Lq, R, BLOCK_R, False)
    row = bh.to(tl.int64) * Lq + offs_m
    res = (add_q != 0) & ((offs_m >= c) | (add_q_cls != 0))
    # whole head width: q, dO stay in registers; chunked: this program's slice (dq's residual term)
    q = tl.load(q_base + offs_m[:, None] * sqm + offs_o[None, :], mask=md, other=0.0)
    do = tl.load(do_base + offs_m[:, None] * sdm + offs_o[None, :], mask=md, other=0.0)
    if BLOCK_DC == BLOCK_D:
        o = tl.load(o_ptr + row[:, None] * hd + offs_o[None, :], mask=md, other=0.0).to(ACC)
        o -= tl.where(res[:, None], q.to(ACC), 0.0)
        delta = tl.sum(do.to(ACC) * o, axis=1)
    else:
        delta = tl.zeros([BLOCK_M], dtype=ACC)
        for d0 in tl.static_range(0, BLOCK_D, BLOCK_DC):
            od = d0 + tl.arange(0, BLOCK_DC)
            mc = mmask[:, None] & (od < hd)[None, :]
            qc = tl.load(q_base + offs_m[:, None] * sqm + od[None, :], mask=mc, other=0.0).to(ACC)
            dc = tl.load(do_base + offs_m[:, None] * sdm + od[None, :], mask=mc, other=0.0).to(ACC)
            oc = tl.load(o_ptr + row[:, None] * hd + od[None, :], mask=mc, other=0.0).to(ACC)
            delta += tl.sum(dc * (oc - tl.where(res[:, None], qc, 0.0)), axis=1)
    tl.store(delta_ptr + row, delta, mask=mmask & (pid_d == 0))
    lse = tl.load(lse_ptr + row, mask=mmask, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_DC], dtype=ACC)
    drel = tl.zeros([BLOCK_M, BLOCK_R], dtype=ACC)
    for n0 in range(0, Lk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = offs_n < Lk
        kvm = nmask[:, None] & (offs_o < hd)[None, :]
        kt = tl.load(k_base + offs_n[:, None] * skn + offs_o[None, :], mask=kvm, other=0.0)
        if BLOCK_DC == BLOCK_D:
            vt = tl.load(v_base + offs_n[:, None] * svn + offs_o[None, :], mask=kvm, other=0.0)
            # [BLOCK_M, BLOCK_N] = [BLOCK_M, D] @ [D, BLOCK_N]
            s = tl.dot(q, tl.trans(kt), input_precision=PREC, out_dtype=ACC) * scale
        else:
            s = scale * _dot_rows(
                q_base, sqm, offs_m, mmask, k_base, skn, offs_n, nmask, hd, ACC, BLOCK_D, BLOCK_DC, PREC
            )
        if HAS_REL:
            # [BLOCK_M, BLOCK_N] += [BLOCK_M, BLOCK_R] @ [BLOCK_R, BLOCK_N]
            oh_t = _key_onehot(offs_n, c, Lk, Tk, Hk, Wk, BLOCK_R, OH_DT, True)
            s = _onehot_dot(rel_q, oh_t, s, True, RPREC, SPLIT)
        p = tl.where(nmask[None, :], tl.exp(s - lse[:, None]), 0.0)
        if BLOCK_DC == BLOCK_D:
            # [BLOCK_M, BLOCK_N] = [BLOCK_M, D] @ [D, BLOCK_N]
            dp = tl.dot(do, tl.trans(vt), input_precision=PREC, out_dtype=ACC)
        else:
            dp = _dot_rows(
                do_base, sdm, offs_m, mmask, v_base, svn, offs_n, nmask, hd, ACC, BLOCK_D, BLOCK_DC, PREC
            )
        ds = p * (dp - delta[:, None])
        # [BLOCK_M, DC] += [BLOCK_M, BLOCK_N] @ [BLOCK_N, DC]
        dq = tl.dot(ds.to(kt.dtype), kt, dq, input_precision=PREC, out_dtype=ACC)
        if HAS_REL:
            # [BLOCK_M, BLOCK_R] += [BLOCK_M, BLOCK_N] @ [BLOCK_N, BLOCK_R]
            oh = _key_onehot(offs_n, c, Lk, Tk, Hk, Wk, BLOCK_R, OH_DT, False)
            drel = _onehot_dot(ds, oh, drel, True, RPREC, SPLIT)
    dq = dq * scale + tl.where(res[:, None], do.to(ACC), 0.0)
    tl.store(dq_ptr + row[:, None] * hd + offs_o[None, :], to_storage(dq, DT), mask=md)
    if HAS_REL:
        offs_r = tl.arange(0, BLOCK_R)
        grid_row = (bh.to(tl.int64) * (Lq - c) + offs_m - c) * R
        rm = (mmask & (offs_m >= c) & (pid_d == 0))[:, None] & (offs_r < R)[None, :]
        tl.store(drel_ptr + grid_row[:, None] + offs_r[None, :], drel, mask=rm)


@kernel
def _attention_bwd_col_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    rel_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    dk_ptr,
    dv_ptr,
    nh,
    Lq,
    Lk,
    hd,
    c,
    Tk,
    Hk,
    Wk,
    R,
    scale_hi,
    scale_lo,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    srb,
    srh,
    srm,
    sdb,
    sdh,
    sdm,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    HAS_REL: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
    RPREC: tl.constexpr,
    SPLIT: tl.constexpr,
    OH_DT: tl.constexpr,
):
    """For BLOCK_N keys of one (b, h): dv_j = sum_i P_ij dO_i, dk_j = scale sum_i dS_ij q_i over BLOCK_M
    query tiles, P^T recomputed from lse (the tiles are held transposed: [BLOCK_N, BLOCK_M]).
    BLOCK_DC < BLOCK_D: k q^T and v dO^T contracted in chunks, dk and dv for the head slice pid_d."""
    DT = dk_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    nnb = tl.cdiv(Lk, BLOCK_N)
    bh = pid // nnb
    b = (bh // nh).to(tl.int64)
    h = (bh % nh).to(tl.int64)
    scale = tl.cast(scale_hi, ACC) + tl.cast(scale_lo, ACC)
    offs_n = (pid % nnb) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_o = tl.arange(0, BLOCK_DC)  # the head columns of dk, dv this program writes
    if BLOCK_DC < BLOCK_D:
        offs_o += pid_d * BLOCK_DC
    nmask = offs_n < Lk
    omask = offs_o < hd
    nd = nmask[:, None] & omask[None, :]
    q_base = q_ptr + b * sqb + h * sqh
    do_base = do_ptr + b * sdb + h * sdh
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    rel_base = rel_ptr + b * srb + h * srh
    if BLOCK_DC == BLOCK_D:
        kt = tl.load(k_base + offs_n[:, None] * skn + offs_o[None, :], mask=nd, other=0.0)
        vt = tl.load(v_base + offs_n[:, None] * svn + offs_o[None, :], mask=nd, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_DC], dtype=ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_DC], dtype=ACC)
    for m0 in range(0, Lq, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mmask = offs_m < Lq
        md = mmask[:, None] & omask[None, :]
        qt = tl.load(q_base + offs_m[:, None] * sqm + offs_o[None, :], mask=md, other=0.0)
        dot_ = tl.load(do_base + offs_m[:, None] * sdm + offs_o[None, :], mask=md, other=0.0)
        row = bh.to(tl.int64) * Lq + offs_m
        lse = tl.load(lse_ptr + row, mask=mmask, other=0.0)
        delta = tl.load(delta_ptr + row, mask=mmask, other=0.0)
        if BLOCK_DC == BLOCK_D:
            # [BLOCK_N, BLOCK_M] = [BLOCK_N, D] @ [D, BLOCK_M]
            st = tl.dot(kt, tl.trans(qt), input_precision=PREC, out_dtype=ACC) * scale
        else:
            st = scale * _dot_rows(
                k_base, skn, offs_n, nmask, q_base, sqm, offs_m, mmask, hd, ACC, BLOCK_D, BLOCK_DC, PREC
            )
        if HAS_REL:
            rel_t = _load_rel(rel_base, srm, offs_m, c, Lq, R, BLOCK_R, True)
            # [BLOCK_N, BLOCK_M] += [BLOCK_N, BLOCK_R] @ [BLOCK_R, BLOCK_M]
            oh = _key_onehot(offs_n, c, Lk, Tk, Hk, Wk, BLOCK_R, OH_DT, False)
            st = _onehot_dot(rel_t, oh, st, False, RPREC, SPLIT)
        pt = tl.where(mmask[None, :], tl.exp(st - lse[None, :]), 0.0)
        # [BLOCK_N, DC] += [BLOCK_N, BLOCK_M] @ [BLOCK_M, DC]
        dv = tl.dot(pt.to(dot_.dtype), dot_, dv, input_precision=PREC, out_dtype=ACC)
        if BLOCK_DC == BLOCK_D:
            # [BLOCK_N, BLOCK_M] = [BLOCK_N, D] @ [D, BLOCK_M]
            dpt = tl.dot(vt, tl.trans(dot_), input_precision=PREC, out_dtype=ACC)
        else:
            dpt = _dot_rows(
                v_base, svn, offs_n, nmask, do_base, sdm, offs_m, mmask, hd, ACC, BLOCK_D, BLOCK_DC, PREC
            )
        dst = pt * (dpt - delta[None, :])
        # [BLOCK_N, DC] += [BLOCK_N, BLOCK_M] @ [BLOCK_M, DC]
        dk = tl.dot(dst.to(qt.dtype), qt, dk, input_precision=PREC, out_dtype=ACC)
    out = (bh.to(tl.int64) * Lk + offs_n)[:, None] * hd + offs_o[None, :]
    tl.store(dk_ptr + out, to_storage(dk * scale, DT), mask=nd)
    tl.store(dv_ptr + out, to_storage(dv, DT), mask=nd)


def attention_bwd_triton(dout, q, k, v, rel, out, lse, scale, thw_k, has_cls, add_q, add_q_cls, need_rel):
    """(dq, dk, dv, drel) of the README's kernel contract for the forward's (out, lse).

    dout: q's shape and dtype, any strides on the first 3 axes; out, lse: attention_fwd_triton's outputs.
    dq (including r_i dO_i, not the path through rel), dk, dv contiguous in q's dtype; drel rel's shape in the
    accumulation dtype when need_rel (and rel is given), else None.
    """
    q, k, v, rel, R, scalars, (hi, lo), (aq, aqc) = fwd_launch_args(
        q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls
    )
    B, nh, Lq, hd = q.shape
    Lk = k.shape[2]
    adt = acc_torch_dtype(q.dtype)
    for name, t, shape, dt in (
        ("dout", dout, q.shape, q.dtype),
        ("out", out, q.shape, q.dtype),
        ("lse", lse, q.shape[:3], adt),
    ):
        need(
            isinstance(t, torch.Tensor) and t.shape == shape and t.dtype == dt and t.device == q.device,
            f"{name} must be {tuple(shape)} {dt} on {q.device}, got {desc(t)}",
        )
    dout = last_contiguous(dout)
    out, lse = out.contiguous(), lse.contiguous()
    check_offsets(dout)
    dq = torch.empty((B, nh, Lq, hd), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, nh, Lk, hd), dtype=q.dtype, device=q.device)
    dv = torch.empty_like(dk)
    has_rel = rel is not None
    # without need_rel the row pass still bins dS (one variant per BLOCK_R), into a scratch buffer
    drel = torch.empty(rel.shape, dtype=adt, device=q.device) if has_rel else None
    if dq.numel() == 0:
        dk.zero_()
        dv.zero_()
        return dq, dk, dv, (drel if need_rel else None)
    if uses_packed(q, k, rel, "bwd"):  # short sequences without a bias: triton_packed.py
        scalars = (nh, Lq, Lk, hd, scalars[4], hi, lo, aq, aqc)
        attention_packed_bwd(dout, q, k, v, out, lse, dq, dk, dv, scalars)
        return dq, dk, dv, None
    delta = torch.empty((B, nh, Lq), dtype=adt, device=q.device)
    prec = dot_precision(q.dtype)
    bd = bd_class(hd)
    relt = rel if has_rel else lse  # unused pointers of the accumulation dtype
    rs = rel.stride()[:3] if has_rel else (0, 0, 0)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *rs, *dout.stride()[:3])
    m = meta("row", q.dtype, prec, bd, has_rel, br_class(R) if has_rel else BR_CLASSES[0])
    grid = (B * nh * cdiv(Lq, m["BLOCK_M"]), bd // m["BLOCK_DC"])
    check_i32(grid[0], B * nh * Lq * R)
    launch(
        _attention_bwd_row_kernel,
        grid,
        q,
        k,
        v,
        relt,
        out,
        dout,
        lse,
        delta,
        dq,
        drel if has_rel else lse,
        *scalars,
        R,
        hi,
        lo,
        aq,
        aqc,
        *strides,
        **m,
    )
    m = meta("col", q.dtype, prec, bd, has_rel, br_class(R) if has_rel else BR_CLASSES[0])
    grid = (B * nh * cdiv(Lk, m["BLOCK_N"]), bd // m["BLOCK_DC"])
    check_i32(grid[0])
    launch(
        _attention_bwd_col_kernel,
        grid,
        q,
        k,
        v,
        relt,
        dout,
        lse,
        delta,
        dk,
        dv,
        *scalars,
        R,
        hi,
        lo,
        *strides,
        **m,
    )
    return dq, dk, dv, (drel if (has_rel and need_rel) else None)

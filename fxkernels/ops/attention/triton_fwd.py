"""Flash forward of the attention Triton backend: ``_attention_fwd_kernel`` and ``attention_fwd_triton``
(README.md "Backend contract"; module docstring of ./triton.py)."""

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
    _dot_rows,
    _key_onehot,
    _load_rel,
    _onehot_dot,
    bd_class,
    br_class,
    check_offsets,
    check_qkv,
    check_rel,
    last_contiguous,
    meta,
    need,
    scale_args,
    unsupported,
)
from .triton_packed import attention_packed_fwd, uses_packed


@kernel
def _attention_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    rel_ptr,
    o_ptr,
    lse_ptr,
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
    """O_i = sum_j softmax_j(scale q_i.k_j + bias_ij) v_j + r_i q_i, lse_i = log sum_j exp S_ij for BLOCK_M
    rows of one (b, h) and head columns [pid_d BLOCK_DC, +BLOCK_DC): online softmax over BLOCK_N key tiles,
    the bias gathered from rel per tile; BLOCK_DC < BLOCK_D contracts q k^T in chunks (triton_common)."""
    DT = o_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)  # head slice of O: 0 unless BLOCK_DC < BLOCK_D
    nmb = tl.cdiv(Lq, BLOCK_M)
    bh = pid // nmb  # programs of one (b, h) are adjacent: its k, v stay in L2
    b = (bh // nh).to(tl.int64)
    h = (bh % nh).to(tl.int64)
    scale = tl.cast(scale_hi, ACC) + tl.cast(scale_lo, ACC)
    offs_m = (pid % nmb) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = tl.arange(0, BLOCK_DC)  # the head columns this program writes
    if BLOCK_DC < BLOCK_D:
        offs_o += pid_d * BLOCK_DC
    mmask = offs_m < Lq
    omask = offs_o < hd
    q_base = q_ptr + b * sqb + h * sqh
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    if HAS_REL:
        rel_q = _load_rel(rel_ptr + b * srb + h * srh, srm, offs_m, c, Lq, R, BLOCK_R, False)
    # whole head width: q stays in registers; chunked: only this program's slice (for the residual)
    q = tl.load(
        q_base + offs_m[:, None] * sqm + offs_o[None, :], mask=mmask[:, None] & omask[None, :], other=0.0
    )
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    l_i = tl.zeros([BLOCK_M], dtype=ACC)
    acc = tl.zeros([BLOCK_M, BLOCK_DC], dtype=ACC)
    for n0 in range(0, Lk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = offs_n < Lk
        kvm = nmask[:, None] & omask[None, :]
        if BLOCK_DC == BLOCK_D:
            kt = tl.load(k_base + offs_n[:, None] * skn + offs_o[None, :], mask=kvm, other=0.0)
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
        s = tl.where(nmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every tile has a valid key
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vt = tl.load(v_base + offs_n[:, None] * svn + offs_o[None, :], mask=kvm, other=0.0)
        # [BLOCK_M, DC] += [BLOCK_M, BLOCK_N] @ [BLOCK_N, DC]
        acc = tl.dot(p.to(vt.dtype), vt, acc * alpha[:, None], input_precision=PREC, out_dtype=ACC)
        m_i = m_new
    o = acc / l_i[:, None]
    res = (add_q != 0) & ((offs_m >= c) | (add_q_cls != 0))
    o += tl.where(res[:, None], q.to(ACC), 0.0)
    row = bh.to(tl.int64) * Lq + offs_m
    tl.store(
        o_ptr + row[:, None] * hd + offs_o[None, :], to_storage(o, DT), mask=mmask[:, None] & omask[None, :]
    )
    tl.store(lse_ptr + row, m_i + tl.log(l_i), mask=mmask & (pid_d == 0))


def fwd_launch_args(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls):
    """Checked, normalised inputs and the scalar kernel arguments shared by the forward and backward."""
    check_qkv(q, k, v)
    B, nh, Lq, hd = q.shape
    Lk = k.shape[2]
    R = check_rel(rel, q, thw_k, has_cls, Lk)
    c = int(bool(has_cls))
    need(Lq >= c, f"has_cls=True needs a cls row in q, got Lq = {Lq}")
    why = unsupported(q.dtype, hd, R if rel is not None else None)
    need(why is None, str(why))
    q, k, v = last_contiguous(q), last_contiguous(k), last_contiguous(v)
    rel = last_contiguous(rel) if rel is not None else None
    check_offsets(q, k, v, *([rel] if rel is not None else []))
    check_i32(Lq * hd, Lk * hd, B * nh * Lq)
    Tk, Hk, Wk = (int(s) for s in thw_k)
    hi, lo = scale_args(scale)
    scalars = (nh, Lq, Lk, hd, c, Tk, Hk, Wk)
    return q, k, v, rel, R, scalars, (hi, lo), (int(bool(add_q)), int(bool(add_q_cls)))


def attention_fwd_triton(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls):
    """(O, lse) of the README's kernel contract.

    q: (B, nh, Lq, hd), k, v: (B, nh, Lk, hd), one float dtype, any strides on the first 3 axes; rel: None or
    (B, nh, Lq - c, Tk+Hk+Wk) in the accumulation dtype; thw_k = [Tk, Hk, Wk] with c + Tk*Hk*Wk = Lk.
    Returns O (B, nh, Lq, hd) contiguous in q's dtype and lse (B, nh, Lq) contiguous, fp32 (fp64 for fp64).
    """
    q, k, v, rel, R, scalars, (hi, lo), (aq, aqc) = fwd_launch_args(
        q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls
    )
    B, nh, Lq, hd = q.shape
    o = torch.empty((B, nh, Lq, hd), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, nh, Lq), dtype=acc_torch_dtype(q.dtype), device=q.device)
    if o.numel() == 0:
        return o, lse
    if uses_packed(q, k, rel, "fwd"):  # short sequences without a bias: triton_packed.py
        attention_packed_fwd(q, k, v, o, lse, (nh, Lq, k.shape[2], hd, int(bool(has_cls)), hi, lo, aq, aqc))
        return o, lse
    m = meta("fwd", q.dtype, dot_precision(q.dtype), bd_class(hd), rel is not None, br_class(R))
    relt = rel if rel is not None else lse  # an unused pointer of the accumulation dtype
    rs = rel.stride()[:3] if rel is not None else (0, 0, 0)
    grid = (B * nh * cdiv(Lq, m["BLOCK_M"]), m["BLOCK_D"] // m["BLOCK_DC"])
    check_i32(grid[0])
    launch(
        _attention_fwd_kernel,
        grid,
        q,
        k,
        v,
        relt,
        o,
        lse,
        *scalars,
        R,
        hi,
        lo,
        aq,
        aqc,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *rs,
        **m,
    )
    return o, lse

"""Packed short-sequence path of the attention Triton backend (README.md "Backend contract"): attention without
a bias over very many tiny sequences (STT's ``(B*F, 8, 49, 49, 64)`` and ``(B*N, 8, 17, 17, 64)``), where the
flash loop over key tiles is pointless and the per-program overhead of three kernels dominates.

* ``_attention_packed_fwd_kernel``: one program per ``PAIRS`` consecutive (b, h) pairs (a loop over them); a
  pair's whole k and v sit in one ``[BLOCK_L, BLOCK_D]`` tile each, its queries go by in ``BLOCK_M``-row
  chunks, each against every key: ``S = scale q k^T``, ``P = softmax S`` (keys ``j >= Lk`` masked to -inf),
  ``O = P v + r q``, ``lse = log sum_j exp S`` (the flash forward's lse).
* ``_attention_packed_bwd_kernel``: the same programs, one pass per pair, P recomputed from lse: q, dO and
  the dq accumulator in whole tiles, ``delta = rowsum(dO (O - r q))``, then over ``BLOCK_N``-row key chunks
  ``dS = P (dO v^T - delta)``, ``dv = P^T dO`` and ``dk = scale dS^T q`` (complete per chunk: every query is
  in the tile), ``dq += dS k``; ``dq = scale dq + r dO``. One kernel, no delta buffer, no atomics: every dq,
  dk, dv row is written by the one program owning its pair.

``BLOCK_L = max(16, next_pow2(max(Lq, Lk)))`` in {16, 32, 64}, ``BLOCK_D`` the flash kernels' head class; rows
``>= Lq`` / ``>= Lk``, head columns ``>= hd`` and the pairs past ``B nh`` of the last program are masked at
load and store. Dtype rules as the flash kernels (triton.py): fp32 ``tl.dot`` as 3xTF32, fp16 / bf16 with fp32
accumulation and P, dS rounded to the input dtype before their products, fp64 in fp64, scale as an fp32
hi + lo pair, one rounding at the store. Any strides on the first three axes of q, k, v, dO; (b, h) offsets
int64.

The launchers route here (``uses_packed``) when there is no rel bias, ``Lq <= 64``, ``Lk <= 64`` and the class
(kernel, dtype class, ``BLOCK_L``, ``BLOCK_D``) has tiles in ``PACKED``; the rest runs the flash kernels.
Forward and backward route independently: both paths store and read the same lse.
"""

from __future__ import annotations

import torch
import triton.language as tl

from fxkernels._triton_utils import (
    FLOAT_DTYPES,
    TORCH_TO_SIG,
    acc_dtype,
    acc_torch_dtype,
    cdiv,
    check_i32,
    kernel,
    launch,
    make_spec,
    next_pow2,
    to_storage,
    variant_name,
)

from .triton_common import BD_CLASSES, bd_class, dtype_class, kernel_prec

BL_CLASSES = (16, 32, 64)  # BLOCK_L: one tile holds a pair's whole q (Lq rows) and k, v (Lk rows)
MAX_PACKED_L = BL_CLASSES[-1]
KINDS = ("fwd", "bwd")

# (kind, dtype class, BLOCK_L, BLOCK_D) -> (PAIRS, num_warps, num_stages, chunk), chunk = the forward's
# BLOCK_M (query rows per step) / the backward's BLOCK_N (key rows per step): the first entry of a ladder (more
# pairs per program, 4 warps before 8, whole-tile chunks first) that compiles with 0 register spills on sm_80 and
# sm_90 in every dtype of the class, within sm_86 / sm_89's 99 KiB of shared memory per block
# (tools/tune_attention_packed.py; checked by python -m fxkernels.aot). None: nothing fits (fp32's 3xTF32
# operand splits, wide fp64 tiles), those shapes run the flash kernels.
PACKED = {
    ("fwd", "f32", 16, 32): (1, 4, 1, 16),
    ("fwd", "f32", 16, 64): (1, 4, 1, 16),
    ("fwd", "f32", 16, 128): (1, 4, 1, 16),
    ("fwd", "f32", 16, 256): None,
    ("fwd", "f32", 32, 32): (2, 4, 1, 32),
    ("fwd", "f32", 32, 64): (2, 4, 1, 16),
    ("fwd", "f32", 32, 128): (2, 4, 1, 16),
    ("fwd", "f32", 32, 256): None,
    ("fwd", "f32", 64, 32): (1, 4, 1, 64),
    ("fwd", "f32", 64, 64): (1, 4, 1, 16),
    ("fwd", "f32", 64, 128): None,
    ("fwd", "f32", 64, 256): None,
    ("fwd", "f64", 16, 32): (4, 4, 1, 16),
    ("fwd", "f64", 16, 64): (4, 4, 1, 16),
    ("fwd", "f64", 16, 128): (4, 4, 1, 16),
    ("fwd", "f64", 16, 256): (4, 4, 1, 16),
    ("fwd", "f64", 32, 32): (1, 4, 1, 32),
    ("fwd", "f64", 32, 64): (1, 4, 1, 32),
    ("fwd", "f64", 32, 128): (1, 4, 1, 16),
    ("fwd", "f64", 32, 256): None,
    ("fwd", "f64", 64, 32): (1, 4, 1, 64),
    ("fwd", "f64", 64, 64): (1, 4, 1, 32),
    ("fwd", "f64", 64, 128): None,
    ("fwd", "f64", 64, 256): None,
    ("fwd", "half", 16, 32): (4, 4, 1, 16),
    ("fwd", "half", 16, 64): (4, 4, 1, 16),
    ("fwd", "half", 16, 128): (1, 4, 1, 16),
    ("fwd", "half", 16, 256): (1, 4, 1, 16),
    ("fwd", "half", 32, 32): (2, 4, 1, 32),
    ("fwd", "half", 32, 64): (2, 4, 1, 32),
    ("fwd", "half", 32, 128): (2, 4, 1, 32),
    ("fwd", "half", 32, 256): (2, 4, 1, 16),
    ("fwd", "half", 64, 32): (1, 4, 1, 64),
    ("fwd", "half", 64, 64): (1, 4, 1, 64),
    ("fwd", "half", 64, 128): (1, 4, 1, 32),
    ("fwd", "half", 64, 256): (1, 4, 1, 16),
    ("bwd", "f32", 16, 32): (4, 4, 1, 16),
    ("bwd", "f32", 16, 64): (4, 4, 1, 16),
    ("bwd", "f32", 16, 128): (4, 4, 1, 16),
    ("bwd", "f32", 16, 256): None,
    ("bwd", "f32", 32, 32): (2, 4, 1, 16),
    ("bwd", "f32", 32, 64): (2, 8, 1, 16),
    ("bwd", "f32", 32, 128): None,
    ("bwd", "f32", 32, 256): None,
    ("bwd", "f32", 64, 32): (1, 8, 1, 16),
    ("bwd", "f32", 64, 64): None,
    ("bwd", "f32", 64, 128): None,
    ("bwd", "f32", 64, 256): None,
    ("bwd", "f64", 16, 32): (4, 4, 1, 16),
    ("bwd", "f64", 16, 64): (4, 4, 1, 16),
    ("bwd", "f64", 16, 128): (4, 4, 1, 16),
    ("bwd", "f64", 16, 256): None,
    ("bwd", "f64", 32, 32): (2, 4, 1, 32),
    ("bwd", "f64", 32, 64): (1, 8, 1, 32),
    ("bwd", "f64", 32, 128): None,
    ("bwd", "f64", 32, 256): None,
    ("bwd", "f64", 64, 32): (1, 4, 1, 32),
    ("bwd", "f64", 64, 64): (1, 8, 1, 16),
    ("bwd", "f64", 64, 128): None,
    ("bwd", "f64", 64, 256): None,
    ("bwd", "half", 16, 32): (4, 4, 1, 16),
    ("bwd", "half", 16, 64): (1, 4, 1, 16),
    ("bwd", "half", 16, 128): (1, 4, 1, 16),
    ("bwd", "half", 16, 256): (4, 8, 1, 16),
    ("bwd", "half", 32, 32): (2, 4, 1, 32),
    ("bwd", "half", 32, 64): (2, 4, 1, 16),
    ("bwd", "half", 32, 128): (1, 4, 1, 16),
    ("bwd", "half", 32, 256): None,
    ("bwd", "half", 64, 32): (1, 4, 1, 32),
    ("bwd", "half", 64, 64): (1, 8, 1, 16),
    ("bwd", "half", 64, 128): None,
    ("bwd", "half", 64, 256): None,
}


def bl_class(Lq: int, Lk: int) -> int:
    return max(BL_CLASSES[0], next_pow2(max(Lq, Lk)))


def packed_cfg(kind: str, dtype: torch.dtype, Lq: int, Lk: int, hd: int):
    """PACKED's entry for a launch (None: no packed tiles, or a sequence longer than MAX_PACKED_L)."""
    if max(Lq, Lk) > MAX_PACKED_L:
        return None
    return PACKED[(kind, dtype_class(dtype), bl_class(Lq, Lk), bd_class(hd))]


def uses_packed(q: torch.Tensor, k: torch.Tensor, rel, kind: str = "fwd") -> bool:
    """Whether launcher `kind` ("fwd": attention_fwd_triton, "bwd": attention_bwd_triton) takes the packed
    path for these inputs: no rel bias, Lq, Lk <= MAX_PACKED_L, and spill-free packed tiles for the class."""
    return rel is None and packed_cfg(kind, q.dtype, q.shape[2], k.shape[2], q.shape[3]) is not None


@kernel
def _attention_packed_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    lse_ptr,
    nbh,
    nh,
    Lq,
    Lk,
    hd,
    c,
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
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    PAIRS: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """O_i = sum_j softmax_j(scale q_i.k_j) v_j + r_i q_i, lse_i = log sum_j exp(scale q_i.k_j) for the PAIRS
    (b, h) pairs bh = pid PAIRS + [0, PAIRS) of nbh = B nh: k, v (Lk rows, hd columns) in one
    [BLOCK_L, BLOCK_D] tile each, the queries in BLOCK_M-row chunks (BLOCK_M = BLOCK_L: one chunk), each
    against every key; O (nbh, Lq, hd) and lse (nbh, Lq) contiguous."""
    DT = o_ptr.dtype.element_ty
    scale = tl.cast(scale_hi, ACC) + tl.cast(scale_lo, ACC)
    offs_l = tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < hd
    for i in range(PAIRS):
        bh = tl.program_id(0) * PAIRS + i
        b = (bh // nh).to(tl.int64)
        h = (bh % nh).to(tl.int64)
        nmask = (offs_l < Lk) & (bh < nbh)
        # k read as k^T straight from memory: no register transpose before the product
        kt = tl.load(
            k_ptr + b * skb + h * skh + offs_l[None, :] * skn + offs_d[:, None],
            mask=dmask[:, None] & nmask[None, :],
            other=0.0,
        )
        v = tl.load(
            v_ptr + b * svb + h * svh + offs_l[:, None] * svn + offs_d[None, :],
            mask=nmask[:, None] & dmask[None, :],
            other=0.0,
        )
        for m0 in range(0, Lq, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            mmask = (offs_m < Lq) & (bh < nbh)
            md = mmask[:, None] & dmask[None, :]
            q = tl.load(
                q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :], mask=md, other=0.0
            )
            # [BLOCK_M, BLOCK_L] = [BLOCK_M, BLOCK_D] @ [BLOCK_D, BLOCK_L]
            s = tl.dot(q, kt, input_precision=PREC, out_dtype=ACC) * scale
            s = tl.where((offs_l < Lk)[None, :], s, float("-inf"))  # Lk >= 1: every row keeps a finite max
            m = tl.max(s, axis=1)
            p = tl.exp(s - m[:, None])
            l = tl.sum(p, axis=1)
            # [BLOCK_M, BLOCK_D] = [BLOCK_M, BLOCK_L] @ [BLOCK_L, BLOCK_D]
            o = tl.dot(p.to(v.dtype), v, input_precision=PREC, out_dtype=ACC) / l[:, None]
            res = (add_q != 0) & ((offs_m >= c) | (add_q_cls != 0))
            o += tl.where(res[:, None], q.to(ACC), 0.0)
            row = bh.to(tl.int64) * Lq + offs_m
            tl.store(o_ptr + row[:, None] * hd + offs_d[None, :], to_storage(o, DT), mask=md)
            tl.store(lse_ptr + row, m + tl.log(l), mask=mmask)


@kernel
def _attention_packed_bwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    do_ptr,
    lse_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    nbh,
    nh,
    Lq,
    Lk,
    hd,
    c,
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
    sdb,
    sdh,
    sdm,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAIRS: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """For each of the PAIRS (b, h) pairs of the program, P_ij = exp(scale q_i.k_j - lse_i) and
    dS = P (dO v^T - delta), delta_i = dO_i.(O_i - r_i q_i): dv = P^T dO, dk = scale dS^T q,
    dq = scale dS k + r dO. q, dO, dq stay in [BLOCK_L, BLOCK_D] tiles; the keys go by in BLOCK_N-row chunks
    (BLOCK_N = BLOCK_L: one chunk), each chunk's dk, dv rows complete when written. dq (nbh, Lq, hd),
    dk, dv (nbh, Lk, hd) contiguous."""
    DT = dq_ptr.dtype.element_ty
    scale = tl.cast(scale_hi, ACC) + tl.cast(scale_lo, ACC)
    offs_l = tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < hd
    res = (add_q != 0) & ((offs_l >= c) | (add_q_cls != 0))
    for i in range(PAIRS):
        bh = tl.program_id(0) * PAIRS + i
        b = (bh // nh).to(tl.int64)
        h = (bh % nh).to(tl.int64)
        mmask = (offs_l < Lq) & (bh < nbh)
        md = mmask[:, None] & dmask[None, :]
        row = bh.to(tl.int64) * Lq + offs_l
        q = tl.load(q_ptr + b * sqb + h * sqh + offs_l[:, None] * sqm + offs_d[None, :], mask=md, other=0.0)
        do = tl.load(do_ptr + b * sdb + h * sdh + offs_l[:, None] * sdm + offs_d[None, :], mask=md, other=0.0)
        o = tl.load(o_ptr + row[:, None] * hd + offs_d[None, :], mask=md, other=0.0).to(ACC)
        delta = tl.sum(do.to(ACC) * (o - tl.where(res[:, None], q.to(ACC), 0.0)), axis=1)
        lse = tl.load(lse_ptr + row, mask=mmask, other=0.0)
        k_base = k_ptr + b * skb + h * skh
        v_base = v_ptr + b * svb + h * svh
        dq = tl.zeros([BLOCK_L, BLOCK_D], dtype=ACC)
        # a runtime loop: unrolled chunks overlap and spill
        for n0 in range(0, Lk, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            nmask = (offs_n < Lk) & (bh < nbh)
            nd = nmask[:, None] & dmask[None, :]
            dn = dmask[:, None] & nmask[None, :]
            # k^T and v^T read transposed from memory (L1 hits) instead of transposing register tiles
            k = tl.load(k_base + offs_n[:, None] * skn + offs_d[None, :], mask=nd, other=0.0)
            kt = tl.load(k_base + offs_n[None, :] * skn + offs_d[:, None], mask=dn, other=0.0)
            vt = tl.load(v_base + offs_n[None, :] * svn + offs_d[:, None], mask=dn, other=0.0)
            # [BLOCK_L, BLOCK_N] = [BLOCK_L, BLOCK_D] @ [BLOCK_D, BLOCK_N]
            s = tl.dot(q, kt, input_precision=PREC, out_dtype=ACC) * scale
            p = tl.where(mmask[:, None] & nmask[None, :], tl.exp(s - lse[:, None]), 0.0)
            col = bh.to(tl.int64) * Lk + offs_n
            # [BLOCK_N, BLOCK_D] = [BLOCK_N, BLOCK_L] @ [BLOCK_L, BLOCK_D]
            dv = tl.dot(tl.trans(p.to(DT)), do, input_precision=PREC, out_dtype=ACC)
            tl.store(dv_ptr + col[:, None] * hd + offs_d[None, :], to_storage(dv, DT), mask=nd)
            # [BLOCK_L, BLOCK_N] = [BLOCK_L, BLOCK_D] @ [BLOCK_D, BLOCK_N]
            dp = tl.dot(do, vt, input_precision=PREC, out_dtype=ACC)
            ds = (p * (dp - delta[:, None])).to(DT)
            # [BLOCK_N, BLOCK_D] = [BLOCK_N, BLOCK_L] @ [BLOCK_L, BLOCK_D]
            dk = tl.dot(tl.trans(ds), q, input_precision=PREC, out_dtype=ACC) * scale
            tl.store(dk_ptr + col[:, None] * hd + offs_d[None, :], to_storage(dk, DT), mask=nd)
            # [BLOCK_L, BLOCK_D] += [BLOCK_L, BLOCK_N] @ [BLOCK_N, BLOCK_D]
            dq = tl.dot(ds, k, dq, input_precision=PREC, out_dtype=ACC)
        dq = dq * scale + tl.where(res[:, None], do.to(ACC), 0.0)
        tl.store(dq_ptr + row[:, None] * hd + offs_d[None, :], to_storage(dq, DT), mask=md)


_KERNEL = {"fwd": _attention_packed_fwd_kernel, "bwd": _attention_packed_bwd_kernel}


def packed_meta(kind: str, dtype: torch.dtype, bl: int, bd: int) -> dict:
    """The constexprs and launch options of one packed launch (also what ``packed_specs`` compiles)."""
    cfg = PACKED[(kind, dtype_class(dtype), bl, bd)]
    if cfg is None:
        raise ValueError(f"attention (triton): no spill-free packed {kind} tiles for {dtype} BL {bl} BD {bd}")
    pairs, warps, stages, chunk = cfg
    m = dict(
        BLOCK_L=bl,
        BLOCK_D=bd,
        PAIRS=pairs,
        ACC=acc_dtype(dtype),
        PREC=kernel_prec(dtype, "ieee"),
        num_warps=warps,
        num_stages=stages,
    )
    m["BLOCK_M" if kind == "fwd" else "BLOCK_N"] = chunk
    return m


def packed_spec(kind: str, dtype: torch.dtype, bl: int, bd: int):
    """The KernelSpec of a packed launch: lse in the accumulation dtype, scale_hi / lo fp32, the rest i32."""
    m = packed_meta(kind, dtype, bl, bd)
    chunk = "BLOCK_M" if kind == "fwd" else "BLOCK_N"
    constexprs = {k: v for k, v in m.items() if not k.startswith("num_")}
    s = make_spec(
        _KERNEL[kind],
        TORCH_TO_SIG[dtype],
        constexprs,
        m["num_warps"],
        m["num_stages"],
        dtype=variant_name(dtype, "ieee"),
        config=f"BL{bl}-BD{bd}-{chunk[-1]}{m[chunk]}-P{m['PAIRS']}-w{m['num_warps']}-s{m['num_stages']}",
        ptr_overrides={"lse_ptr": TORCH_TO_SIG[acc_torch_dtype(dtype)]},
    )
    s.signature["scale_hi"] = s.signature["scale_lo"] = "fp32"
    return s


def packed_specs() -> list:
    """Every packed variant the launchers can use (one per kind, dtype, BLOCK_L, BLOCK_D with tiles)."""
    return [
        packed_spec(kind, dtype, bl, bd)
        for kind in KINDS
        for dtype in FLOAT_DTYPES
        for bl in BL_CLASSES
        for bd in BD_CLASSES
        if PACKED[(kind, dtype_class(dtype), bl, bd)] is not None
    ]


def _launch(kind, q, k, args, scalars, strides):
    B, nh, Lq, hd = q.shape
    m = packed_meta(kind, q.dtype, bl_class(Lq, k.shape[2]), bd_class(hd))
    nbh = B * nh
    check_i32(nbh + m["PAIRS"])
    launch(_KERNEL[kind], (cdiv(nbh, m["PAIRS"]),), *args, nbh, *scalars, *strides, **m)


def attention_packed_fwd(q, k, v, o, lse, scalars):
    """Fills O and lse (attention_fwd_triton's outputs) for checked, non-empty inputs (uses_packed true);
    scalars = (nh, Lq, Lk, hd, c, scale_hi, scale_lo, add_q, add_q_cls)."""
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    _launch("fwd", q, k, (q, k, v, o, lse), scalars, strides)


def attention_packed_bwd(dout, q, k, v, out, lse, dq, dk, dv, scalars):
    """Fills dq, dk, dv (attention_bwd_triton's outputs) for checked, non-empty inputs, out / lse contiguous;
    scalars as attention_packed_fwd."""
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *dout.stride()[:3])
    _launch("bwd", q, k, (q, k, v, out, dout, lse, dq, dk, dv), scalars, strides)

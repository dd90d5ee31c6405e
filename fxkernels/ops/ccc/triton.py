"""Triton backend of the CCC family (SPEC section 2; math and the backend contract in ./README.md).

Launchers (the five functions of the backend contract):

    knn_cosine_triton(x, k) -> nbr
    edge_max_fwd_triton(ag, nbr) -> (y, arg)
    edge_max_bwd_triton(dy, y, arg, nbr) -> dag
    spatial_edge_fwd_triton(x, nbr, w2, a) -> (y, arg)
    spatial_edge_bwd_triton(dy, y, arg, x, nbr, w2) -> (da, dxg, dw2)

Kernels:

* ``_knn_cosine_kernel`` (rows ``R <= 256``): one program per (batch, block of ``BM`` rows).  The Gram
  block of those rows against all ``R`` rows (padded to ``RP``, a power of two) and the squared norms of
  all rows are accumulated over the feature axis in registers (``tl.dot`` with ``"ieee"`` input precision
  for fp32, never tf32; fp64 math for fp64), ``sim = dot / (max(|x_r|, eps) max(|x_q|, eps))`` with IEEE
  division / square root, then ``k`` rounds of: row max, smallest column attaining it, store, mask it out
  (ties -> lower index, as a stable descending sort).  The ``R x R`` matrix never goes to memory.
* ``_knn_cosine_tiled_kernel`` (``R > 256`` and ``k <= 64``): the same per row block, streamed over
  column tiles of ``BN``, merging each similarity tile into a running sorted top-``KP`` buffer held in
  registers.  ``R > 256`` with ``k > 64`` falls back to ``knn_cosine_ref`` (which normalises first and
  computes the similarity in the input dtype).
* ``_edge_max_fwd_kernel``: per (batch, ``BI`` rows, ``BF`` features): loop over the ``k`` neighbours,
  gather ``g[nbr]``, ``v = ReLU(round_to_dtype(a + g))``, running max and first arg (uint8).
* ``_edge_max_bwd_kernel``: deterministic, no atomics.  The host builds the inverse adjacency of each
  batch (CSR: a stable argsort of ``nbr.view(B, C*k)`` groups the entries ``e = i*k + s`` by target ``j``
  in increasing ``(i, s)`` order, offsets by ``searchsorted``).  One program per (batch, target row ``j``,
  ``BF`` features) writes ``da[j] = dy[j] (y[j] > 0)`` and sums ``da[i] [arg[i] == s]`` over the entries of
  ``j`` in order (fp32 / fp64), into ``dag = [da, dg]``.
* ``_spatial_fwd_kernel``: a gather-GEMM with a running max, per (batch, ``BM`` channels, ``BF`` outputs):
  for each ``s``, ``h_s = sum_n x[b, c, nbr[b, n, s]] w2[f, n]`` over ``BK`` chunks of ``n`` (the
  ``(B, C, N, k)`` gathered tensor is never formed), ``v = ReLU(round_to_dtype(a + h_s))``, max / arg.
* ``_spatial_dw2_kernel``: ``dw2[f, n] = sum_{b, c, s} dh_s[b, c, f] x[b, c, nbr[b, n, s]]`` as a
  gather-GEMM per (``BF`` x ``BN`` tile, batch chunk) with ``dh_s = dy (y > 0) [arg == s]`` built on the
  fly; torch sums the per-chunk partials in a fixed order.
* ``_spatial_p_kernel`` + ``_spatial_scatter_kernel`` (``dxg``), for each ``s``: ``P_s^T[b, n, c] =
  sum_f w2[f, n] dh_s[b, c, f]`` (a GEMM into an fp32 / fp64 scratch), then a deterministic scatter through
  the inverse of ``nbr[:, :, s]`` (CSR from a stable argsort): ``acc[b, m, c] += sum_{n: nbr[b,n,s]=m}
  P_s^T[b, n, c]`` with ``n`` increasing, ``s`` outer.  ``da = dy (y > 0)`` is a torch elementwise op.

Accumulation is fp32 for fp32/fp16/bf16 and fp64 for fp64.  The spatial GEMMs use ``tl.dot`` with
PyTorch's fp32 matmul precision (``"tf32"`` only when TF32 matmuls are enabled), the k-NN always
``"ieee"``.  Launch configurations come from a finite set shared with ``aot_specs()`` (for
``python -m fxkernels.aot``), and every runtime argument is unspecialised
(``fxkernels._triton_utils.kernel``), so the AOT-compiled binaries are exactly what runs.
Notes: ``v`` is rounded to bf16 by bit arithmetic (round to nearest even, as the GPU's ``cvt.rn``; the
interpreter's own fp32 -> bf16 cast truncates).  ``dh_s`` / ``dg`` select the winning entries (masked
loads / ``where``), so a non-finite ``dy`` at a non-winning position contributes nothing instead of
``NaN * 0``.  For fp64 the spatial backward GEMM kernels read ``arg`` as an int32 copy (Triton 3.8 cannot
lower an fp64 MMA whose operand mask derives from 8-bit data).  Empty inputs launch nothing.
Neighbour indices are not range-checked (that would need a device sync): they must be valid.
"""

from __future__ import annotations

import operator

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
    round_to,
    variant_name,
)

from .reference import knn_cosine_ref

EPS = 1e-12  # as F.normalize
_EPS = tl.constexpr(EPS)  # the kernels' copy (jit functions read only constexpr globals)
KNN_FUSED_MAX = 256  # rows held entirely in registers by _knn_cosine_kernel
KNN_TILED_KMAX = 64  # largest k of the streamed top-k kernel (R > KNN_FUSED_MAX)
KNN_RP_CLASSES = (16, 32, 64, 128, 256)
KNN_KP_CLASSES = (16, 32, 64)
K_MAX = 255  # arg is uint8
# Programs aimed at when the dw2 kernel splits the batch into chunks (fixed: results do not depend on
# the GPU model).
_TARGET_PROGRAMS_DW = 512
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# ==================================================================================================
# kernels


@triton.jit
def _max_step(pre, s, best, arg, DT: tl.constexpr):
    """One slot of the running max: v = ReLU(round_to_DT(pre)); a strictly larger v takes the place, so
    the first maximising slot is kept."""
    v = tl.maximum(round_to(pre, DT), 0.0)
    better = v > best
    return tl.where(better, v, best), tl.where(better, s, arg)


@triton.jit
def _store_max(y_ptr, arg_ptr, rows, f, F, best, arg, mask, DT: tl.constexpr):
    """y[rows, f] = best (DT), arg[rows, f] = winning slot (uint8); rows are flat (b * C + c) indices."""
    out = rows.to(tl.int64)[:, None] * F + f[None, :]
    tl.store(y_ptr + out, best.to(DT), mask=mask)
    tl.store(arg_ptr + out, arg.to(tl.uint8), mask=mask)


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
    sim = tl.where(cmask[None, :], sim, float("-inf"))
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
        sim = tl.where(cmask[None, :], sim, float("-inf"))
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


@kernel
def _edge_max_fwd_kernel(
    ag_ptr,
    nbr_ptr,
    y_ptr,
    arg_ptr,
    C,
    F,
    k,
    BI: tl.constexpr,
    BF: tl.constexpr,
    ACC: tl.constexpr,
):
    """y[b,i,f] = max_s ReLU(round(a[b,i,f] + g[b,nbr[b,i,s],f])), arg = first maximising s."""
    DT = ag_ptr.dtype.element_ty
    nib = tl.cdiv(C, BI)
    pid = tl.program_id(0)
    b = pid // nib
    i = (pid % nib) * BI + tl.arange(0, BI)
    f = tl.program_id(1) * BF + tl.arange(0, BF)
    im = i < C
    m2 = im[:, None] & (f < F)[None, :]
    ag_base = ag_ptr + b.to(tl.int64) * C * 2 * F
    a = tl.load(ag_base + i[:, None] * (2 * F) + f[None, :], mask=m2, other=0.0).to(ACC)
    nbr_row = nbr_ptr + (b * C + i).to(tl.int64) * k
    best = tl.full([BI, BF], -1.0, dtype=ACC)
    arg = tl.zeros([BI, BF], dtype=tl.int32)
    for s in range(0, k):
        j = tl.load(nbr_row + s, mask=im, other=0)
        g = tl.load(ag_base + j[:, None] * (2 * F) + F + f[None, :], mask=m2, other=0.0).to(ACC)
        best, arg = _max_step(a + g, s, best, arg, DT)
    _store_max(y_ptr, arg_ptr, b * C + i, f, F, best, arg, m2, DT)


@kernel
def _edge_max_bwd_kernel(
    dy_ptr,
    y_ptr,
    arg_ptr,
    order_ptr,
    off_ptr,
    dag_ptr,
    C,
    F,
    k,
    sdb,
    sdc,
    sdf,
    BF: tl.constexpr,
    ACC: tl.constexpr,
):
    """dag[b,j,:F] = dy[b,j] (y[b,j] > 0); dag[b,j,F:] = sum over the CSR entries e = i*k + s of j
    (increasing) of da[b,i] [arg[b,i] == s]."""
    DT = dag_ptr.dtype.element_ty
    pid = tl.program_id(0)  # b * C + j
    b = pid // C
    f = tl.program_id(1) * BF + tl.arange(0, BF)
    fm = f < F
    dy_base = dy_ptr + b.to(tl.int64) * sdb
    j = pid % C
    dyj = tl.load(dy_base + j * sdc + f * sdf, mask=fm, other=0.0)
    yj = tl.load(y_ptr + pid.to(tl.int64) * F + f, mask=fm, other=0.0)
    dag_row = dag_ptr + pid.to(tl.int64) * (2 * F)
    tl.store(dag_row + f, (dyj.to(ACC) * tl.where(yj > 0, 1.0, 0.0)).to(DT), mask=fm)
    start = tl.load(off_ptr + b * (C + 1) + j)
    end = tl.load(off_ptr + b * (C + 1) + j + 1)
    order_base = order_ptr + b.to(tl.int64) * C * k
    acc = tl.zeros([BF], dtype=ACC)
    for e in range(start, end):
        ent = tl.load(order_base + e)
        i = ent // k
        s = ent - i * k
        row = (b * C + i).to(tl.int64)
        dyi = tl.load(dy_base + i * sdc + f * sdf, mask=fm, other=0.0)
        yi = tl.load(y_ptr + row * F + f, mask=fm, other=0.0)
        ai = tl.load(arg_ptr + row * F + f, mask=fm, other=0).to(tl.int32)
        acc += tl.where(ai == s, dyi.to(ACC) * tl.where(yi > 0, 1.0, 0.0), 0.0)
    tl.store(dag_row + F + f, acc.to(DT), mask=fm)


@kernel
def _spatial_fwd_kernel(
    x_ptr,
    nbrt_ptr,
    w_ptr,
    a_ptr,
    y_ptr,
    arg_ptr,
    C,
    N,
    F,
    k,
    sxb,
    sxc,
    sxn,
    swf,
    swn,
    sab,
    sac,
    saf,
    BM: tl.constexpr,
    BF: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """y[b,c,f] = max_s ReLU(round(a[b,c,f] + sum_n w2[f,n] x[b,c,nbrt[b,s,n]])), arg = first max s."""
    DT = x_ptr.dtype.element_ty
    ncb = tl.cdiv(C, BM)
    pid = tl.program_id(0)
    b = pid // ncb
    c = (pid % ncb) * BM + tl.arange(0, BM)
    f = tl.program_id(1) * BF + tl.arange(0, BF)
    cm = c < C
    fm = f < F
    m2 = cm[:, None] & fm[None, :]
    x_base = x_ptr + b.to(tl.int64) * sxb
    a_base = a_ptr + b.to(tl.int64) * sab
    best = tl.full([BM, BF], -1.0, dtype=ACC)
    arg = tl.zeros([BM, BF], dtype=tl.int32)
    for s in range(0, k):
        nb_base = nbrt_ptr + (b * k + s).to(tl.int64) * N
        acc = tl.zeros([BM, BF], dtype=ACC)
        for n0 in range(0, N, BK):
            n = n0 + tl.arange(0, BK)
            nm = n < N
            idx = tl.load(nb_base + n, mask=nm, other=0)
            xg = tl.load(
                x_base + c[:, None] * sxc + idx[None, :] * sxn, mask=cm[:, None] & nm[None, :], other=0.0
            )
            wt = tl.load(
                w_ptr + f[None, :] * swf + n[:, None] * swn, mask=nm[:, None] & fm[None, :], other=0.0
            )
            acc = tl.dot(xg, wt, acc, input_precision=PREC, out_dtype=ACC)
        av = tl.load(a_base + c[:, None] * sac + f[None, :] * saf, mask=m2, other=0.0).to(ACC)
        best, arg = _max_step(av + acc, s, best, arg, DT)
    _store_max(y_ptr, arg_ptr, b * C + c, f, F, best, arg, m2, DT)


@kernel
def _spatial_dw2_kernel(
    dy_ptr,
    y_ptr,
    arg_ptr,
    x_ptr,
    nbrt_ptr,
    out_ptr,
    B,
    C,
    N,
    F,
    k,
    b_per_prog,
    sdb,
    sdc,
    sdf,
    sxb,
    sxc,
    sxn,
    BF: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """out[chunk, f, n] = sum_{b in chunk, c, s} dh_s[b,c,f] x[b,c,nbrt[b,s,n]],
    dh_s = dy (y > 0) [arg == s]; K loop over (b, c chunk, s)."""
    t = tl.program_id(0)
    chunk = tl.program_id(1)
    tiles_n = tl.cdiv(N, BN)
    f = (t // tiles_n) * BF + tl.arange(0, BF)
    n = (t % tiles_n) * BN + tl.arange(0, BN)
    fm = f < F
    nm = n < N
    acc = tl.zeros([BF, BN], dtype=ACC)
    b_lo = chunk * b_per_prog
    for bi in range(0, tl.minimum(b_per_prog, B - b_lo)):
        bb = b_lo + bi
        dy_base = dy_ptr + bb.to(tl.int64) * sdb
        x_base = x_ptr + bb.to(tl.int64) * sxb
        for c0 in range(0, C, BK):
            cc = c0 + tl.arange(0, BK)
            ccm = cc < C
            mt = fm[:, None] & ccm[None, :]
            yo = (bb * C + cc).to(tl.int64)[None, :] * F + f[:, None]
            yt = tl.load(y_ptr + yo, mask=mt, other=0.0)
            at = tl.load(arg_ptr + yo, mask=mt, other=0).to(tl.int32)
            live = mt & (yt > 0)
            for s in range(0, k):
                idx = tl.load(nbrt_ptr + (bb * k + s).to(tl.int64) * N + n, mask=nm, other=0)
                xg = tl.load(
                    x_base + cc[:, None] * sxc + idx[None, :] * sxn,
                    mask=ccm[:, None] & nm[None, :],
                    other=0.0,
                )
                # dh_s^T (BF, BK) as a masked load: the dot operand comes straight from memory
                dh = tl.load(dy_base + cc[None, :] * sdc + f[:, None] * sdf, mask=live & (at == s), other=0.0)
                acc = tl.dot(dh, xg, acc, input_precision=PREC, out_dtype=ACC)
    out_base = out_ptr + chunk.to(tl.int64) * F * N
    tl.store(out_base + f[:, None] * N + n[None, :], acc, mask=fm[:, None] & nm[None, :])


@kernel
def _spatial_p_kernel(
    dy_ptr,
    y_ptr,
    arg_ptr,
    w_ptr,
    p_ptr,
    C,
    N,
    F,
    s,
    sdb,
    sdc,
    sdf,
    swf,
    swn,
    BN: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """p[b, n, c] = sum_f w2[f, n] dh_s[b, c, f] for one s (fp32 / fp64 scratch)."""
    nnb = tl.cdiv(N, BN)
    pid = tl.program_id(0)
    b = pid // nnb
    n = (pid % nnb) * BN + tl.arange(0, BN)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    nm = n < N
    cm = c < C
    dy_base = dy_ptr + b.to(tl.int64) * sdb
    acc = tl.zeros([BN, BC], dtype=ACC)
    for f0 in range(0, F, BK):
        ff = f0 + tl.arange(0, BK)
        ffm = ff < F
        wt = tl.load(w_ptr + ff[None, :] * swf + n[:, None] * swn, mask=nm[:, None] & ffm[None, :], other=0.0)
        mt = ffm[:, None] & cm[None, :]
        yo = (b * C + c).to(tl.int64)[None, :] * F + ff[:, None]
        yt = tl.load(y_ptr + yo, mask=mt, other=0.0)
        at = tl.load(arg_ptr + yo, mask=mt, other=0).to(tl.int32)
        # dh_s^T (BK, BC) as a masked load: the dot operand comes straight from memory
        dh = tl.load(
            dy_base + c[None, :] * sdc + ff[:, None] * sdf, mask=mt & (yt > 0) & (at == s), other=0.0
        )
        acc = tl.dot(wt, dh, acc, input_precision=PREC, out_dtype=ACC)
    out = (b * N + n).to(tl.int64)[:, None] * C + c[None, :]
    tl.store(p_ptr + out, acc, mask=nm[:, None] & cm[None, :])


@kernel
def _spatial_scatter_kernel(
    p_ptr,
    order_ptr,
    off_ptr,
    acc_ptr,
    C,
    N,
    k,
    s,
    first,
    BC: tl.constexpr,
):
    """acc[b, m, c] (+)= sum over the CSR entries n of m in the inverse of nbr[b, :, s] (n increasing)
    of p[b, n, c]; ``first`` != 0 starts from zero."""
    pid = tl.program_id(0)  # b * N + m
    b = pid // N
    m = pid % N
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    row = (b * k + s).to(tl.int64)
    start = tl.load(off_ptr + row * (N + 1) + m)
    end = tl.load(off_ptr + row * (N + 1) + m + 1)
    acc_row = acc_ptr + pid.to(tl.int64) * C
    acc = tl.load(acc_row + c, mask=cm & (first == 0), other=0.0)
    p_base = p_ptr + b.to(tl.int64) * N * C
    for e in range(start, end):
        n = tl.load(order_ptr + row * N + e)
        acc += tl.load(p_base + n.to(tl.int64) * C + c, mask=cm, other=0.0)
    tl.store(acc_row + c, acc, mask=cm)


# ==================================================================================================
# launch configurations (shared by the launchers and aot_specs, so the AOT compiles what runs)


def _fma_dot(dtype, prec) -> bool:
    """fp32 "ieee" and fp64 dots run on FMA / DMMA paths with small K tiles."""
    return dtype == torch.float64 or (dtype == torch.float32 and prec == "ieee")


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


def _edge_fwd_meta(dtype):
    return dict(BI=8, BF=128, ACC=acc_dtype(dtype), num_warps=4, num_stages=1)


def _edge_bwd_meta(dtype):
    return dict(BF=128, ACC=acc_dtype(dtype), num_warps=4, num_stages=1)


def _spatial_fwd_meta(dtype, prec):
    return dict(
        BM=64,
        BF=64,
        BK=16 if _fma_dot(dtype, prec) else 32,
        ACC=acc_dtype(dtype),
        PREC=prec,
        num_warps=8,
        num_stages=1,
    )


def _spatial_dw2_meta(dtype, prec):
    return dict(
        BF=64,
        BN=64,
        BK=16 if _fma_dot(dtype, prec) else 32,
        ACC=acc_dtype(dtype),
        PREC=prec,
        num_warps=8,
        num_stages=1 if _fma_dot(dtype, prec) else 2,  # FMA dots spill with 2 stages
    )


def _spatial_p_meta(dtype, prec):
    return dict(
        BN=64,
        BC=32,
        BK=16 if _fma_dot(dtype, prec) else 32,
        ACC=acc_dtype(dtype),
        PREC=prec,
        num_warps=4,
        num_stages=2,
    )


def _scatter_meta(dtype):
    return dict(BC=64, num_warps=2, num_stages=1)


def _bwd_arg(arg, dtype):
    """arg as the spatial backward GEMM kernels read it: uint8, or int32 for fp64 (Triton 3.8 derives the
    fp64 MMA operand width from the 8-bit arg in the dot operand's mask chain and fails to lower it)."""
    return arg.to(torch.int32) if dtype == torch.float64 else arg


def _bwd_arg_sig(dtype):
    return "i32" if dtype == torch.float64 else "u8"


_CONSTEXPR_KEYS = ("RP", "BM", "BK", "BN", "KP", "BI", "BF", "BC", "ACC", "PREC")


def _spec(fn, dtype, prec, meta, ptr_overrides=None, ptr_dtype=None):
    constexprs = {k: v for k, v in meta.items() if k in _CONSTEXPR_KEYS}
    cfg = "-".join(f"{k}{v}" for k, v in constexprs.items() if k not in ("ACC", "PREC"))
    cfg += f"-w{meta['num_warps']}-s{meta['num_stages']}"
    return make_spec(
        fn,
        ptr_dtype or TORCH_TO_SIG[dtype],
        constexprs,
        meta["num_warps"],
        meta["num_stages"],
        dtype=variant_name(dtype, prec),
        config=cfg,
        ptr_overrides=ptr_overrides,
    )


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    specs = []
    for dtype in _DTYPES:
        for rp in KNN_RP_CLASSES:
            specs.append(_spec(_knn_cosine_kernel, dtype, "ieee", _knn_meta(dtype, rp), {"nbr_ptr": "i64"}))
        for kp in KNN_KP_CLASSES:
            specs.append(
                _spec(_knn_cosine_tiled_kernel, dtype, "ieee", _knn_tiled_meta(dtype, kp), {"nbr_ptr": "i64"})
            )
        specs.append(
            _spec(
                _edge_max_fwd_kernel,
                dtype,
                "ieee",
                _edge_fwd_meta(dtype),
                {"nbr_ptr": "i64", "arg_ptr": "u8"},
            )
        )
        specs.append(
            _spec(
                _edge_max_bwd_kernel,
                dtype,
                "ieee",
                _edge_bwd_meta(dtype),
                {"arg_ptr": "u8", "order_ptr": "i32", "off_ptr": "i32"},
            )
        )
    for dtype, prec in DTYPE_VARIANTS:
        acc_sig = TORCH_TO_SIG[acc_torch_dtype(dtype)]
        specs.append(
            _spec(
                _spatial_fwd_kernel,
                dtype,
                prec,
                _spatial_fwd_meta(dtype, prec),
                {"nbrt_ptr": "i32", "arg_ptr": "u8"},
            )
        )
        specs.append(
            _spec(
                _spatial_dw2_kernel,
                dtype,
                prec,
                _spatial_dw2_meta(dtype, prec),
                {"nbrt_ptr": "i32", "arg_ptr": _bwd_arg_sig(dtype), "out_ptr": acc_sig},
            )
        )
        specs.append(
            _spec(
                _spatial_p_kernel,
                dtype,
                prec,
                _spatial_p_meta(dtype, prec),
                {"arg_ptr": _bwd_arg_sig(dtype), "p_ptr": acc_sig},
            )
        )
    for dtype in (torch.float32, torch.float64):  # the scatter works on the fp32 / fp64 scratch
        specs.append(
            _spec(
                _spatial_scatter_kernel,
                dtype,
                "ieee",
                _scatter_meta(dtype),
                {"order_ptr": "i32", "off_ptr": "i32"},
            )
        )
    return specs


# ==================================================================================================
# argument checks


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError("ccc: " + msg)


def _check_float(name, t, ndim):
    _need(
        isinstance(t, torch.Tensor) and t.dim() == ndim and t.dtype in FLOAT_DTYPES,
        f"{name} must be a {ndim}-D float32/float64/float16/bfloat16 tensor, got "
        + (f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__),
    )


def _check_like(name, t, shape, dtype, device):
    _need(
        isinstance(t, torch.Tensor)
        and tuple(t.shape) == tuple(shape)
        and t.dtype == dtype
        and t.device == device,
        f"{name} must be {tuple(shape)} {dtype} on {device}, got "
        + (f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__),
    )


def _check_nbr(nbr, B, rows, device, what):
    _need(
        isinstance(nbr, torch.Tensor) and nbr.dim() == 3 and nbr.dtype == torch.int64,
        f"nbr must be a 3-D int64 tensor ({what}), got "
        + (f"{tuple(nbr.shape)} {nbr.dtype}" if isinstance(nbr, torch.Tensor) else type(nbr).__name__),
    )
    _need(
        nbr.shape[0] == B and nbr.shape[1] == rows,
        f"nbr must be ({B}, {rows}, k) ({what}), got {tuple(nbr.shape)}",
    )
    _need(nbr.device == device, f"nbr must be on {device}, got {nbr.device}")
    k = nbr.shape[2]
    _need(1 <= k <= K_MAX, f"nbr.shape[-1] = k must be in [1, {K_MAX}], got {k}")
    return k


# ==================================================================================================
# launchers


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


def edge_max_fwd_triton(ag: torch.Tensor, nbr: torch.Tensor):
    """Channel graph forward: y = max_s ReLU(round(a + g[nbr[..., s]])), arg = first maximising s.

    ag: (B, C, 2F) float; nbr: (B, C, k) int64 in [0, C), 1 <= k <= 255.
    Returns (y (B, C, F) ag's dtype, arg (B, C, F) uint8), contiguous.
    """
    _check_float("ag", ag, 3)
    B, C, F2 = ag.shape
    _need(F2 % 2 == 0, f"the last dim of ag must be even (a = ag[..., :F], g = ag[..., F:]), got {F2}")
    F = F2 // 2
    k = _check_nbr(nbr, B, C, ag.device, "(B, C, k) from ag")
    y = torch.empty((B, C, F), dtype=ag.dtype, device=ag.device)
    arg = torch.empty((B, C, F), dtype=torch.uint8, device=ag.device)
    if y.numel() == 0:
        return y, arg
    ag = ag.contiguous()
    nbr = nbr.contiguous()
    check_i32(B * C * F2, B * C * k)
    meta = _edge_fwd_meta(ag.dtype)
    grid = (B * cdiv(C, meta["BI"]), cdiv(F, meta["BF"]))
    launch(_edge_max_fwd_kernel, grid, ag, nbr, y, arg, C, F, k, **meta)
    return y, arg


def _csr(keys: torch.Tensor, n: int):
    """Inverse adjacency of the last dim: (order, offsets), int32.  keys: (..., L) ints in [0, n);
    order[..., p] = the positions l sorted by (keys[..., l], l); offsets[..., m] = #{l : keys[..., l] < m}."""
    vals, order = torch.sort(keys, dim=-1, stable=True)
    bounds = torch.arange(n + 1, device=keys.device, dtype=vals.dtype)
    bounds = bounds.expand(*keys.shape[:-1], n + 1).contiguous()
    offsets = torch.searchsorted(vals, bounds, out_int32=True)
    return order.to(torch.int32).contiguous(), offsets.contiguous()


def edge_max_bwd_triton(dy: torch.Tensor, y: torch.Tensor, arg: torch.Tensor, nbr: torch.Tensor):
    """Channel graph backward (deterministic, no atomics). Returns dag = [da, dg]: (B, C, 2F), contiguous.

    da = dy (y > 0); dg[b,j] = sum over (i, s) with nbr[b,i,s] == j and arg[b,i] == s of da[b,i], in
    increasing (i, s) order (fp32 / fp64 accumulation).
    """
    _check_float("y", y, 3)
    B, C, F = y.shape
    _check_like("dy", dy, (B, C, F), y.dtype, y.device)
    _check_like("arg", arg, (B, C, F), torch.uint8, y.device)
    k = _check_nbr(nbr, B, C, y.device, "(B, C, k) from y")
    if y.numel() == 0:
        return torch.zeros((B, C, 2 * F), dtype=y.dtype, device=y.device)
    dag = torch.empty((B, C, 2 * F), dtype=y.dtype, device=y.device)
    y = y.contiguous()
    arg = arg.contiguous()
    order, offsets = _csr(nbr.reshape(B, C * k), C)
    sd = dy.stride()
    check_i32(*sd, B * C * 2 * F, B * C * k, (C - 1) * sd[1] + (F - 1) * sd[2])
    meta = _edge_bwd_meta(y.dtype)
    launch(
        _edge_max_bwd_kernel,
        (B * C, cdiv(F, meta["BF"])),
        dy,
        y,
        arg,
        order,
        offsets,
        dag,
        C,
        F,
        k,
        *sd,
        **meta,
    )
    return dag


def _check_spatial(x, nbr, w2):
    _check_float("x", x, 3)
    B, C, N = x.shape
    k = _check_nbr(nbr, B, N, x.device, "(B, N, k) from x")
    _need(
        isinstance(w2, torch.Tensor) and w2.dim() == 2 and w2.shape[1] == N,
        f"w2 must be (F, N={N}), got "
        + (f"{tuple(w2.shape)}" if isinstance(w2, torch.Tensor) else type(w2).__name__),
    )
    _check_like("w2", w2, tuple(w2.shape), x.dtype, x.device)
    return B, C, N, w2.shape[0], k


def _nbr_t(nbr):
    """(B, N, k) int64 -> (B, k, N) int32 contiguous (coalesced per-s index loads)."""
    return nbr.transpose(1, 2).to(torch.int32).contiguous()


def spatial_edge_fwd_triton(x: torch.Tensor, nbr: torch.Tensor, w2: torch.Tensor, a: torch.Tensor):
    """Spatial graph forward: y = max_s ReLU(round(a + h_s)), h_s[b,c,f] = sum_n w2[f,n] x[b,c,nbr[b,n,s]].

    x: (B, C, N), nbr: (B, N, k) int64 in [0, N), w2: (F, N), a: (B, C, F) (any strides).
    Returns (y (B, C, F) x's dtype, arg (B, C, F) uint8), contiguous.
    """
    B, C, N, F, k = _check_spatial(x, nbr, w2)
    _check_like("a", a, (B, C, F), x.dtype, x.device)
    y = torch.empty((B, C, F), dtype=x.dtype, device=x.device)
    arg = torch.empty((B, C, F), dtype=torch.uint8, device=x.device)
    if y.numel() == 0:
        return y, arg
    if N == 0:  # h_s = 0
        y.copy_(torch.relu(a))
        arg.zero_()
        return y, arg
    nbrt = _nbr_t(nbr)
    sx, sw, sa = x.stride(), w2.stride(), a.stride()
    check_i32(*sx, *sw, *sa, B * k * N, B * C * F, (C - 1) * sx[1] + (N - 1) * sx[2])
    check_i32((F - 1) * sw[0] + (N - 1) * sw[1], (C - 1) * sa[1] + (F - 1) * sa[2])
    meta = _spatial_fwd_meta(x.dtype, dot_precision(x.dtype))
    grid = (B * cdiv(C, meta["BM"]), cdiv(F, meta["BF"]))
    launch(_spatial_fwd_kernel, grid, x, nbrt, w2, a, y, arg, C, N, F, k, *sx, *sw, *sa, **meta)
    return y, arg


def _batch_split(B: int, programs_per_batch: int, target: int):
    """(number of batch chunks, batch items per chunk) so that chunks * programs_per_batch ~ target."""
    nb = max(1, min(B, target // max(1, programs_per_batch)))
    per = cdiv(B, nb)
    return cdiv(B, per), per


def spatial_edge_bwd_triton(
    dy: torch.Tensor, y: torch.Tensor, arg: torch.Tensor, x: torch.Tensor, nbr: torch.Tensor, w2: torch.Tensor
):
    """Spatial graph backward (deterministic, no atomics). Returns (da, dxg, dw2), contiguous, x's dtype:

    da = dy (y > 0), dh_s = da [arg == s],
    dxg[b,c,m] = sum over (n, s) with nbr[b,n,s] == m of (dh_s w2)[b,c,n]  (s outer, n increasing),
    dw2[f,n] = sum over b, c, s of dh_s[b,c,f] x[b,c,nbr[b,n,s]].
    """
    B, C, N, F, k = _check_spatial(x, nbr, w2)
    _check_like("y", y, (B, C, F), x.dtype, x.device)
    _check_like("dy", dy, (B, C, F), x.dtype, x.device)
    _check_like("arg", arg, (B, C, F), torch.uint8, x.device)
    dtype, dev = x.dtype, x.device
    if B * C * F * N == 0:
        return (
            (dy * (y > 0)).contiguous(),
            torch.zeros((B, C, N), dtype=dtype, device=dev),
            torch.zeros((F, N), dtype=dtype, device=dev),
        )
    acc_t = acc_torch_dtype(dtype)
    prec = dot_precision(dtype)
    y = y.contiguous()
    arg = arg.contiguous()
    da = (dy * (y > 0)).contiguous()
    nbrt = _nbr_t(nbr)
    sd, sx, sw = dy.stride(), x.stride(), w2.stride()
    check_i32(*sd, *sx, *sw, B * k * N, B * C * F, B * N * C, F * N)
    check_i32((C - 1) * sd[1] + (F - 1) * sd[2], (C - 1) * sx[1] + (N - 1) * sx[2])
    check_i32((F - 1) * sw[0] + (N - 1) * sw[1])

    # dw2: gather-GEMM over (b, c, s), per-chunk partials summed by torch in a fixed order
    meta = _spatial_dw2_meta(dtype, prec)
    tiles = cdiv(F, meta["BF"]) * cdiv(N, meta["BN"])
    nb, per = _batch_split(B, tiles, _TARGET_PROGRAMS_DW)
    part = torch.empty((nb, F, N), dtype=acc_t, device=dev)
    argk = _bwd_arg(arg, dtype)
    launch(_spatial_dw2_kernel, (tiles, nb), dy, y, argk, x, nbrt, part, B, C, N, F, k, per, *sd, *sx, **meta)
    dw2 = part.sum(0).to(dtype) if nb > 1 else part[0].to(dtype)

    # dxg: per s, P_s^T = (dh_s w2)^T into a scratch, then a CSR scatter through the inverse of nbr[:, :, s]
    order, offsets = _csr(nbrt, N)  # (B, k, N), (B, k, N + 1)
    pmeta = _spatial_p_meta(dtype, prec)
    smeta = _scatter_meta(acc_t)
    p = torch.empty((B, N, C), dtype=acc_t, device=dev)
    accum = torch.empty((B, N, C), dtype=acc_t, device=dev)
    pgrid = (B * cdiv(N, pmeta["BN"]), cdiv(C, pmeta["BC"]))
    sgrid = (B * N, cdiv(C, smeta["BC"]))
    for s in range(k):
        launch(_spatial_p_kernel, pgrid, dy, y, argk, w2, p, C, N, F, s, *sd, *sw, **pmeta)
        launch(_spatial_scatter_kernel, sgrid, p, order, offsets, accum, C, N, k, s, int(s == 0), **smeta)
    dxg = torch.empty((B, C, N), dtype=dtype, device=dev)
    dxg.copy_(accum.transpose(1, 2))
    return da, dxg, dw2


# ==================================================================================================
# AOT launch coverage


def aot_launch_samples() -> None:
    """Call every launcher on small CPU tensors for every dtype variant and launch class.
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
            for R in (5, 20, 40, 100, 256):
                knn_cosine_triton(torch.zeros(1, R, 3, dtype=dtype), 2)
            for kk in (3, 20, 64):
                knn_cosine_triton(torch.zeros(1, 300, 3, dtype=dtype), kk)
            B, C, N, F, k = 2, 5, 7, 3, 2
            nbr = torch.zeros(B, C, k, dtype=torch.int64)
            y, arg = edge_max_fwd_triton(torch.zeros(B, C, 2 * F, dtype=dtype), nbr)
            edge_max_bwd_triton(torch.zeros_like(y), y, arg, nbr)
            x = torch.zeros(B, C, N, dtype=dtype)
            nbr = torch.zeros(B, N, k, dtype=torch.int64)
            w2 = torch.zeros(F, N, dtype=dtype)
            y, arg = spatial_edge_fwd_triton(x, nbr, w2, torch.zeros(B, C, F, dtype=dtype))
            spatial_edge_bwd_triton(torch.zeros_like(y), y, arg, x, nbr, w2)
    finally:
        if has_new:
            m.fp32_precision = saved
        else:  # pragma: no cover
            m.allow_tf32 = saved

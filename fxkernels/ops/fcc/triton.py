"""Triton backend of the FCC family (math and contract in ./README.md).

Launchers (backend contract; validation is the caller's job):

    fcc_fwd_triton(x, w1, w2, p1, p2, b1, b2, mode) -> y
    fcc_bwd_triton(dy, x, w1, w2, p1, p2, b1, b2, mode) -> (dx, dw1, dw2, dp1, dp2, db1, db2)

Every kernel works on a 2-D "view" of a ``(b, c)`` plane given by strides, with the (first) pass axis
first: ``V`` / ``VH`` use the plain ``(H, W)`` plane, ``H`` / ``HV`` the same kernels on the transposed
view ``(W, H)`` (``Y = X' A^T`` is ``(A X'^T)^T``).  So there is one kernel per job, inputs of any
strides run without copies, and outputs are contiguous.

Whole-plane kernels, when both plane dims are <= ``PLANE_MAX`` (64; 32 for fp32 "ieee", whose FMA
``tl.dot`` spills registers at 64): one program per ``(b, c)`` plane, padded to an ``S x S`` tile
(``S`` in 16/32/64), everything on chip, ``PASSES`` = 1 (modes V/H) or 2 (modes VH/HV):
  * ``_fcc2d_fwd_kernel``: ``Z = A1 (X + P1) + b1`` with the circulant ``A1[i, m] = U1[(m - i) % L1]``
    gathered from the weight row; for two passes ``Z' = Z + P2`` (zero in the padding, rounded to the
    input dtype like the unfused chain) and ``Y = Z' A2^T + b2``.
  * ``_fcc2d_bwd_kernel``: recomputes ``Z'`` (two passes), ``dZ' = dY A2``, ``dX = A1^T dZ'`` (written),
    and reduces the plane's weight-gradient matrices ``M1 = dZ' X'^T``, ``M2 = dY^T Z'`` in registers to
    their wrapped diagonals ``dU[s] = sum_i M[i, (i + s) % L]`` (``tl.gather``), plus ``dP1`` (row sums
    of ``dX``), ``dP2`` (column sums of ``dZ'``; their total is ``db1``) and ``sum dY``.  These per-plane
    partials (``B x C x L``, fp32 / fp64) are summed over the batch by torch in a fixed order:
    deterministic, no atomics.
Tiled single pass, for planes with a dim > the limit (plane = ``L x N``, ``N`` the other axis):
  * ``_fcc_fwd_kernel``: ``Y = A X' + b`` as a tiled GEMM per plane, grid ``(B*C, L/BM, N/BN)``, K loop
    over ``L``; with ``flip=1`` it multiplies by ``A^T`` instead, which is ``dX = A^T dY``.
  * ``_fcc_bwd_dw_kernel``: ``M_c = sum_b dY_b X'_b^T`` (``L x L`` per channel) as a GEMM whose K loop
    runs over (batch chunk, n); grid ``(C, tiles, batch chunks)``, one partial per chunk.  Torch sums
    the partials in a fixed order and takes the wrapped diagonals; ``dP`` / ``db`` are torch sums.
  Two-pass modes on such planes run as two chained tiled passes (the intermediate is stored in the
  input dtype, and recomputed in the backward).

Accumulation is fp32 for fp32/fp16/bf16 and fp64 for fp64; fp32 ``tl.dot`` uses ``"ieee"`` unless
PyTorch's fp32 matmul TF32 switch is on (``torch.backends.cuda.matmul.allow_tf32`` / ``fp32_precision``),
then ``"tf32"``.  Launch configurations come from a small finite set (tile class per dtype variant);
``aot_specs()`` lists all of them for ``python -m fxkernels.aot``, and every runtime argument is
unspecialised (``fxkernels._triton_utils.kernel``), so the AOT-compiled binaries are exactly what runs.
"""

import functools

import torch
import triton
import triton.language as tl

from fxkernels._triton_utils import (
    DTYPE_VARIANTS,
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
    tile_class,
    variant_name,
)

MODE_V, MODE_H, MODE_VH, MODE_HV = 0, 1, 2, 3
PLANE_MAX = 64  # whole-plane kernels hold a (b, c) plane padded to <= 64 x 64 on chip
TILE_CLASSES = (16, 32, 64)
# Programs aimed at when the tiled dU kernel splits the batch into chunks (fixed, so results do not
# depend on the GPU model).
_TARGET_PROGRAMS_DW = 512


# ==================================================================================================
# kernels


@kernel
def _fcc_fwd_kernel(
    x_ptr,
    y_ptr,
    u_ptr,
    p_ptr,
    b_ptr,
    C,
    L,
    N,
    sxb,
    sxc,
    sxl,
    sxn,
    syb,
    syc,
    syl,
    syn,
    suc,
    spc,
    has_p,
    has_b,
    flip,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """Y[i, n] = b + sum_m A[i, m] (X[m, n] + P[m]), A[i, m] = U[(m - i) % L]  (flip=1: U[(i - m) % L])."""
    DT = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b = pid // C
    c = pid % C
    i = tl.program_id(1) * BM + tl.arange(0, BM)
    n = tl.program_id(2) * BN + tl.arange(0, BN)
    imask = i < L
    nmask = n < N
    x_base = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
    u_base = u_ptr + c * suc
    sgn = 1 - 2 * flip
    acc = tl.zeros([BM, BN], dtype=ACC)
    for k0 in range(0, L, BK):
        m = k0 + tl.arange(0, BK)
        mmask = m < L
        d = (m[None, :] - i[:, None]) * sgn
        d = tl.where(d < 0, d + L, d)
        a = tl.load(u_base + d, mask=imask[:, None] & mmask[None, :], other=0.0)
        xt = tl.load(
            x_base + m[:, None] * sxl + n[None, :] * sxn, mask=mmask[:, None] & nmask[None, :], other=0.0
        )
        pm = tl.load(p_ptr + c * spc + m, mask=mmask & (has_p != 0), other=0.0)
        xt = (xt.to(ACC) + pm.to(ACC)[:, None]).to(DT)
        acc = tl.dot(a, xt, acc, input_precision=PREC)
    bias = tl.load(b_ptr + c, mask=has_b != 0, other=0.0)
    acc += bias.to(ACC)
    y_base = y_ptr + b.to(tl.int64) * syb + c.to(tl.int64) * syc
    tl.store(
        y_base + i[:, None] * syl + n[None, :] * syn,
        acc.to(y_ptr.dtype.element_ty),
        mask=imask[:, None] & nmask[None, :],
    )


@kernel
def _fcc_bwd_dw_kernel(
    dy_ptr,
    x_ptr,
    p_ptr,
    m_ptr,
    B,
    C,
    L,
    N,
    b_per_prog,
    sdb,
    sdc,
    sdl,
    sdn,
    sxb,
    sxc,
    sxl,
    sxn,
    spc,
    has_p,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """M[chunk, c, i, m] = sum_{b in chunk, n} dY[b, c, i, n] (X[b, c, m, n] + P[c, m])."""
    c = tl.program_id(0)
    t = tl.program_id(1)
    chunk = tl.program_id(2)
    tiles_m = tl.cdiv(L, BN)
    i = (t // tiles_m) * BM + tl.arange(0, BM)
    m = (t % tiles_m) * BN + tl.arange(0, BN)
    imask = i < L
    mmask = m < L
    pm = tl.load(p_ptr + c * spc + m, mask=mmask & (has_p != 0), other=0.0).to(ACC)
    acc = tl.zeros([BM, BN], dtype=ACC)
    b_lo = chunk * b_per_prog
    for bi in range(0, tl.minimum(b_per_prog, B - b_lo)):
        bb = b_lo + bi
        dy_base = dy_ptr + bb.to(tl.int64) * sdb + c.to(tl.int64) * sdc
        x_base = x_ptr + bb.to(tl.int64) * sxb + c.to(tl.int64) * sxc
        for k0 in range(0, N, BK):
            k = k0 + tl.arange(0, BK)
            kmask = k < N
            g = tl.load(
                dy_base + i[:, None] * sdl + k[None, :] * sdn, mask=imask[:, None] & kmask[None, :], other=0.0
            )
            xt = tl.load(
                x_base + k[:, None] * sxn + m[None, :] * sxl, mask=kmask[:, None] & mmask[None, :], other=0.0
            )
            xt = (xt.to(ACC) + pm[None, :]).to(g.dtype)  # rows k >= N meet zero columns of g
            acc = tl.dot(g, xt, acc, input_precision=PREC)
    m_base = m_ptr + (chunk * C + c).to(tl.int64) * L * L
    tl.store(m_base + i[:, None] * L + m[None, :], acc, mask=imask[:, None] & mmask[None, :])


@triton.jit
def _diag_sum(m, L, N: tl.constexpr):
    """out[s] = sum_i m[i, (i + s) % L] for an (N x N) register tile (rows / cols >= L are zero)."""
    k = tl.arange(0, N)
    idx = (k[:, None] + k[None, :]) % L
    return tl.sum(tl.gather(m, idx, axis=1), axis=0)


@kernel
def _fcc2d_fwd_kernel(
    x_ptr,
    y_ptr,
    u1_ptr,
    u2_ptr,
    p1_ptr,
    p2_ptr,
    b1_ptr,
    b2_ptr,
    C,
    L1,
    L2,
    sxb,
    sxc,
    sx1,
    sx2,
    syb,
    syc,
    sy1,
    sy2,
    su1,
    su2,
    sp1,
    sp2,
    has_p1,
    has_p2,
    has_b1,
    has_b2,
    R: tl.constexpr,
    Q: tl.constexpr,
    PASSES: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """One whole (b, c) plane (L1 x L2, padded to R x Q) per program.
    PASSES=2: Z' = A1 (X + P1) + b1 + P2 (zero in the padding, rounded to the input dtype),
              Y = Z' A2^T + b2.        PASSES=1: Y = A1 (X + P1) + b1."""
    DT = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b = pid // C
    c = pid % C
    r = tl.arange(0, R)
    q = tl.arange(0, Q)
    rm = r < L1
    qm = q < L2
    pm2 = rm[:, None] & qm[None, :]
    d1 = r[None, :] - r[:, None]
    d1 = tl.where(d1 < 0, d1 + L1, d1)
    a1 = tl.load(u1_ptr + c * su1 + d1, mask=rm[:, None] & rm[None, :], other=0.0)  # A1[i, m]
    p1 = tl.load(p1_ptr + c * sp1 + r, mask=rm & (has_p1 != 0), other=0.0).to(ACC)
    bias1 = tl.load(b1_ptr + c, mask=has_b1 != 0, other=0.0).to(ACC)
    x_base = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
    xt = tl.load(x_base + r[:, None] * sx1 + q[None, :] * sx2, mask=pm2, other=0.0)
    xp = tl.where(pm2, xt.to(ACC) + p1[:, None], 0.0).to(DT)
    z = tl.dot(a1, xp, input_precision=PREC, out_dtype=ACC) + bias1
    if PASSES == 2:
        d2 = q[:, None] - q[None, :]
        d2 = tl.where(d2 < 0, d2 + L2, d2)
        a2t = tl.load(u2_ptr + c * su2 + d2, mask=qm[:, None] & qm[None, :], other=0.0)  # A2^T[q, j]
        p2 = tl.load(p2_ptr + c * sp2 + q, mask=qm & (has_p2 != 0), other=0.0).to(ACC)
        bias2 = tl.load(b2_ptr + c, mask=has_b2 != 0, other=0.0).to(ACC)
        zp = tl.where(pm2, z + p2[None, :], 0.0).to(DT)
        y = tl.dot(zp, a2t, input_precision=PREC, out_dtype=ACC) + bias2
    else:
        y = z
    y_base = y_ptr + b.to(tl.int64) * syb + c.to(tl.int64) * syc
    tl.store(y_base + r[:, None] * sy1 + q[None, :] * sy2, y.to(DT), mask=pm2)


@kernel
def _fcc2d_bwd_kernel(
    dy_ptr,
    x_ptr,
    dx_ptr,
    u1_ptr,
    u2_ptr,
    p1_ptr,
    p2_ptr,
    b1_ptr,
    du1_ptr,
    dp1_ptr,
    du2_ptr,
    dp2_ptr,
    db_ptr,
    C,
    L1,
    L2,
    sdb,
    sdc,
    sd1,
    sd2,
    sxb,
    sxc,
    sx1,
    sx2,
    sgb,
    sgc,
    sg1,
    sg2,
    su1,
    su2,
    sp1,
    sp2,
    has_p1,
    has_p2,
    has_b1,
    R: tl.constexpr,
    Q: tl.constexpr,
    PASSES: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """Backward of _fcc2d_fwd_kernel on one plane: writes dX and the plane's partials (fp32 / fp64)
    du1[s] = sum_i M1[i, (i+s)%L1] with M1 = dZ' X'^T, dp1 = row sums of dX; for PASSES=2 also
    du2 from M2 = dY^T Z', dp2 = column sums of dZ' = dY A2 (their total is db1) and db = sum dY (db2);
    for PASSES=1 (dZ' = dY) db = sum dY is db1."""
    DT = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b = pid // C
    c = pid % C
    r = tl.arange(0, R)
    q = tl.arange(0, Q)
    rm = r < L1
    qm = q < L2
    pm2 = rm[:, None] & qm[None, :]
    rr = rm[:, None] & rm[None, :]
    p1 = tl.load(p1_ptr + c * sp1 + r, mask=rm & (has_p1 != 0), other=0.0).to(ACC)
    x_base = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
    xt = tl.load(x_base + r[:, None] * sx1 + q[None, :] * sx2, mask=pm2, other=0.0)
    xp = tl.where(pm2, xt.to(ACC) + p1[:, None], 0.0).to(DT)
    dy_base = dy_ptr + b.to(tl.int64) * sdb + c.to(tl.int64) * sdc
    g = tl.load(dy_base + r[:, None] * sd1 + q[None, :] * sd2, mask=pm2, other=0.0).to(DT)
    db = tl.sum(tl.sum(g.to(ACC), axis=1), axis=0)
    if PASSES == 2:
        qq = qm[:, None] & qm[None, :]
        d1 = r[None, :] - r[:, None]
        d1 = tl.where(d1 < 0, d1 + L1, d1)
        a1 = tl.load(u1_ptr + c * su1 + d1, mask=rr, other=0.0)  # A1[i, m] = U1[(m - i) % L1]
        p2 = tl.load(p2_ptr + c * sp2 + q, mask=qm & (has_p2 != 0), other=0.0).to(ACC)
        bias1 = tl.load(b1_ptr + c, mask=has_b1 != 0, other=0.0).to(ACC)
        z = tl.dot(a1, xp, input_precision=PREC, out_dtype=ACC)
        zp = tl.where(pm2, z + bias1 + p2[None, :], 0.0).to(DT)
        m2 = tl.dot(tl.trans(g), zp, input_precision=PREC, out_dtype=ACC)  # M2 = dY^T Z'
        tl.store(du2_ptr + pid.to(tl.int64) * L2 + q, _diag_sum(m2, L2, Q), mask=qm)
        d2 = q[None, :] - q[:, None]
        d2 = tl.where(d2 < 0, d2 + L2, d2)
        a2 = tl.load(u2_ptr + c * su2 + d2, mask=qq, other=0.0)  # A2[j, q] = U2[(q - j) % L2]
        dz = tl.dot(g, a2, input_precision=PREC, out_dtype=ACC)  # dZ' = dY A2
        tl.store(dp2_ptr + pid.to(tl.int64) * L2 + q, tl.sum(dz, axis=0), mask=qm)
        gz = dz.to(DT)
    else:
        gz = g
    d1t = r[:, None] - r[None, :]
    d1t = tl.where(d1t < 0, d1t + L1, d1t)
    a1t = tl.load(u1_ptr + c * su1 + d1t, mask=rr, other=0.0)  # A1^T[m, i]
    dxp = tl.dot(a1t, gz, input_precision=PREC, out_dtype=ACC)  # dX = A1^T dZ'
    dx_base = dx_ptr + b.to(tl.int64) * sgb + c.to(tl.int64) * sgc
    tl.store(dx_base + r[:, None] * sg1 + q[None, :] * sg2, dxp.to(DT), mask=pm2)
    tl.store(dp1_ptr + pid.to(tl.int64) * L1 + r, tl.sum(dxp, axis=1), mask=rm)
    m1 = tl.dot(gz, tl.trans(xp), input_precision=PREC, out_dtype=ACC)  # M1 = dZ' X'^T
    tl.store(du1_ptr + pid.to(tl.int64) * L1 + r, _diag_sum(m1, L1, R), mask=rm)
    tl.store(db_ptr + pid, db)


# ==================================================================================================
# launch configurations (shared by the launchers and aot_specs, so the AOT compiles what runs)


def _fma_dot(dtype, prec) -> bool:
    """fp32 "ieee" dots run on FMA units (no tensor cores): registers grow with the K tile."""
    return dtype == torch.float32 and prec == "ieee"


def _fwd_meta(dtype, prec, L):
    """Tiled single pass (planes with a dim > PLANE_MAX): BM = class(L), BN = 64."""
    bm = tile_class(L)
    bk = 16 if _fma_dot(dtype, prec) else bm
    return dict(
        BM=bm, BN=64, BK=bk, ACC=acc_dtype(dtype), PREC=prec, num_warps=4 if bm <= 32 else 8, num_stages=2
    )


def _dw_meta(dtype, prec, L):
    bm = tile_class(L)
    bk = 16 if (_fma_dot(dtype, prec) or dtype == torch.float64) else 32
    return dict(
        BM=bm, BN=bm, BK=bk, ACC=acc_dtype(dtype), PREC=prec, num_warps=4 if bm <= 32 else 8, num_stages=2
    )


def _plane_max(dtype, prec) -> int:
    """Largest plane dim of the whole-plane kernels. fp32 "ieee" (FMA dots) spills at 64: tiled there."""
    return 32 if _fma_dot(dtype, prec) else PLANE_MAX


def _plane_warps(dtype, prec, S, bwd):
    if S == 32 and bwd and (_fma_dot(dtype, prec) or dtype == torch.float64):
        return 8  # 4 warps spill a little here
    return {16: 2, 32: 4, 64: 8}[S]


def _plane_meta(dtype, prec, L1, L2, passes, bwd):
    """Whole-plane kernels: a square tile class S = class(max(L1, L2))."""
    S = tile_class(max(L1, L2))
    return dict(
        R=S,
        Q=S,
        PASSES=passes,
        ACC=acc_dtype(dtype),
        PREC=prec,
        num_warps=_plane_warps(dtype, prec, S, bwd),
        num_stages=1,
    )


_CONSTEXPR_KEYS = ("BM", "BN", "BK", "R", "Q", "PASSES", "ACC", "PREC")


def _spec(fn, dtype, prec, meta, scratch_ptrs=()):
    constexprs = {k: v for k, v in meta.items() if k in _CONSTEXPR_KEYS}
    acc_sig = TORCH_TO_SIG[acc_torch_dtype(dtype)]
    cfg = "-".join(f"{k}{v}" for k, v in constexprs.items() if k not in ("ACC", "PREC"))
    cfg += f"-w{meta['num_warps']}-s{meta['num_stages']}"
    return make_spec(
        fn,
        TORCH_TO_SIG[dtype],
        constexprs,
        meta["num_warps"],
        meta["num_stages"],
        dtype=variant_name(dtype, prec),
        config=cfg,
        ptr_overrides={p: acc_sig for p in scratch_ptrs},
    )


_BWD_SCRATCH = ("du1_ptr", "dp1_ptr", "du2_ptr", "dp2_ptr", "db_ptr")


def aot_specs() -> "list[KernelSpec]":
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    specs = []
    for dtype, prec in DTYPE_VARIANTS:
        for t in TILE_CLASSES:
            specs.append(_spec(_fcc_fwd_kernel, dtype, prec, _fwd_meta(dtype, prec, t)))
            specs.append(
                _spec(_fcc_bwd_dw_kernel, dtype, prec, _dw_meta(dtype, prec, t), scratch_ptrs=("m_ptr",))
            )
            for passes in (1, 2):
                if t > _plane_max(dtype, prec):
                    continue
                specs.append(
                    _spec(_fcc2d_fwd_kernel, dtype, prec, _plane_meta(dtype, prec, t, t, passes, False))
                )
                specs.append(
                    _spec(
                        _fcc2d_bwd_kernel,
                        dtype,
                        prec,
                        _plane_meta(dtype, prec, t, t, passes, True),
                        scratch_ptrs=_BWD_SCRATCH,
                    )
                )
    return specs


# ==================================================================================================
# launchers


def _batch_split(B: int, programs_per_batch: int, target: int):
    """(number of batch chunks, batch items per chunk) so that chunks * programs_per_batch ~ target."""
    if B <= 0:
        return 1, 1
    nb = max(1, min(B, target // max(1, programs_per_batch)))
    per = cdiv(B, nb)
    return cdiv(B, per), per


def _row(t):
    """A (C, L) weight / pos with unit stride along L (a copy only for odd views)."""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _strides4(t, a1, a2):
    return t.stride(0), t.stride(1), t.stride(a1), t.stride(a2)


def _check_offsets(t, a1, a2):
    s = t.stride()
    check_i32(*s, (t.shape[a1] - 1) * s[a1] + (t.shape[a2] - 1) * s[a2])


@functools.lru_cache(maxsize=64)
def _diag_index(L: int, device: torch.device):
    idx = torch.arange(L, device=device)
    return (idx[:, None] + idx[None, :]) % L  # [i, s] -> (i + s) % L


def _diag_sum_torch(m: torch.Tensor) -> torch.Tensor:
    """(C, L, L) -> (C, L): out[c, s] = sum_i m[c, i, (i + s) % L]."""
    C, L, _ = m.shape
    idx = _diag_index(L, m.device).expand(C, L, L)
    return torch.gather(m, 2, idx).sum(1)


def _axes(mode):
    """(first-pass axis, other / second-pass axis) dims of the (B, C, H, W) tensor for the kernels' view."""
    return (2, 3) if mode in (MODE_V, MODE_VH) else (3, 2)


def _on_chip(x, mode) -> bool:
    a1, a2 = _axes(mode)
    lim = _plane_max(x.dtype, dot_precision(x.dtype))
    return x.shape[a1] <= lim and x.shape[a2] <= lim


def _dummy(t, ref):
    """The tensor, or ``ref`` as a never-read stand-in pointer when it is None."""
    return t if t is not None else ref


def _vec(b):
    """Biases are read at ``b_ptr + c``: unit stride (a copy only for strided views)."""
    return b.contiguous() if b is not None else None


# ---- whole-plane kernels (both plane dims <= PLANE_MAX) ------------------------------------------


def _plane_fwd(x, w1, w2, p1, p2, b1, b2, mode):
    B, C, H, W = x.shape
    a1, a2 = _axes(mode)
    L1, L2 = x.shape[a1], x.shape[a2]
    passes = 2 if mode in (MODE_VH, MODE_HV) else 1
    dtype = x.dtype
    y = torch.empty((B, C, H, W), dtype=dtype, device=x.device)
    w1 = _row(w1)
    w2 = _row(w2) if w2 is not None else w1
    p1 = _row(p1) if p1 is not None else None
    p2 = _row(p2) if p2 is not None else None
    b1, b2 = _vec(b1), _vec(b2)
    meta = _plane_meta(dtype, dot_precision(dtype), L1, L2, passes, False)
    _check_offsets(x, a1, a2)
    check_i32(B * C, w1.stride(0), w2.stride(0))
    launch(
        _fcc2d_fwd_kernel,
        (B * C,),
        x,
        y,
        w1,
        w2,
        _dummy(p1, w1),
        _dummy(p2, w1),
        _dummy(b1, w1),
        _dummy(b2, w1),
        C,
        L1,
        L2,
        *_strides4(x, a1, a2),
        *_strides4(y, a1, a2),
        w1.stride(0),
        w2.stride(0),
        p1.stride(0) if p1 is not None else 0,
        p2.stride(0) if p2 is not None else 0,
        int(p1 is not None),
        int(p2 is not None),
        int(b1 is not None),
        int(b2 is not None),
        **meta,
    )
    return y


def _plane_bwd(dy, x, w1, w2, p1, p2, b1, b2, mode):
    B, C, H, W = x.shape
    a1, a2 = _axes(mode)
    L1, L2 = x.shape[a1], x.shape[a2]
    passes = 2 if mode in (MODE_VH, MODE_HV) else 1
    dtype = x.dtype
    acc_t = acc_torch_dtype(dtype)
    dev = x.device
    dx = torch.empty((B, C, H, W), dtype=dtype, device=dev)
    w1r = _row(w1)
    w2r = _row(w2) if w2 is not None else w1r
    p1r = _row(p1) if p1 is not None else None
    p2r = _row(p2) if p2 is not None else None
    meta = _plane_meta(dtype, dot_precision(dtype), L1, L2, passes, True)
    du1 = torch.empty((B, C, L1), dtype=acc_t, device=dev)
    dp1 = torch.empty((B, C, L1), dtype=acc_t, device=dev)
    du2 = torch.empty((B, C, L2) if passes == 2 else (1,), dtype=acc_t, device=dev)
    dp2 = torch.empty((B, C, L2) if passes == 2 else (1,), dtype=acc_t, device=dev)
    dbp = torch.empty((B, C), dtype=acc_t, device=dev)
    _check_offsets(x, a1, a2)
    _check_offsets(dy, a1, a2)
    check_i32(B * C, B * C * max(L1, L2), w1r.stride(0), w2r.stride(0))
    launch(
        _fcc2d_bwd_kernel,
        (B * C,),
        dy,
        x,
        dx,
        w1r,
        w2r,
        _dummy(p1r, w1r),
        _dummy(p2r, w1r),
        _dummy(_vec(b1), w1r),
        du1,
        dp1,
        du2,
        dp2,
        dbp,
        C,
        L1,
        L2,
        *_strides4(dy, a1, a2),
        *_strides4(x, a1, a2),
        *_strides4(dx, a1, a2),
        w1r.stride(0),
        w2r.stride(0),
        p1r.stride(0) if p1r is not None else 0,
        p2r.stride(0) if p2r is not None else 0,
        int(p1 is not None),
        int(p2 is not None),
        int(b1 is not None),
        **meta,
    )
    # deterministic fixed-order reductions of the per-plane partials over the batch
    dw1 = du1.sum(0).to(w1.dtype)
    dp1_out = dp1.sum(0).to(p1.dtype) if p1 is not None else None
    db = dbp.sum(0)
    if passes == 1:
        return dx, dw1, None, dp1_out, None, (db.to(b1.dtype) if b1 is not None else None), None
    dp2_sum = dp2.sum(0)
    dw2 = du2.sum(0).to(w2.dtype)
    dp2_out = dp2_sum.to(p2.dtype) if p2 is not None else None
    db1_out = dp2_sum.sum(1).to(b1.dtype) if b1 is not None else None
    db2_out = db.to(b2.dtype) if b2 is not None else None
    return dx, dw1, dw2, dp1_out, dp2_out, db1_out, db2_out


# ---- tiled single pass (any size) ----------------------------------------------------------------


def _tiled_fwd(x, w, p, b, vertical, flip=False):
    """One pass (or its dX with flip=True). Returns a contiguous (B, C, H, W) tensor."""
    B, C, H, W = x.shape
    al, an = _axes(MODE_V if vertical else MODE_H)
    L, N = x.shape[al], x.shape[an]
    dtype = x.dtype
    y = torch.empty((B, C, H, W), dtype=dtype, device=x.device)
    w = _row(w)
    p = _row(p) if p is not None else None
    meta = _fwd_meta(dtype, dot_precision(dtype), L)
    _check_offsets(x, al, an)
    check_i32(B * C, w.stride(0))
    grid = (B * C, cdiv(L, meta["BM"]), cdiv(N, meta["BN"]))
    launch(
        _fcc_fwd_kernel,
        grid,
        x,
        y,
        w,
        _dummy(p, w),
        _dummy(_vec(b), w),
        C,
        L,
        N,
        *_strides4(x, al, an),
        *_strides4(y, al, an),
        w.stride(0),
        p.stride(0) if p is not None else 0,
        int(p is not None),
        int(b is not None),
        int(flip),
        **meta,
    )
    return y


def _tiled_bwd(dy, x, w, p, b, vertical):
    """Backward of one tiled pass: (dx, dw, dp, db)."""
    B, C, H, W = x.shape
    al, an = _axes(MODE_V if vertical else MODE_H)
    L, N = x.shape[al], x.shape[an]
    dtype = x.dtype
    acc_t = acc_torch_dtype(dtype)
    dx = _tiled_fwd(dy, w, None, None, vertical, flip=True)

    p_ = _row(p) if p is not None else None
    meta = _dw_meta(dtype, dot_precision(dtype), L)
    tiles = cdiv(L, meta["BM"]) * cdiv(L, meta["BN"])
    nb, per = _batch_split(B, C * tiles, _TARGET_PROGRAMS_DW)
    mpart = torch.empty((nb, C, L, L), dtype=acc_t, device=x.device)
    _check_offsets(dy, al, an)
    _check_offsets(x, al, an)
    check_i32(B, C, tiles)
    launch(
        _fcc_bwd_dw_kernel,
        (C, tiles, nb),
        dy,
        x,
        _dummy(p_, w),
        mpart,
        B,
        C,
        L,
        N,
        per,
        *_strides4(dy, al, an),
        *_strides4(x, al, an),
        p_.stride(0) if p_ is not None else 0,
        int(p_ is not None),
        **meta,
    )
    dw = _diag_sum_torch(mpart.sum(0)).to(w.dtype)
    dp = dx.sum(dim=(0, an), dtype=acc_t).to(p.dtype) if p is not None else None
    db = dy.sum(dim=(0, 2, 3), dtype=acc_t).to(b.dtype) if b is not None else None
    return dx, dw, dp, db


# ---- entry points ----------------------------------------------------------------------------------


def _check_args(x, w1, w2, p1, p2, b1, b2, mode, dy=None):
    """Cheap consistency checks (the shared Python layer validates properly; this only guards the
    kernels' memory accesses against a mismatched call)."""
    if mode not in (MODE_V, MODE_H, MODE_VH, MODE_HV):
        raise ValueError(f"fcc: unknown mode {mode}")
    if x.dim() != 4 or x.dtype not in TORCH_TO_SIG:
        raise ValueError(f"fcc: x must be a 4-D float tensor, got {tuple(x.shape)} {x.dtype}")
    two = mode in (MODE_VH, MODE_HV)
    if not two and any(t is not None for t in (w2, p2, b2)):
        raise ValueError("fcc: w2 / p2 / b2 must be None for the single-pass modes")
    if two and w2 is None:
        raise ValueError("fcc: w2 is required for the two-pass modes")
    _, C, H, W = x.shape
    L1, L2 = (H, W) if mode in (MODE_V, MODE_VH) else (W, H)
    for name, t, shape in (
        ("w1", w1, (C, L1)),
        ("p1", p1, (C, L1)),
        ("b1", b1, (C,)),
        ("w2", w2, (C, L2)),
        ("p2", p2, (C, L2)),
        ("b2", b2, (C,)),
        ("dy", dy, tuple(x.shape)),
    ):
        if t is not None and (tuple(t.shape) != shape or t.dtype != x.dtype or t.device != x.device):
            raise ValueError(
                f"fcc: {name} must be {shape} {x.dtype} on {x.device}, "
                f"got {tuple(t.shape)} {t.dtype} on {t.device}"
            )


def fcc_fwd_triton(x, w1, w2, p1, p2, b1, b2, mode):
    """Forward of FCC (see module docstring). Returns a contiguous (B, C, H, W) tensor."""
    _check_args(x, w1, w2, p1, p2, b1, b2, mode)
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if _on_chip(x, mode):
        return _plane_fwd(x, w1, w2, p1, p2, b1, b2, mode)
    if mode in (MODE_V, MODE_H):
        return _tiled_fwd(x, w1, p1, b1, vertical=(mode == MODE_V))
    v1 = mode == MODE_VH  # large planes: two chained tiled passes
    z = _tiled_fwd(x, w1, p1, b1, vertical=v1)
    return _tiled_fwd(z, w2, p2, b2, vertical=not v1)


def fcc_bwd_triton(dy, x, w1, w2, p1, p2, b1, b2, mode):
    """Backward of FCC: (dx, dw1, dw2, dp1, dp2, db1, db2), None where the input is None."""
    _check_args(x, w1, w2, p1, p2, b1, b2, mode, dy)
    if x.numel() == 0:
        zero = lambda t: torch.zeros_like(t) if t is not None else None  # noqa: E731
        return (
            torch.zeros(x.shape, dtype=x.dtype, device=x.device),
            zero(w1),
            zero(w2),
            zero(p1),
            zero(p2),
            zero(b1),
            zero(b2),
        )
    if _on_chip(x, mode):
        return _plane_bwd(dy, x, w1, w2, p1, p2, b1, b2, mode)
    if mode in (MODE_V, MODE_H):
        dx, dw1, dp1, db1 = _tiled_bwd(dy, x, w1, p1, b1, vertical=(mode == MODE_V))
        return dx, dw1, None, dp1, None, db1, None
    v1 = mode == MODE_VH  # large planes: recompute the intermediate, then two tiled backwards
    z = _tiled_fwd(x, w1, p1, b1, vertical=v1)
    dz, dw2, dp2, db2 = _tiled_bwd(dy, z, w2, p2, b2, vertical=not v1)
    dx, dw1, dp1, db1 = _tiled_bwd(dz, x, w1, p1, b1, vertical=v1)
    return dx, dw1, dw2, dp1, dp2, db1, db2


# ==================================================================================================
# AOT launch coverage


def aot_launch_samples() -> None:
    """Call both launchers on small CPU tensors for every dtype variant, mode and tile class (plus the
    chained fallback). ``fxkernels.aot`` runs this inside ``record_launches()`` (nothing executes) and
    checks that every recorded launch is one of ``aot_specs()``."""
    m = torch.backends.cuda.matmul
    has_new = isinstance(getattr(m, "fp32_precision", None), str)
    saved = m.fp32_precision if has_new else m.allow_tf32
    shapes = [(16, 16), (32, 32), (64, 64), (7, 31), (5, 70), (70, 5), (20, 80), (80, 20), (130, 9)]
    try:
        for dtype, prec in DTYPE_VARIANTS:
            if has_new:
                m.fp32_precision = "tf32" if prec == "tf32" else "ieee"
            else:  # pragma: no cover - older torch
                m.allow_tf32 = prec == "tf32"
            for H, W in shapes:
                for mode in (MODE_V, MODE_H, MODE_VH, MODE_HV):
                    x = torch.zeros(1, 1, H, W, dtype=dtype)
                    L1 = H if mode in (MODE_V, MODE_VH) else W
                    L2 = W if mode == MODE_VH else H
                    w1 = p1 = torch.zeros(1, L1, dtype=dtype)
                    b1 = torch.zeros(1, dtype=dtype)
                    two = mode in (MODE_VH, MODE_HV)
                    w2 = p2 = torch.zeros(1, L2, dtype=dtype) if two else None
                    b2 = b1 if two else None
                    fcc_fwd_triton(x, w1, w2, p1, p2, b1, b2, mode)
                    fcc_bwd_triton(x, x, w1, w2, p1, p2, b1, b2, mode)
    finally:
        if has_new:
            m.fp32_precision = saved
        else:  # pragma: no cover
            m.allow_tf32 = saved

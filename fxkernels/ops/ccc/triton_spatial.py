"""CCC Triton backend: the spatial-graph gather-GEMM edge max and its deterministic backward (kernels
described in triton.py)."""

from __future__ import annotations

import torch
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
)

from .triton_common import (
    _check_float,
    _check_like,
    _check_nbr,
    _csr,
    _fma_dot,
    _max_step,
    _need,
    _spec,
    _store_max,
)

# Programs aimed at when the dw2 kernel splits the batch into chunks (fixed: results do not depend on
# the GPU model).
_TARGET_PROGRAMS_DW = 512


# ==================================================================================================
# kernels


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
    dh_s = dy [not y <= 0] [arg == s]; K loop over (b, c chunk, s)."""
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
            live = mt & ~(yt <= 0)  # a NaN output passes dy, as torch.relu's backward
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
            dy_base + c[None, :] * sdc + ff[:, None] * sdf, mask=mt & ~(yt <= 0) & (at == s), other=0.0
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
# launch configurations (shared by the launchers and the AOT specs)


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


def spatial_specs() -> list[KernelSpec]:
    """Every spatial-graph kernel variant the launchers can use."""
    specs = []
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
# launchers


def _relu_grad_torch(dy, y):
    """da = dy where y is not <= 0, else 0, contiguous (a select, as torch.relu's backward)."""
    return torch.where(y <= 0, torch.zeros((), dtype=dy.dtype, device=dy.device), dy).contiguous()


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

    da = dy [not y <= 0] (a NaN y passes dy, as torch.relu), dh_s = da [arg == s],
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
            _relu_grad_torch(dy, y),
            torch.zeros((B, C, N), dtype=dtype, device=dev),
            torch.zeros((F, N), dtype=dtype, device=dev),
        )
    acc_t = acc_torch_dtype(dtype)
    prec = dot_precision(dtype)
    y = y.contiguous()
    arg = arg.contiguous()
    da = _relu_grad_torch(dy, y)
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

"""CCC Triton backend: the channel-graph edge max and its deterministic backward (kernels described in
triton.py)."""

from __future__ import annotations

import torch
import triton.language as tl

from fxkernels._triton_utils import KernelSpec, acc_dtype, cdiv, check_i32, kernel, launch

from .triton_common import (
    _DTYPES,
    _check_float,
    _check_like,
    _check_nbr,
    _csr,
    _max_step,
    _need,
    _relu_grad,
    _spec,
    _store_max,
)

# ==================================================================================================
# kernels


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
    """dag[b,j,:F] = dy[b,j] [not y[b,j] <= 0]; dag[b,j,F:] = sum over the CSR entries e = i*k + s of j
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
    tl.store(dag_row + f, _relu_grad(dyj.to(ACC), yj).to(DT), mask=fm)
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
        acc += tl.where(ai == s, _relu_grad(dyi.to(ACC), yi), 0.0)
    tl.store(dag_row + F + f, acc.to(DT), mask=fm)


# ==================================================================================================
# launch configurations (shared by the launchers and the AOT specs)


def _edge_fwd_meta(dtype):
    return dict(BI=8, BF=128, ACC=acc_dtype(dtype), num_warps=4, num_stages=1)


def _edge_bwd_meta(dtype):
    return dict(BF=128, ACC=acc_dtype(dtype), num_warps=4, num_stages=1)


def edge_specs() -> list[KernelSpec]:
    """Every channel-graph kernel variant the launchers can use."""
    specs = []
    for dtype in _DTYPES:
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
    return specs


# ==================================================================================================
# launchers


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


def edge_max_bwd_triton(dy: torch.Tensor, y: torch.Tensor, arg: torch.Tensor, nbr: torch.Tensor):
    """Channel graph backward (deterministic, no atomics). Returns dag = [da, dg]: (B, C, 2F), contiguous.

    da = dy [not y <= 0]; dg[b,j] = sum over (i, s) with nbr[b,i,s] == j and arg[b,i] == s of da[b,i], in
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

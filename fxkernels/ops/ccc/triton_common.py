"""Shared pieces of the CCC Triton backend (README.md, "Backend contract"): constants, the running-max
jit helpers of the edge kernels, the argument checks, the CSR builder and the AOT spec builder."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fxkernels._triton_utils import FLOAT_DTYPES, TORCH_TO_SIG, make_spec, round_to, variant_name

EPS = 1e-12  # as F.normalize
_EPS = tl.constexpr(EPS)  # the kernels' copy (jit functions read only constexpr globals)
K_MAX = 255  # arg is uint8
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# ==================================================================================================
# jit helpers of the edge-max kernels


@triton.jit
def _max_step(pre, s, best, arg, DT: tl.constexpr):
    """One slot of the running max: v = ReLU(round_to_DT(pre)) with NaN propagating (as torch.relu; the
    hardware max would drop it); a strictly larger v takes the place, so the first maximising slot is kept,
    and the first NaN wins and stays (as torch.max)."""
    r = round_to(pre, DT)
    v = tl.where(r < 0, 0.0, r)
    better = (v > best) | ((v != v) & (best == best))
    return tl.where(better, v, best), tl.where(better, s, arg)


@triton.jit
def _relu_grad(dy, y):
    """dy where y is not <= 0, else 0 (a select, as torch.relu's backward: a NaN output passes dy, a
    non-finite dy of a masked element gives 0)."""
    return tl.where(y <= 0, 0.0, dy)


@triton.jit
def _store_max(y_ptr, arg_ptr, rows, f, F, best, arg, mask, DT: tl.constexpr):
    """y[rows, f] = best (DT), arg[rows, f] = winning slot (uint8); rows are flat (b * C + c) indices."""
    out = rows.to(tl.int64)[:, None] * F + f[None, :]
    tl.store(y_ptr + out, best.to(DT), mask=mask)
    tl.store(arg_ptr + out, arg.to(tl.uint8), mask=mask)


# ==================================================================================================
# AOT specs


def _fma_dot(dtype, prec) -> bool:
    """fp32 "ieee" and fp64 dots run on FMA / DMMA paths with small K tiles."""
    return dtype == torch.float64 or (dtype == torch.float32 and prec == "ieee")


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


# ==================================================================================================
# argument checks and the inverse adjacency


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


def _csr(keys: torch.Tensor, n: int):
    """Inverse adjacency of the last dim: (order, offsets), int32.  keys: (..., L) ints in [0, n);
    order[..., p] = the positions l sorted by (keys[..., l], l); offsets[..., m] = #{l : keys[..., l] < m}."""
    vals, order = torch.sort(keys, dim=-1, stable=True)
    bounds = torch.arange(n + 1, device=keys.device, dtype=vals.dtype)
    bounds = bounds.expand(*keys.shape[:-1], n + 1).contiguous()
    offsets = torch.searchsorted(vals, bounds, out_int32=True)
    return order.to(torch.int32).contiguous(), offsets.contiguous()

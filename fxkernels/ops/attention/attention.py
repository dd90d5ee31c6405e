"""Public op `attention`: softmax attention with MViTv2's decomposed rel-pos bias and residual pooling, fused
(math and backend contract in README.md).

The kit op `fxkernels::attention` (fxkernels/ops/opkit.py) takes q, k, v and the per-query bias projections
`rel` (B, nh, Nq, Tk+Hk+Wk); the public function builds `rel` from the raw tables (`rel_pos_gather` in plain
PyTorch, then the projection: `rel_project`, a C++ kit op for the cpu backend, PyTorch einsums otherwise), so
the kernels never see an (Lq, Lk) matrix and the tables' gradients come from autograd through the gather.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._backend import BACKENDS, default_backend
from ..._checks import check_same, check_tensor
from ..opkit import FusedOp, empty_if_none
from .reference import _acc_dtype, attention_ref, rel_bias, rel_pos_gather, residual_rows
from .rel_project import rel_project

OP = "attention"
KERNELS = {"triton": True, "cpu": "attention_fwd"}
MAX_HD = 256  # widest head of the fused kernels
# On CPU tensors "auto" sends attention without a bias to torch SDPA (its flash CPU kernel) unless the sequences
# are short (Lq, Lk <= PACKED_MAX_L: the cpu kernel's packed path, faster than SDPA and the reference there,
# forward + backward), and biased attention to the cpu kernel: benchmarks/bench_attention.py (MViT shapes) and
# benchmarks/bench_attention_stt.py (STT's short sequences) measure these choices.
CPU_PLAIN_TO_SDPA = True
PACKED_MAX_L = 64  # the short-sequence path of the cpu and triton kernels (one key tile, a head per task)


def _launchers(backend: str):
    if backend == "triton":
        from . import triton as mod

        return mod.attention_fwd_triton, mod.attention_bwd_triton
    from . import cpp as mod

    return mod.attention_fwd_cpp, mod.attention_bwd_cpp


# ----------------------------------------------------------------------------------------------- checks
def _check_thw(name: str, thw, L: int, c: int, tensor: str) -> tuple:
    if (
        not isinstance(thw, (tuple, list))
        or len(thw) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in thw)
    ):
        raise ValueError(f"fxkernels.{OP}: {name} must be 3 ints (T, H, W), got {thw!r}")
    if min(thw) < 1:
        raise ValueError(f"fxkernels.{OP}: {name} must be positive, got {tuple(thw)}")
    if c + math.prod(thw) != L:
        raise ValueError(
            f"fxkernels.{OP}: {name} = {tuple(thw)} does not multiply out to {tensor}'s {L} tokens: "
            f"{'1 (cls) + ' if c else ''}T*H*W = {c + math.prod(thw)}"
        )
    return tuple(thw)


def _check_inputs(q, k, v, scale, thw_q, thw_k, tables, has_cls, dropout_p):
    check_tensor(OP, "q", q, 4, shape_desc="(B, nh, Lq, hd)")
    check_tensor(OP, "k", k, 4, shape_desc="(B, nh, Lk, hd)")
    check_tensor(OP, "v", v, 4, shape_desc="(B, nh, Lk, hd)")
    check_same(OP, "q", q, k=k, v=v)
    B, nh, Lq, hd = q.shape
    if k.shape[0] != B or k.shape[1] != nh or k.shape[3] != hd:
        raise ValueError(
            f"fxkernels.{OP}: k must be (B, nh, Lk, hd) = ({B}, {nh}, Lk, {hd}) to match q {tuple(q.shape)}, "
            f"got {tuple(k.shape)}"
        )
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"fxkernels.{OP}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    Lk = k.shape[2]
    c = int(bool(has_cls))
    if Lk < 1 or hd < 1:
        raise ValueError(f"fxkernels.{OP}: k needs at least one token and hd >= 1, got k {tuple(k.shape)}")
    if has_cls and Lq < 1:
        raise ValueError(f"fxkernels.{OP}: has_cls=True needs a cls row in q, got Lq = 0")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"fxkernels.{OP}: scale must be a float or None, got {type(scale).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"fxkernels.{OP}: dropout_p must be in [0, 1), got {dropout_p}")
    given = [t is not None for t in tables]
    if any(given) and not all(given):
        raise ValueError(f"fxkernels.{OP}: rel_pos_t, rel_pos_h and rel_pos_w go together: all or none")
    if thw_q is not None:
        thw_q = _check_thw("thw_q", thw_q, Lq, c, "q")
    if thw_k is not None:
        thw_k = _check_thw("thw_k", thw_k, Lk, c, "k")
    if all(given):
        if thw_q is None or thw_k is None:
            raise ValueError(f"fxkernels.{OP}: the rel-pos tables need thw_q and thw_k (the token grids)")
        for name, t in zip(("rel_pos_t", "rel_pos_h", "rel_pos_w"), tables):
            check_tensor(OP, name, t, 2, shape_desc=f"(rows, hd={hd})")
            check_same(OP, "q", q, **{name: t})
            if t.shape[1] != hd:
                raise ValueError(
                    f"fxkernels.{OP}: {name} must be (rows, hd) with q's head width hd = {hd}, got "
                    f"{tuple(t.shape)}"
                )
            if t.shape[0] < 1:
                raise ValueError(f"fxkernels.{OP}: {name} needs at least one row, got {tuple(t.shape)}")
    return thw_q, thw_k


def _why_not(hd: int, dtype: torch.dtype, R: Optional[int]):
    def why(be: str):
        if hd > MAX_HD:
            return f"the fused backends take head widths hd <= {MAX_HD}, got hd={hd}; use backend='reference'"
        if be == "triton":
            from .triton_common import unsupported

            return unsupported(dtype, hd, R)
        return None

    return why


def _packed_ok(be: str, q: Tensor, k: Tensor) -> bool:
    """Whether backend `be` runs this short plain attention on its packed path, forward and backward (the cpu
    kernel: every dtype and head width; triton: the classes with spill-free packed tiles in both kernels)."""
    if be == "cpu":
        return True
    if be == "triton":
        from .triton_packed import uses_packed

        return uses_packed(q, k, None, "fwd") and uses_packed(q, k, None, "bwd")
    return False


# ---------------------------------------------------------------------------------------------- the op
def _forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel: Optional[Tensor],
    scale: float,
    thw_k: list[int],
    has_cls: bool,
    add_q: bool,
    add_q_cls: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return _launchers(backend)[0](q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls)


def _forward_fake(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=_acc_dtype(q.dtype))


def _backward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel: Optional[Tensor],
    out: Tensor,
    lse: Tensor,
    scale: float,
    thw_k: list[int],
    has_cls: bool,
    add_q: bool,
    add_q_cls: bool,
    need_rel: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dq, dk, dv, drel = _launchers(backend)[1](
        dout, q, k, v, rel, out, lse, scale, thw_k, has_cls, add_q, add_q_cls, need_rel
    )
    return dq, dk, dv, empty_if_none(drel if need_rel else None, q)


def _backward_fake(dout, q, k, v, rel, out, lse, scale, thw_k, has_cls, add_q, add_q_cls, need_rel, backend):
    drel = rel.new_empty(rel.shape) if (need_rel and rel is not None) else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), drel


def _setup(ctx, args, output):
    q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls = args
    out, lse = output
    ctx.save_for_backward(q, k, v, rel, out, lse)
    ctx.attrs = (scale, list(thw_k), has_cls, add_q, add_q_cls)


def _grads(ctx, bwd, dout, dlse):
    # lse is an auxiliary output for the backward: its gradient (None or zeros) is not used
    q, k, v, rel, out, lse = ctx.saved_tensors
    need_rel = rel is not None and ctx.needs_input_grad[3]
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv, drel = bwd(dout, q, k, v, rel, out, lse, *ctx.attrs, need_rel)
    return dq, dk, dv, (drel if need_rel else None), None, None, None, None, None


attention_op = FusedOp(
    OP,
    KERNELS,
    forward=_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    setup=_setup,
    grads=_grads,
)


# ------------------------------------------------------------------------------------- the SDPA route
def _sdpa(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls, dropout_p):
    """torch SDPA; a bias is materialised as its float attn_mask (what a user writes without fxkernels)."""
    mask = None
    if rel is not None:
        mask = rel_bias(rel, thw_k).to(q.dtype)
        if has_cls:
            mask = F.pad(mask, (1, 0, 1, 0))
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    r = residual_rows(q.shape[2], has_cls, add_q, add_q_cls, q.device)
    return o if r is None else o + r.to(q.dtype) * q


def choose_backend(
    q: Tensor, k: Tensor, backend: str, biased: bool = False, R: Optional[int] = None, dropout_p: float = 0.0
) -> str:
    """What `attention` runs for these inputs: "reference", "cpu", "triton" or "sdpa" (the "auto" rules of
    its docstring; R = Tk+Hk+Wk of a bias)."""
    if backend not in BACKENDS + ("sdpa",):
        raise ValueError(f"fxkernels.{OP}: backend must be one of {BACKENDS + ('sdpa',)}, got {backend!r}")
    if backend == "sdpa" or dropout_p > 0.0:
        return "sdpa"
    hd = q.shape[-1]
    be = attention_op.resolve(backend, q.device, _why_not(hd, q.dtype, R))
    dev = q.device.type
    auto = backend == "auto" and default_backend() == "auto"
    short = q.shape[2] <= PACKED_MAX_L and k.shape[2] <= PACKED_MAX_L
    if (
        auto
        and not biased
        and not (short and _packed_ok(be, q, k))
        and (dev == "cuda" or (dev == "cpu" and CPU_PLAIN_TO_SDPA))
    ):
        return "sdpa"
    if auto and dev == "cuda" and be == "reference" and hd <= MAX_HD:
        return (
            "sdpa"  # a class the Triton tiles do not take (fp32 / fp64 wide heads): SDPA, bias materialised
        )
    return be


# ------------------------------------------------------------------------------------ public function
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: Optional[float] = None,
    *,
    thw_q: Optional[Sequence[int]] = None,
    thw_k: Optional[Sequence[int]] = None,
    rel_pos_t: Optional[Tensor] = None,
    rel_pos_h: Optional[Tensor] = None,
    rel_pos_w: Optional[Tensor] = None,
    has_cls: bool = False,
    add_q: bool = False,
    add_q_cls: bool = False,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Softmax attention with MViTv2's decomposed relative-position bias and residual pooling, fused: the
    (Lq, Lk) scores, bias and probabilities never go to memory, forward or backward.

    O_i = sum_j softmax_j(scale q_i.k_j + bias_ij) v_j + r_i q_i, bias_ij = q_i.(Gt[it,jt] + Gh[ih,jh] +
    Gw[iw,jw]) for grid rows and columns (none for the cls row/column), G = the tables gathered as
    torchvision's `_add_rel_pos` does (interpolated to 2*max(nq, nk)-1 rows, float-ratio distances).

    Args:
        q: (B, nh, Lq, hd), Lq = c + Tq*Hq*Wq with c = int(has_cls); k, v: (B, nh, Lk, hd); one float dtype
            (fp32/fp64/fp16/bf16) and device; any strides.
        scale: the score scale, None = hd**-0.5.
        thw_q, thw_k: the token grids (T, H, W) of q and k (needed with the tables), grid tokens t-major.
        rel_pos_t, rel_pos_h, rel_pos_w: None (plain attention) or the MViTv2 tables (rows, hd), all three.
        has_cls: row 0 of q and k is a class token (no bias on its row or column).
        add_q: residual pooling, O += q on the grid rows (and the cls row too with add_q_cls).
        dropout_p: dropout on the probabilities; > 0 runs torch SDPA with the bias materialised as its
            float attn_mask (the fused kernels have no P-dropout).
        backend: "auto" | "reference" | "cpu" | "triton" | "sdpa". "auto": on CUDA tensors, attention without
            tables goes to torch SDPA (FlashAttention / cuDNN inside torch) and biased attention to Triton;
            on CPU tensors, without tables to torch SDPA (its flash kernel, faster than ours there:
            benchmarks/bench_attention.py) and with tables to the cpu kernel. Short sequences without tables
            (Lq, Lk <= 64, e.g. STT's divided attention) go to the fused kernels' packed path instead of SDPA
            (benchmarks/bench_attention_stt.py) (SDPA would fall back to its
            unfused math kernel for a bias that needs a gradient). hd > 256 uses the reference. The Triton
            tiles do not take fp32 / fp64 with Tk+Hk+Wk > 32 (README "Triton precision and tiles"):
            "auto" runs those through SDPA with the bias materialised on CUDA, backend="triton" raises a
            ValueError naming the class.
    Returns:
        (B, nh, Lq, hd) in q's dtype (fp32 accumulation; fp64 for fp64). Differentiable w.r.t. q, k, v and the
        tables; the fused backward is deterministic (a row pass for dq and the bias rows, a column pass for
        dk, dv; no atomics).
    """
    tables = (rel_pos_t, rel_pos_h, rel_pos_w)
    thw_q, thw_k = _check_inputs(q, k, v, scale, thw_q, thw_k, tables, has_cls, dropout_p)
    has_cls, add_q, add_q_cls = bool(has_cls), bool(add_q), bool(add_q_cls)
    hd = q.shape[-1]
    scale = float(hd**-0.5 if scale is None else scale)
    biased = rel_pos_t is not None
    be = choose_backend(q, k, backend, biased, sum(thw_k) if biased else None, dropout_p)
    if be == "reference":
        return attention_ref(
            q,
            k,
            v,
            scale,
            thw_q=thw_q,
            thw_k=thw_k,
            rel_pos_t=rel_pos_t,
            rel_pos_h=rel_pos_h,
            rel_pos_w=rel_pos_w,
            has_cls=has_cls,
            add_q=add_q,
            add_q_cls=add_q_cls,
        )
    rel = None
    if biased:
        Gt, Gh, Gw = rel_pos_gather(rel_pos_t, rel_pos_h, rel_pos_w, thw_q, thw_k)
        rel = rel_project(q, Gt, Gh, Gw, has_cls, be)
    if be == "sdpa":
        return _sdpa(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls, dropout_p)
    grid_k = list(thw_k) if thw_k is not None else [1, 1, k.shape[2] - int(has_cls)]
    out, _ = attention_op(q, k, v, rel, scale, grid_k, has_cls, add_q, add_q_cls, be)
    return out


__all__ = ["attention", "KERNELS", "MAX_HD"]

"""Pure-PyTorch attention with MViTv2's decomposed relative-position bias: the oracle and the fallback.

The semantics are torchvision's `torchvision.models.video.mvit` (`_add_rel_pos`, `_interpolate`,
`_add_shortcut`); README.md gives the math. Everything here materialises the (Lq, Lk) scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _interpolate(table: Tensor, d: int) -> Tensor:
    """table (n, hd) -> (d, hd), linear interpolation along the rows (torchvision `_interpolate`)."""
    if table.shape[0] == d:
        return table
    return F.interpolate(table.t()[None], size=d, mode="linear")[0].t()


def rel_pos_index(nq: int, nk: int, device=None) -> Tensor:
    """(nq, nk) int64 indices into the interpolated table of 2*max(nq, nk)-1 rows (torchvision's float-ratio
    distances: float32 products, then truncation)."""
    rq = max(nk / nq, 1.0)
    rk = max(nq / nk, 1.0)
    dist = (
        torch.arange(nq, device=device)[:, None] * rq
        - (torch.arange(nk, device=device)[None, :] + (1.0 - nk)) * rk
    )
    return dist.long()


def rel_pos_gather(
    rel_pos_t: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, thw_q: Sequence[int], thw_k: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """The per-axis bias tables: Gt (Tq, Tk, hd), Gh (Hq, Hk, hd), Gw (Wq, Wk, hd).

    G[a, b] = R[idx[a, b]] with R the table interpolated to 2*max(nq, nk)-1 rows. Plain autograd: the
    gradient reaches the tables through the gather and the interpolation.
    """
    out = []
    for table, nq, nk in zip((rel_pos_t, rel_pos_h, rel_pos_w), thw_q, thw_k):
        d = 2 * max(nq, nk) - 1
        idx = rel_pos_index(nq, nk, device=table.device)
        out.append(_interpolate(table, d)[idx])
    return out[0], out[1], out[2]


def _project(r: Tensor, Gt: Tensor, Gh: Tensor, Gw: Tensor) -> Tensor:
    """r (B, nh, Tq, Hq, Wq, hd) -> (B, nh, Tq, Hq, Wq, Tk+Hk+Wk) = [r.Gt[t] | r.Gh[h] | r.Gw[w]]."""
    rt = torch.einsum("bnthwc,tkc->bnthwk", r, Gt)
    rh = torch.einsum("bnthwc,hkc->bnthwk", r, Gh)
    rw = torch.einsum("bnthwc,wkc->bnthwk", r, Gw)
    return torch.cat((rt, rh, rw), dim=-1)


class _RelProject(torch.autograd.Function):
    """rel_pos_project with a backward that builds dr in one buffer (plain autograd through the three einsums
    keeps three q-sized partial gradients and a permuted copy alive at once: the largest term of the fused
    backends' peak memory)."""

    @staticmethod
    def forward(r, Gt, Gh, Gw):
        return _project(r, Gt, Gh, Gw)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, drel):
        r, Gt, Gh, Gw = ctx.saved_tensors
        Tk, Hk = Gt.shape[1], Gh.shape[1]
        dt, dh, dw = drel[..., :Tk], drel[..., Tk : Tk + Hk], drel[..., Tk + Hk :]
        need_r, *need_g = ctx.needs_input_grad
        # the table gradients first: their permuted copies of r are gone before dr is allocated
        gt = torch.einsum("bnthwk,bnthwc->tkc", dt, r) if need_g[0] else None
        gh = torch.einsum("bnthwk,bnthwc->hkc", dh, r) if need_g[1] else None
        gw = torch.einsum("bnthwk,bnthwc->wkc", dw, r) if need_g[2] else None
        dr = None
        if need_r:
            dr = torch.einsum("bnthwk,tkc->bnthwc", dt, Gt)
            dr += torch.einsum("bnthwk,hkc->bnthwc", dh, Gh)
            dr += torch.einsum("bnthwk,wkc->bnthwc", dw, Gw)
        return dr, gt, gh, gw


def rel_pos_project(q: Tensor, Gt: Tensor, Gh: Tensor, Gw: Tensor, has_cls: bool) -> Tensor:
    """rel (B, nh, Nq, Tk+Hk+Wk) = [q_i.Gt[it] | q_i.Gh[ih] | q_i.Gw[iw]] for the grid rows of q, in the
    accumulation dtype (fp32; fp64 for fp64): the kernels' only view of the bias. Differentiable w.r.t. q and
    the three gathered tables."""
    c = int(has_cls)
    B, nh, Lq, hd = q.shape
    Tq, Hq, Wq = Gt.shape[0], Gh.shape[0], Gw.shape[0]
    acc = _acc_dtype(q.dtype)
    R = Gt.shape[1] + Gh.shape[1] + Gw.shape[1]
    r = q[:, :, c:].to(acc).reshape(B, nh, Tq, Hq, Wq, hd)
    return _RelProject.apply(r, Gt.to(acc), Gh.to(acc), Gw.to(acc)).reshape(B, nh, Tq * Hq * Wq, R)


def rel_bias(rel: Tensor, thw_k: Sequence[int]) -> Tensor:
    """The full (B, nh, Nq, Nk) bias from rel: bias[i, (jt, jh, jw)] = rel[i, jt] + rel[i, Tk+jh] +
    rel[i, Tk+Hk+jw] (materialised: reference only)."""
    Tk, Hk, Wk = thw_k
    B, nh, Nq, _ = rel.shape
    rt, rh, rw = rel[..., :Tk], rel[..., Tk : Tk + Hk], rel[..., Tk + Hk :]
    bias = rt[..., :, None, None] + rh[..., None, :, None] + rw[..., None, None, :]
    return bias.reshape(B, nh, Nq, Tk * Hk * Wk)


def residual_rows(Lq: int, has_cls: bool, add_q: bool, add_q_cls: bool, device=None) -> Optional[Tensor]:
    """(Lq, 1) 0/1 mask r_i = add_q and (i >= c or add_q_cls); None when no row gets q added."""
    if not add_q:
        return None
    r = torch.ones(Lq, 1, device=device)
    if has_cls and not add_q_cls:
        r[0] = 0
    return r


def attention_rel_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel: Optional[Tensor],
    scale: float,
    thw_k: Optional[Sequence[int]] = None,
    has_cls: bool = False,
    add_q: bool = False,
    add_q_cls: bool = False,
) -> tuple[Tensor, Tensor]:
    """The kernel-level contract, materialised: (O (B, nh, Lq, hd) in q's dtype, lse (B, nh, Lq) in the
    accumulation dtype) from q, k, v and rel (B, nh, Nq, Tk+Hk+Wk) or None. Computed in the accumulation
    dtype.

    S_ij = scale q_i.k_j + [i>=c][j>=c] bias_ij;  P = softmax_j S;  O_i = sum_j P_ij v_j + r_i q_i.
    """
    c = int(has_cls)
    acc = _acc_dtype(q.dtype)
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    s = scale * (qa @ ka.transpose(-1, -2))
    if rel is not None:
        s = s.clone()
        s[:, :, c:, c:] = s[:, :, c:, c:] + rel_bias(rel.to(acc), thw_k)
    lse = torch.logsumexp(s, dim=-1)
    o = torch.softmax(s, dim=-1) @ va
    r = residual_rows(q.shape[2], has_cls, add_q, add_q_cls, q.device)
    if r is not None:
        o = o + r.to(acc) * qa
    return o.to(q.dtype), lse


def attention_ref(
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
) -> Tensor:
    """Softmax attention with torchvision MViTv2's decomposed rel-pos bias and residual pooling, written as
    torchvision writes it (materialised scores, bias added in place, softmax, shortcut): the oracle.

    q: (B, nh, Lq, hd), k, v: (B, nh, Lk, hd) -> (B, nh, Lq, hd); same arguments as `fxkernels.attention`.
    """
    hd = q.shape[-1]
    scale = hd**-0.5 if scale is None else scale
    c = int(has_cls)
    attn = torch.matmul(scale * q, k.transpose(2, 3))
    if rel_pos_t is not None:
        Gt, Gh, Gw = rel_pos_gather(rel_pos_t, rel_pos_h, rel_pos_w, thw_q, thw_k)
        B, nh, _, _ = q.shape
        Tq, Hq, Wq = thw_q
        r_q = q[:, :, c:].reshape(B, nh, Tq, Hq, Wq, hd)
        rel_t = torch.einsum("bnthwc,tkc->bnthwk", r_q, Gt)
        rel_h = torch.einsum("bnthwc,hkc->bnthwk", r_q, Gh)
        rel_w = torch.einsum("bnthwc,wkc->bnthwk", r_q, Gw)
        bias = (
            rel_t[:, :, :, :, :, :, None, None]
            + rel_h[:, :, :, :, :, None, :, None]
            + rel_w[:, :, :, :, :, None, None, :]
        ).reshape(B, nh, Tq * Hq * Wq, k.shape[2] - c)
        attn = attn.clone()
        attn[:, :, c:, c:] += bias
    attn = attn.softmax(dim=-1)
    x = torch.matmul(attn, v)
    if add_q:
        if add_q_cls or not has_cls:
            x = x + q
        else:
            x = torch.cat((x[:, :, :1], x[:, :, 1:] + q[:, :, 1:]), dim=2)
    return x


__all__ = [
    "attention_ref",
    "attention_rel_ref",
    "rel_pos_gather",
    "rel_pos_project",
    "rel_pos_index",
    "rel_bias",
    "residual_rows",
]


def pool_out_size(n: int, k: int, s: int) -> int:
    """Grid size after a Conv3d / MaxPool3d of kernel k, stride s, padding k//2 (torchvision MViT)."""
    return (n + 2 * (k // 2) - k) // s + 1


def attention_pool_ref(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    thw: Sequence[int],
    has_cls: bool,
    norm_weight: Optional[Tensor] = None,
    norm_bias: Optional[Tensor] = None,
    eps: float = 1e-6,
) -> tuple[Tensor, tuple]:
    """torchvision MViT `Pool` with conv pooling, as torchvision runs it: split the cls row off, depthwise
    Conv3d (padding kernel//2, shared by the heads) on the grid in (B*nh, hd, T, H, W) layout, cls re-prepended,
    LayerNorm over hd on every row (when norm_weight is given).

    x: (B, nh, c + T*H*W, hd), weight: (hd, 1, kt, kh, kw) -> (y (B, nh, c + To*Ho*Wo, hd), (To, Ho, Wo)).
    """
    B, nh, L, hd = x.shape
    c = int(has_cls)
    cls, g = x[:, :, :c], x[:, :, c:]
    g = g.transpose(2, 3).reshape((B * nh, hd) + tuple(thw))
    pad = [s // 2 for s in weight.shape[2:]]
    g = F.conv3d(g, weight, None, list(stride), pad, groups=hd)
    thw_out = tuple(g.shape[2:])
    g = g.reshape(B, nh, hd, math.prod(thw_out)).transpose(2, 3)
    y = torch.cat((cls, g), dim=2)
    if norm_weight is not None:
        y = F.layer_norm(y, (hd,), norm_weight, norm_bias, eps)
    return y, thw_out


__all__ += ["attention_pool_ref", "pool_out_size"]

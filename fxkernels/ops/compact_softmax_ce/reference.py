"""Pure-PyTorch reference of the compact softmax cross-entropy (math in README.md): the oracle and the fallback."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def compact_softmax_ce_rows_ref(
    logits: torch.Tensor, target: torch.Tensor, beta: float = 0.2
) -> torch.Tensor:
    """The per-row losses l_n (N,) in the accumulation dtype (fp64 for fp64 logits, else fp32).

    l_n = -log p_y + beta/2 (KL(u'||p') + KL(p'||u')), p = softmax(z), p' the softmax over the non-target logits
    (the target column masked out), u' uniform over the K = C - 1 non-target classes. Differentiable by autograd.
    """
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.to(acc)
    N, C = z.shape
    K = C - 1
    y = target.view(N, 1)
    mask = torch.zeros(N, C, dtype=torch.bool, device=z.device).scatter_(1, y, True)
    nll = -F.log_softmax(z, dim=1).gather(1, y).squeeze(1)
    logq = F.log_softmax(z.masked_fill(mask, -math.inf), dim=1).masked_fill(mask, 0.0)  # log p'_c, 0 at y
    q = logq.exp().masked_fill(mask, 0.0)  # p'_c, 0 at y
    log_k = math.log(K)
    kl_u_q = ((-log_k - logq).masked_fill(mask, 0.0)).sum(1) / K  # sum_{c!=y} (1/K) log(1 / (K p'_c))
    kl_q_u = (q * (logq + log_k)).sum(1)  # sum_{c!=y} p'_c log(K p'_c)
    return nll + (beta / 2) * (kl_u_q + kl_q_u)


def compact_softmax_ce_ref(
    logits: torch.Tensor, target: torch.Tensor, beta: float = 0.2, reduction: str = "mean"
) -> torch.Tensor:
    """Compact softmax cross-entropy, plain PyTorch: `reduction` "mean" (nan for N = 0, like
    torch.nn.functional.cross_entropy), "sum" (0 for N = 0) or "none" ((N,)); the result in logits' dtype
    (half-precision logits are computed in fp32 and rounded once)."""
    rows = compact_softmax_ce_rows_ref(logits, target, beta)
    if reduction == "mean":
        out = rows.mean()
    elif reduction == "sum":
        out = rows.sum()
    else:
        out = rows
    return out.to(logits.dtype)


__all__ = ["compact_softmax_ce_ref", "compact_softmax_ce_rows_ref"]

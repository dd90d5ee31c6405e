"""C++ backend of the attention family: thin wrappers over ``torch.ops.fxkernels.attention_*`` (csrc/attention/).

Looked up lazily so importing this module never requires the extension. Contract: README.md "Backend contract".
"""

from __future__ import annotations

import torch


def attention_fwd_cpp(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls):
    """-> (O (B, nh, Lq, hd) contiguous in q's dtype, lse (B, nh, Lq) in the accumulation dtype)."""
    return torch.ops.fxkernels.attention_fwd(
        q, k, v, rel, float(scale), list(thw_k), has_cls, add_q, add_q_cls
    )


def attention_bwd_cpp(dout, q, k, v, rel, out, lse, scale, thw_k, has_cls, add_q, add_q_cls, need_rel):
    """-> (dq, dk, dv contiguous in the inputs' dtype, drel (B, nh, Nq, Tk+Hk+Wk) in rel's dtype or None)."""
    dq, dk, dv, drel = torch.ops.fxkernels.attention_bwd(
        dout, q, k, v, rel, out, lse, float(scale), list(thw_k), has_cls, add_q, add_q_cls, bool(need_rel)
    )
    return dq, dk, dv, (drel if need_rel else None)


def attention_pool_fwd_cpp(x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps):
    """-> (y (B, nh, Lo, hd) contiguous in x's dtype, stats (B, nh, Lo, 2) = (mean, rstd) of each row before
    the norm in the accumulation dtype, or an empty tensor without norm)."""
    return torch.ops.fxkernels.attention_pool_fwd(
        x, weight, norm_weight, norm_bias, list(stride), list(thw), bool(has_cls), float(eps)
    )


def attention_pool_bwd_cpp(dy, x, weight, norm_weight, norm_bias, stats, stride, thw, has_cls, eps):
    """-> (dx contiguous in x's dtype, dweight in weight's dtype, dnorm_weight, dnorm_bias or None)."""
    dx, dw, dnw, dnb = torch.ops.fxkernels.attention_pool_bwd(
        dy, x, weight, norm_weight, norm_bias, stats, list(stride), list(thw), bool(has_cls), float(eps)
    )
    if norm_weight is None:
        return dx, dw, None, None
    return dx, dw, dnw, dnb

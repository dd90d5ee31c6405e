"""C++ backend of the attention family: thin wrappers over ``torch.ops.fxkernels.attention_*`` (csrc/attention/).

Looked up lazily so importing this module never requires the extension. Contract: README.md "Backend contract".
"""

from __future__ import annotations

import torch


def attention_fwd_cpp(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls):
    """-> (O (B, nh, Lq, hd) contiguous in q's dtype, lse (B, nh, Lq) in the accumulation dtype)."""
    return torch.ops.fxkernels.attention_fwd(q, k, v, rel, float(scale), list(thw_k), has_cls, add_q, add_q_cls)


def attention_bwd_cpp(dout, q, k, v, rel, out, lse, scale, thw_k, has_cls, add_q, add_q_cls, need_rel):
    """-> (dq, dk, dv contiguous in the inputs' dtype, drel (B, nh, Nq, Tk+Hk+Wk) in rel's dtype or None)."""
    dq, dk, dv, drel = torch.ops.fxkernels.attention_bwd(
        dout, q, k, v, rel, out, lse, float(scale), list(thw_k), has_cls, add_q, add_q_cls, bool(need_rel)
    )
    return dq, dk, dv, (drel if need_rel else None)

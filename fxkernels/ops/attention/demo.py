"""`python -m fxkernels demo` cases of the attention family, at MTSTWN's shapes (tiny: a quick self-check)."""

import math

import torch

from ..opkit import DemoCase, dims
from .attention import KERNELS, attention
from .pool import KERNELS as POOL_KERNELS
from .pool import attention_pool


def demo_cases(device, tiny: bool) -> list:
    # MTSTWN blocks 1-3: 2 heads, q grid 15x28x28, k/v grid 15x7x7, hd 96, no cls, rel-pos + residual pooling
    nh, hd, thw_q, thw_k = (2, 16, (2, 4, 4), (2, 2, 2)) if tiny else (2, 96, (15, 28, 28), (15, 7, 7))
    q = torch.randn(1, nh, math.prod(thw_q), hd, device=device)
    k, v = (torch.randn(1, nh, math.prod(thw_k), hd, device=device) for _ in range(2))
    tables = [0.02 * torch.randn(2 * max(a, b) - 1, hd, device=device) for a, b in zip(thw_q, thw_k)]
    tables[2] = tables[1].clone()  # h and w tables have one size (2*max(H, W)-1 rows)

    def att(be, t):
        return attention(
            *t[:3],
            thw_q=thw_q,
            thw_k=thw_k,
            rel_pos_t=t[3],
            rel_pos_h=t[4],
            rel_pos_w=t[5],
            add_q=True,
            backend=be,
        )

    # its k/v pooling at block 1: grid 15x28x28 -> 15x7x7 (kernel 3, stride (1, 4, 4)), LayerNorm over hd
    x = torch.randn(1, nh, math.prod(thw_q), hd, device=device)
    w = 0.1 * torch.randn(hd, 1, 3, 3, 3, device=device)
    nw, nb = 1 + 0.1 * torch.randn(hd, device=device), 0.1 * torch.randn(hd, device=device)
    stride = (1, 2, 2) if tiny else (1, 4, 4)

    def pool(be, t):
        return attention_pool(t[0], t[1], stride, thw_q, False, t[2], t[3], backend=be)[0]

    return [
        DemoCase("attention", f"q {dims(q)}, k,v {dims(k)}, rel-pos", (q, k, v, *tables), att, KERNELS),
        DemoCase("attention_pool", f"x {dims(x)}, stride {stride}", (x, w, nw, nb), pool, POOL_KERNELS),
    ]

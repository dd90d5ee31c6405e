"""Pure-PyTorch reference for the spatial-correlation family (math in README.md): the oracle and the fallback.

`spatial_correlation_ref` is vectorised: one batched Gram matrix per sample, then a gather of the P*P
displacements (O(B (H W)^2) memory, fine for FlowNetC's 1/8-resolution maps). `spatial_correlation_loop`
is the definition written as a loop over displacements, a second oracle for the tests.
"""

from __future__ import annotations

import functools

import torch


def _offsets(patch: int, dilation: int):
    r = patch // 2
    return [(p - r) * dilation for p in range(patch)]


@functools.lru_cache(maxsize=64)
def _gather_index(H: int, W: int, patch: int, dilation: int, device: str):
    """(H*W, P*P) int64 index into H*W + 1 columns; column H*W is the zero column (outside the map)."""
    offs = torch.tensor(_offsets(patch, dilation))
    hh = torch.arange(H).view(H, 1, 1, 1) + offs.view(1, 1, -1, 1)  # (H, 1, P, 1)
    ww = torch.arange(W).view(1, W, 1, 1) + offs.view(1, 1, 1, -1)  # (1, W, 1, P)
    inside = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    idx = torch.where(inside, hh * W + ww, torch.full_like(hh * W + ww, H * W))
    return idx.reshape(H * W, patch * patch).to(device)


def spatial_correlation_ref(f1: torch.Tensor, f2: torch.Tensor, patch_size: int = 21, dilation: int = 2):
    """f1, f2: (B, C, H, W) -> (B, P*P, H, W), P = patch_size, zero outside the map.

    out[b, p*P+q, h, w] = sum_c f1[b,c,h,w] * f2[b,c, h+(p-P//2)*dilation, w+(q-P//2)*dilation]
    Half-precision inputs are computed in fp32 and rounded once (as the fused kernels accumulate).
    """
    B, C, H, W = f1.shape
    dt = f1.dtype
    if dt in (torch.float16, torch.bfloat16):
        f1, f2 = f1.float(), f2.float()
    a = f1.reshape(B, C, H * W)
    b = f2.reshape(B, C, H * W)
    gram = a.transpose(1, 2) @ b  # (B, HW, HW): gram[b, n, m] = <f1[:, n], f2[:, m]>
    gram = torch.cat([gram, gram.new_zeros(B, H * W, 1)], 2)  # zero column for outside positions
    idx = _gather_index(H, W, patch_size, dilation, str(f1.device))
    out = torch.gather(gram, 2, idx.unsqueeze(0).expand(B, -1, -1))  # (B, HW, P*P)
    return out.transpose(1, 2).reshape(B, patch_size * patch_size, H, W).to(dt)


def spatial_correlation_loop(f1: torch.Tensor, f2: torch.Tensor, patch_size: int = 21, dilation: int = 2):
    """The README formula as a loop over the P*P displacements (second oracle; slow for large P)."""
    B, C, H, W = f1.shape
    offs = _offsets(patch_size, dilation)
    out = f1.new_zeros(B, patch_size, patch_size, H, W)
    for p, dh in enumerate(offs):
        for q, dw in enumerate(offs):
            h0, h1 = max(0, -dh), min(H, H - dh)
            w0, w1 = max(0, -dw), min(W, W - dw)
            if h0 >= h1 or w0 >= w1:
                continue
            prod = f1[:, :, h0:h1, w0:w1] * f2[:, :, h0 + dh : h1 + dh, w0 + dw : w1 + dw]
            out[:, p, q, h0:h1, w0:w1] = prod.sum(1)
    return out.view(B, patch_size * patch_size, H, W)

"""Pure-PyTorch reference for the FCC family (math in README.md): the oracle and the fallback."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Pass modes shared by every backend (also the `mode` int of the C++ ops).
MODE_V, MODE_H, MODE_VH, MODE_HV = 0, 1, 2, 3
MODES = {"V": MODE_V, "H": MODE_H, "VH": MODE_VH, "HV": MODE_HV}


def fcc_ref(x, weight, dim=-2, pos=None, bias=None):
    """One circular pass. x: (B, C, H, W); weight, pos: (C, L); bias: (C,).

    FCC-V (dim=-2): y[b,c,i,j] = bias[c] + sum_s U[c,s] (x[b,c,(i+s)%H,j] + P[c,(i+s)%H]).
    """
    C = x.shape[1]
    vertical = dim in (-2, 2)
    L = x.shape[2] if vertical else x.shape[3]
    if x.numel() == 0:  # conv2d has no empty group or kernel; the result is empty, every gradient zero
        y = x * 0 + weight.sum() * 0
        if pos is not None:
            y = y + pos.sum() * 0
        return y if bias is None else y + bias.view(1, C, 1, 1)
    if pos is not None:
        x = x + (pos.view(1, C, L, 1) if vertical else pos.view(1, C, 1, L))
    if vertical:
        xc = torch.cat([x, x[:, :, : L - 1]], dim=2)  # wrap-around padding of L-1 rows
        w = weight.reshape(C, 1, L, 1)
    else:
        xc = torch.cat([x, x[:, :, :, : L - 1]], dim=3)
        w = weight.reshape(C, 1, 1, L)
    return F.conv2d(xc, w.to(xc.dtype), bias, groups=C)


def fcc2d_ref(x, weight1, weight2, order="VH", pos1=None, pos2=None, bias1=None, bias2=None):
    """Two chained passes: order "VH" = FCC-V(weight1, pos1, bias1) then FCC-H(weight2, pos2, bias2);
    "HV" = FCC-H(weight1, ...) then FCC-V(weight2, ...). weight1 always acts first."""
    d1, d2 = (-2, -1) if order == "VH" else (-1, -2)
    z = fcc_ref(x, weight1, d1, pos1, bias1)
    return fcc_ref(z, weight2, d2, pos2, bias2)

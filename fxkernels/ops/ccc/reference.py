"""Pure-PyTorch reference for the CCC family (math in ./README.md): the oracle and the fallback.

Vectorised (no Python loop over nodes or neighbours). It materialises the (B, C, k, N_out) edge tensor,
which the fused kernels never do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-12  # as F.normalize


def first_equal_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, R) int64: for every row of x (B, R, D), the lowest index of a bitwise-equal row of the same batch.

    Static shapes (traceable by torch.compile): an exact integer hash of each row's bits picks the first row
    with the same hash, and a bitwise comparison confirms it (a row whose first hash match differs from it,
    a 64-bit hash collision, keeps its own index).
    """
    B, R, D = x.shape
    own = torch.arange(R, device=x.device).expand(B, R)
    if x.numel() == 0 or x.device.type == "meta":
        return own
    bits = x.contiguous().view(torch.int16).to(torch.int64)  # (B, R, D * itemsize / 2), values < 2^15
    # weights < 2^24: every partial sum stays below 2^39 * D' < 2^63 (no overflow for D' < 2^24)
    j = torch.arange(bits.shape[-1], device=x.device, dtype=torch.int64)
    w = (j * 2654435761 + 97) % 16777213 + 1
    h = (bits * w).sum(-1)  # (B, R)
    rep = (h[:, :, None] == h[:, None, :]).to(torch.uint8).argmax(-1)  # the first index with the same hash
    same = (bits.gather(1, rep[..., None].expand_as(bits)) == bits).all(-1)
    return torch.where(same, rep, own)


def knn_cosine_ref(x: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k cosine neighbours of every row. x: (B, R, D) -> (B, R, k) int64, self included.

    sim[b,i,j] = <x_i, x_j> / (max(|x_i|, eps) * max(|x_j|, eps)); ties go to the lower index.
    Rows whose normalised values are bitwise equal score bitwise-equal similarities (a GEMM alone can give
    them values 1 ulp apart), so duplicate rows tie, the lower index first, and get the same neighbour list.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # as the kernels: eps = 1e-12 underflows in half precision (0/0 for a zero row)
    B, R, _ = x.shape
    xn = F.normalize(x, dim=-1, eps=EPS)
    sim = xn @ xn.transpose(1, 2)
    rep = first_equal_rows(xn)
    sim = sim.gather(2, rep[:, None, :].expand(B, R, R))  # column q scores as its first equal row
    # a stable descending sort keeps equal similarities in index order: ties -> lower index first
    nbr = torch.sort(sim, dim=-1, descending=True, stable=True).indices[..., :k]
    return nbr.gather(1, rep[..., None].expand(B, R, nbr.shape[-1]))  # row r takes its first equal row's list


def channel_edge_conv_ref(x, nbr, weight1, weight2, bias1=None, bias2=None):
    """The channel graph (paper semantics, README.md).

    x: (B, C, N), nbr: (B, C, k), weight1/2: (N_out, N), bias1/2: (N_out,).

    y[b,i,:] = max_{j in nbr[b,i]} ReLU(W1 x_i + b1 + W2 (x_j - x_i) + b2)   -> (B, C, N_out)
    """
    a = x @ (weight1 - weight2).t()  # (B, C, N_out): the centre term
    if bias1 is not None:
        a = a + bias1
    if bias2 is not None:
        a = a + bias2
    g = x @ weight2.t()  # (B, C, N_out): the neighbour term
    B, C, k = nbr.shape
    F_out = g.shape[-1]
    gj = torch.gather(g, 1, nbr.reshape(B, C * k, 1).expand(B, C * k, F_out)).view(B, C, k, F_out)
    e = torch.relu(a.unsqueeze(2) + gj)  # (B, C, k, N_out)
    # max with indices: the gradient goes to one winner (the first), as in the fused kernels
    return e.max(dim=2).values


def spatial_edge_conv_ref(x, nbr, weight1, weight2, bias1=None, bias2=None):
    """The spatial graph (official MOL semantics, README.md).

    x: (B, C, N), nbr: (B, N, k) neighbours of each position,
    weight1/2: (N_out, N) acting on the N axis, bias1/2: (N_out,).

    d[b,c,n,j] = x[b,c,nbr[b,n,j]] - x[b,c,n]
    y[b,c,:]   = max_j ReLU(W1 x[b,c,:] + b1 + W2 (d[b,c,:,j] - x[b,c,:]) + b2)   -> (B, C, N_out)
    """
    B, C, N = x.shape
    k = nbr.shape[-1]
    xg = torch.gather(x, 2, nbr.reshape(B, 1, N * k).expand(B, C, N * k)).view(B, C, N, k)
    inner = xg - 2.0 * x.unsqueeze(-1)  # d - x: the centre is subtracted twice, as in the official code
    e = torch.einsum("bcnk,on->bcok", inner, weight2) + (x @ weight1.t()).unsqueeze(-1)
    if bias1 is not None:
        e = e + bias1.view(1, 1, -1, 1)
    if bias2 is not None:
        e = e + bias2.view(1, 1, -1, 1)
    return torch.relu(e).max(dim=-1).values


def edge_conv_loop(x, nbr, conv1, conv2, graph: str = "spatial"):
    """The published MOL code's structure, re-created (our own code) for tests and the `loop` benchmark:
    a Python loop over the C nodes and the k neighbours, one `Conv1d(1, N_out, kernel_size=N)` call per
    term, the per-neighbour results concatenated, max-reduced, and concatenated over nodes one at a time.

    x: (B, C, N); nbr: (B, N, k) for graph="spatial", (B, C, k) for graph="channel"; -> (B, C, N_out).
    """
    B, C, N = x.shape
    k = nbr.shape[-1]
    if graph == "spatial":
        xg = torch.gather(x, 2, nbr.reshape(B, 1, N * k).expand(B, C, N * k)).view(B, C, N, k)
        diff = xg - x.unsqueeze(-1)  # (B, C, N, k): what the official graph-feature step hands the loop
    else:
        diff = None
    rows = torch.arange(B, device=x.device)
    out = None
    for i in range(C):
        f_i = x[:, i : i + 1, :]  # (B, 1, N)
        feats = None
        for j in range(k):
            if diff is not None:
                f_j = diff[:, i : i + 1, :, j]
            else:
                f_j = x[rows, nbr[:, i, j]].unsqueeze(1)
            feat = torch.relu(conv1(f_i) + conv2(f_j - f_i))  # (B, N_out, 1)
            feats = feat if feats is None else torch.cat([feats, feat], dim=-1)
        agg = feats.max(dim=-1).values[:, None, :]  # (B, 1, N_out)
        out = agg if out is None else torch.cat([out, agg], dim=1)
    return out

"""CCC reference against the formulas of fxkernels/ops/ccc/README.md written out as loops."""

import pytest
import torch
import torch.nn.functional as F

from fxkernels.ops.ccc import channel_edge_conv_ref, knn_cosine_ref, spatial_edge_conv_ref
from fxkernels.testing import assert_close

SHAPES = [
    pytest.param(2, 5, 7, 3, id="B2-C5-N7-k3"),
    pytest.param(1, 4, 6, 1, id="k1"),
    pytest.param(1, 3, 4, 3, id="k=C"),
]


def loop_knn(x, k):
    B, R, _ = x.shape
    out = torch.empty(B, R, k, dtype=torch.long)
    for b in range(B):
        for i in range(R):
            sims = [
                (x[b, i] @ x[b, j]).item()
                / (max(x[b, i].norm().item(), 1e-12) * max(x[b, j].norm().item(), 1e-12))
                for j in range(R)
            ]
            order = sorted(range(R), key=lambda j: (-sims[j], j))
            out[b, i] = torch.tensor(order[:k])
    return out


@pytest.mark.parametrize("B,C,N,k", SHAPES)
def test_knn_cosine_ref(B, C, N, k):
    x = torch.randn(B, C, N, dtype=torch.float64)
    assert torch.equal(knn_cosine_ref(x, k), loop_knn(x, k))
    assert torch.equal(knn_cosine_ref(x, k)[..., 0], torch.arange(C).expand(B, C))  # self is the best match


def test_knn_cosine_ref_zero_channel_ties_to_lower_index():
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    x[0, 2] = 0  # cosine 0 with everyone: ties everywhere in its row
    nbr = knn_cosine_ref(x, 3)
    assert nbr[0, 2].tolist() == [0, 1, 2]
    assert torch.equal(nbr, loop_knn(x, 3))


@pytest.mark.parametrize("B,C,N,k", SHAPES)
def test_channel_edge_conv_ref(B, C, N, k):
    x = torch.randn(B, C, N, dtype=torch.float64)
    W1, W2 = torch.randn(N, N, dtype=torch.float64), torch.randn(N, N, dtype=torch.float64)
    b1, b2 = torch.randn(N, dtype=torch.float64), torch.randn(N, dtype=torch.float64)
    nbr = knn_cosine_ref(x, k)
    y = channel_edge_conv_ref(x, nbr, W1, W2, b1, b2)
    want = torch.empty_like(y)
    for b in range(B):
        for i in range(C):
            edges = [F.relu(W1 @ x[b, i] + b1 + W2 @ (x[b, j] - x[b, i]) + b2) for j in nbr[b, i].tolist()]
            want[b, i] = torch.stack(edges).amax(0)
    assert_close(y, want, torch.float64, "y")


@pytest.mark.parametrize("B,C,N,k", SHAPES)
def test_spatial_edge_conv_ref(B, C, N, k):
    k = min(k, N)
    x = torch.randn(B, C, N, dtype=torch.float64)
    W1, W2 = torch.randn(N, N, dtype=torch.float64), torch.randn(N, N, dtype=torch.float64)
    b1, b2 = torch.randn(N, dtype=torch.float64), torch.randn(N, dtype=torch.float64)
    nbr = knn_cosine_ref(x.transpose(1, 2), k)  # (B, N, k): the graph over positions
    y = spatial_edge_conv_ref(x, nbr, W1, W2, b1, b2)
    want = torch.empty_like(y)
    for b in range(B):
        for c in range(C):
            edges = []
            for j in range(k):
                d = torch.stack([x[b, c, nbr[b, n, j]] - x[b, c, n] for n in range(N)])
                edges.append(F.relu(W1 @ x[b, c] + b1 + W2 @ (d - x[b, c]) + b2))
            want[b, c] = torch.stack(edges).amax(0)
    assert_close(y, want, torch.float64, "y")


def test_edge_conv_refs_gradcheck():
    x = torch.randn(1, 3, 4, dtype=torch.float64)
    nbr_c, nbr_s = knn_cosine_ref(x, 2), knn_cosine_ref(x.transpose(1, 2), 2)
    args = [torch.randn(4, 4, dtype=torch.float64) for _ in range(2)] + [
        torch.randn(4, dtype=torch.float64) for _ in range(2)
    ]
    for fn, nbr in ((channel_edge_conv_ref, nbr_c), (spatial_edge_conv_ref, nbr_s)):
        leaves = [x.clone().requires_grad_(True)] + [a.clone().requires_grad_(True) for a in args]
        assert torch.autograd.gradcheck(lambda x, *w, fn=fn, nbr=nbr: fn(x, nbr, *w), tuple(leaves))

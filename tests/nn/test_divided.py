"""DividedSpaceTimeBlock (fxkernels/nn/divided.py): against a loop over frames and patches written from the
block's definition, every backend against its reference-backend twin, torch.compile, errors."""

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels.testing import check_module, twin
from tests.conftest import BACKEND_PARAMS

# (B, frames, N patches, dim, heads): STT's 7x7 and 4x4 grids scaled down, odd sizes, one frame, one patch
CASES = [
    pytest.param(2, 4, 7, 32, 4, id="B2-F4-N7"),
    pytest.param(1, 3, 16, 24, 2, id="B1-F3-N16"),
    pytest.param(2, 1, 5, 16, 2, id="F1"),
    pytest.param(3, 5, 1, 16, 4, id="N1"),
]


def _attend(att, x):
    """One of the block's attentions on one sequence x (L, d), written out."""
    L, d = x.shape
    h = att.num_heads
    q, k, v = F.linear(
        F.layer_norm(x, (d,), att.norm.weight, att.norm.bias, 1e-6), att.qkv.weight, att.qkv.bias
    ).chunk(3, -1)
    q, k, v = (t.reshape(L, h, d // h).transpose(0, 1) for t in (q, k, v))
    o = torch.softmax(q @ k.transpose(1, 2) / (d // h) ** 0.5, -1) @ v
    return F.linear(o.transpose(0, 1).reshape(L, d), att.proj.weight, att.proj.bias)


def loop_block(m, x, frames):
    """The block by its definition: a Python loop over every frame (space) and every patch (time)."""
    B, L, d = x.shape
    N = (L - 1) // frames
    out = []
    for b in range(B):
        cls, p = x[b, 0], x[b, 1:].reshape(frames, N, d)
        p = torch.stack([p[f] + _attend(m.space, p[f]) for f in range(frames)])
        us = [_attend(m.time, torch.cat([cls[None], p[:, n]])) for n in range(N)]  # (F + 1, d) each
        p = p + torch.stack([u[1:] for u in us], 1)
        cls = cls + torch.stack([u[0] for u in us]).mean(0)
        t = torch.cat([cls[None], p.reshape(frames * N, d)])
        out.append(t + m.mlp(F.layer_norm(t, (d,), m.norm.weight, m.norm.bias, 1e-6)))
    return torch.stack(out)


@pytest.mark.parametrize("B,frames,N,dim,heads", CASES)
def test_block_is_its_definition(B, frames, N, dim, heads):
    m = fxkernels.DividedSpaceTimeBlock(dim, heads, backend="reference").double()
    x = torch.randn(B, 1 + frames * N, dim, dtype=torch.float64)
    check_module(m, lambda x, f: loop_block(m, x, f), x, frames)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("B,frames,N,dim,heads", CASES[:2])
def test_backend_matches_reference_backend(B, frames, N, dim, heads, device, backend):
    m_ref = fxkernels.DividedSpaceTimeBlock(dim, heads, backend="reference").to(device).double()
    x = torch.randn(B, 1 + frames * N, dim, dtype=torch.float64, device=device)
    check_module(twin(m_ref, backend), m_ref, x, frames)


def test_non_contiguous_tokens_and_stacking():
    m = fxkernels.DividedSpaceTimeBlock(16, 2, backend="reference").double()
    x = torch.randn(9, 2, 16, dtype=torch.float64).transpose(0, 1)  # (2, 9, 16) with strides of (9, 2, 16)
    check_module(m, lambda x, f: loop_block(m, x, f), x, 4)
    y = m(m(x, 4), 4)  # a block's output is the next block's input
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_drop_path_is_identity_in_eval_and_drops_rows_in_training():
    torch.manual_seed(0)
    m = fxkernels.DividedSpaceTimeBlock(16, 2, drop_path=0.5, backend="reference").double()
    x = torch.randn(64, 1 + 2 * 3, 16, dtype=torch.float64)
    ref = fxkernels.DividedSpaceTimeBlock(16, 2, backend="reference").double()
    ref.load_state_dict(m.state_dict())
    m.eval()
    torch.testing.assert_close(m(x, 2), ref(x, 2))
    m.train()
    y = m(x, 2)
    # a row whose three branches were all dropped (1 in 8 at p = 0.5) passes through unchanged
    same = (y - x).abs().flatten(1).amax(1) == 0
    assert 0 < same.sum() < 32, same.sum()
    assert not torch.allclose(y, ref(x, 2))


def test_backend_setter_reaches_both_attentions():
    m = fxkernels.DividedSpaceTimeBlock(16, 2)
    m.backend = "reference"
    assert m.space.backend == m.time.backend == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        m.backend = "gpu"


def test_compile_fullgraph():
    m = fxkernels.DividedSpaceTimeBlock(16, 2)
    x = torch.randn(2, 1 + 3 * 4, 16)
    torch._dynamo.reset()
    got = torch.compile(m, fullgraph=True)(x, 3)
    torch.testing.assert_close(got, m(x, 3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make,match",
    [
        pytest.param(lambda: fxkernels.DividedSpaceTimeBlock(30, 8), "divisible by num_heads", id="heads"),
        pytest.param(lambda: fxkernels.DividedSpaceTimeBlock(16, 2, drop_path=1.0), "drop_path", id="drop"),
        pytest.param(
            lambda: fxkernels.DividedSpaceTimeBlock(16, 2)(torch.randn(2, 9, 16), 3), "frames = 3", id="L"
        ),
        pytest.param(
            lambda: fxkernels.DividedSpaceTimeBlock(16, 2)(torch.randn(2, 9, 8), 4), "dim = 16", id="dim"
        ),
        pytest.param(lambda: fxkernels.DividedSpaceTimeBlock(16, 2)(torch.randn(9, 16), 4), "3-D", id="rank"),
        pytest.param(
            lambda: fxkernels.DividedSpaceTimeBlock(16, 2)(torch.randn(2, 9, 16), 0), "frames", id="F0"
        ),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()

"""Attention family edge cases on every backend: NaN propagation (the reference's places), empty inputs, meta
tensors (fxkernels/ops/attention/README.md)."""

import math

import pytest
import torch

import fxkernels
from fxkernels.ops.attention.reference import attention_pool_ref, attention_ref
from tests.conftest import BACKEND_PARAMS

WITH_REFERENCE = BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
THW_Q, THW_K = (2, 3, 3), (2, 2, 1)


def inputs(has_cls, device, dtype=torch.float64, B=2, nh=2, hd=16):
    c = int(has_cls)
    q = torch.randn(B, nh, c + math.prod(THW_Q), hd, dtype=dtype, device=device)
    k = torch.randn(B, nh, c + math.prod(THW_K), hd, dtype=dtype, device=device)
    v = torch.randn_like(k)
    tables = [0.3 * torch.randn(n, hd, dtype=dtype, device=device) for n in (3, 5, 5)]
    return q, k, v, tables


def run(backend, q, k, v, tables, has_cls, dy):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v, *tables)]
    y = fxkernels.attention(
        *leaves[:3],
        thw_q=THW_Q,
        thw_k=THW_K,
        rel_pos_t=leaves[3],
        rel_pos_h=leaves[4],
        rel_pos_w=leaves[5],
        has_cls=has_cls,
        add_q=True,
        backend=backend,
    )
    y.backward(dy)
    return [y.detach()] + [t.grad for t in leaves]


NAN_CASES = [
    pytest.param("q", (0, 1, 3, 2), id="q-grid-row"),
    pytest.param("q", (1, 0, 0, 5), id="q-cls-row"),
    pytest.param("k", (0, 1, 2, 0), id="k-column"),
    pytest.param("v", (1, 1, 0, 7), id="v-cls-column"),
]


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("which,where", NAN_CASES)
def test_nan_reaches_the_reference_places(which, where, device, backend):
    """A NaN in q_i poisons row i (and, through the backward, every k/v/table gradient); one in k_j or v_j
    poisons every row. Non-finite places of the output and every gradient equal the reference's, finite values
    match it."""
    q, k, v, tables = inputs(True, device)
    {"q": q, "k": k, "v": v}[which][where] = float("nan")
    dy = torch.randn_like(q)
    got = run(backend, q, k, v, tables, True, dy)
    want = run("reference", q, k, v, tables, True, dy)
    for name, a, b in zip(("y", "dq", "dk", "dv", "dt", "dh", "dw"), got, want):
        bad_a, bad_b = ~torch.isfinite(a), ~torch.isfinite(b)
        assert torch.equal(bad_a, bad_b), f"{name}: non-finite places differ from the reference"
        torch.testing.assert_close(a[~bad_a], b[~bad_b], rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("device,backend", WITH_REFERENCE)
@pytest.mark.parametrize("B,nh", [pytest.param(0, 2, id="B0"), pytest.param(2, 0, id="nh0")])
@pytest.mark.parametrize("has_cls", [pytest.param(True, id="cls"), pytest.param(False, id="nocls")])
def test_attention_empty(B, nh, has_cls, device, backend):
    q, k, v, tables = inputs(has_cls, device, torch.float32, B=B, nh=nh)
    leaves = [t.requires_grad_(True) for t in (q, k, v, *tables)]
    y = fxkernels.attention(
        *leaves[:3],
        thw_q=THW_Q,
        thw_k=THW_K,
        rel_pos_t=leaves[3],
        rel_pos_h=leaves[4],
        rel_pos_w=leaves[5],
        has_cls=has_cls,
        add_q=True,
        backend=backend,
    )
    assert y.shape == q.shape
    y.sum().backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in leaves)
    assert all(float(t.grad.abs().sum()) == 0.0 for t in leaves[3:])  # no rows: no table gradient


@pytest.mark.parametrize("device,backend", WITH_REFERENCE)
def test_attention_pool_empty(device, backend):
    x = torch.randn(0, 2, 1 + 18, 8, device=device, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, 3, device=device, requires_grad=True)
    nw, nb = (torch.randn(8, device=device, requires_grad=True) for _ in range(2))
    y, thw = fxkernels.attention_pool(x, w, (1, 2, 2), (2, 3, 3), True, nw, nb, backend=backend)
    assert y.shape == (0, 2, 1 + 2 * 2 * 2, 8) and thw == (2, 2, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape and float(w.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_meta_tensors(backend):
    q, k, v, tables = inputs(True, "meta", torch.float32)
    y = fxkernels.attention(
        q,
        k,
        v,
        thw_q=THW_Q,
        thw_k=THW_K,
        rel_pos_t=tables[0],
        rel_pos_h=tables[1],
        rel_pos_w=tables[2],
        has_cls=True,
        backend=backend,
    )
    assert y.device.type == "meta" and y.shape == q.shape
    want = attention_ref(
        q,
        k,
        v,
        thw_q=THW_Q,
        thw_k=THW_K,
        rel_pos_t=tables[0],
        rel_pos_h=tables[1],
        rel_pos_w=tables[2],
        has_cls=True,
    )
    assert want.shape == y.shape
    x = torch.empty(2, 2, 1 + 18, 8, device="meta")
    w = torch.empty(8, 1, 3, 3, 3, device="meta")
    y, thw = fxkernels.attention_pool(x, w, (1, 2, 2), (2, 3, 3), True, backend=backend)
    assert y.shape == attention_pool_ref(x, w, (1, 2, 2), (2, 3, 3), True)[0].shape and thw == (2, 2, 2)

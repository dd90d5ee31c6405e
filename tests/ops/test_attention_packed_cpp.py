"""Attention, the C++ CPU backend's short-sequence path (Lq <= 64 and Lk <= 64: one task per head, one key
tile; csrc/attention/attention_cpu_packed.h) against attention_ref: outputs and the gradients of q, k, v (and
the rel-pos tables where given) under a random upstream gradient. STT's shapes ((., 8, 49, 49, 64) per frame,
(., 8, 17, 17, 64) per patch), (., 8, 16, 16, 64), odd lengths 1 / 7 / 33 with Lq != Lk, the 64 / 65 boundary
on both sides (65 takes the flash path), a cls row with residual pooling, the rel-pos bias, a qkv-view
(non-contiguous) layout, fp64 / fp32 / fp16 / bf16, every CPU ISA variant, fp64 gradcheck, and bitwise
determinism across runs and thread counts.
"""

import pytest
import torch

from fxkernels.ops.attention import attention, attention_ref
from fxkernels.testing import assert_deterministic, check_op, gradcheck
from tests.ops.test_attention_cpp import _fns, _qkv_layout, make_inputs, pytestmark  # noqa: F401


def _plain(B, nh, Lq, Lk, hd, dtype=torch.float64, noncontig=False):
    q = torch.randn(B, nh, Lq, hd, dtype=dtype)
    k = torch.randn(B, nh, Lk, hd, dtype=dtype)
    v = torch.randn(B, nh, Lk, hd, dtype=dtype)
    if noncontig:
        q, k, v = _qkv_layout(q, 0), _qkv_layout(k, 1), _qkv_layout(v, 2)
    return {"q": q, "k": k, "v": v}


def _cpu(**kw):
    return lambda **t: attention(**t, **kw, backend="cpu")


def _ref(**kw):
    return lambda **t: attention_ref(**t, **kw)


# (B, nh, Lq, Lk, hd)
PLAIN = [
    pytest.param(2, 8, 49, 49, 64, id="stt-spatial-49"),
    pytest.param(3, 8, 17, 17, 64, id="stt-temporal-17"),
    pytest.param(2, 8, 16, 16, 64, id="16x16"),
    pytest.param(2, 3, 1, 7, 40, id="Lq1-Lk7-hd40"),
    pytest.param(1, 2, 33, 7, 24, id="Lq33-Lk7-hd24"),
    pytest.param(1, 2, 7, 33, 24, id="Lq7-Lk33-hd24"),
    pytest.param(2, 1, 1, 1, 64, id="Lq1-Lk1"),
    pytest.param(1, 2, 64, 64, 33, id="packed-edge-64-64"),
    pytest.param(1, 2, 64, 65, 33, id="flash-Lk65"),
    pytest.param(1, 2, 65, 64, 33, id="flash-Lq65"),
    pytest.param(1, 1, 20, 30, 256, id="hd256"),
]


@pytest.mark.parametrize("B,nh,Lq,Lk,hd", PLAIN)
def test_plain_matches_reference_fp64(B, nh, Lq, Lk, hd):
    check_op(_cpu(), _ref(), _plain(B, nh, Lq, Lk, hd))


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(torch.float32, id="fp32"),
        pytest.param(torch.float16, id="fp16"),
        pytest.param(torch.bfloat16, id="bf16"),
    ],
)
@pytest.mark.parametrize(
    "L", [pytest.param((49, 49), id="49"), pytest.param((17, 17), id="17"), pytest.param((7, 33), id="7-33")]
)
def test_low_precision(dtype, L):
    check_op(_cpu(), _ref(), _plain(2, 4, L[0], L[1], 64, dtype=dtype))


def test_noncontiguous_qkv_view():
    inputs = _plain(3, 8, 17, 17, 64, noncontig=True)
    assert not inputs["q"].is_contiguous()
    check_op(_cpu(), _ref(), inputs)


@pytest.mark.parametrize(
    "has_cls,add_q,add_q_cls",
    [
        pytest.param(True, True, False, id="cls-addq"),
        pytest.param(True, True, True, id="cls-addq-cls"),
        pytest.param(False, True, False, id="addq"),
    ],
)
def test_cls_and_residual(has_cls, add_q, add_q_cls):
    kw = dict(has_cls=has_cls, add_q=add_q, add_q_cls=add_q_cls)
    check_op(_cpu(**kw), _ref(**kw), _plain(2, 2, 18, 18, 32))


@pytest.mark.parametrize(
    "thw_q,thw_k,has_cls",
    [
        pytest.param((2, 4, 4), (2, 2, 2), True, id="bias-cls-Lq33-Lk17"),
        pytest.param((3, 3, 7), (3, 3, 7), False, id="bias-Lq63-Lk63"),
        pytest.param((1, 7, 7), (1, 7, 9), True, id="bias-cls-Lq50-Lk64"),
    ],
)
def test_rel_pos_bias(thw_q, thw_k, has_cls):
    fn, ref = _fns(thw_q, thw_k, has_cls, True, False)
    check_op(fn, ref, make_inputs(2, 2, thw_q, thw_k, 24, has_cls))


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float64, id="fp64"), pytest.param(torch.float32, id="fp32")]
)
def test_isa_variants(isa, dtype):
    check_op(_cpu(), _ref(), _plain(2, 3, 49, 17, 64, dtype=dtype))
    fn, ref = _fns((2, 3, 3), (2, 3, 3), True, True, False)
    check_op(fn, ref, make_inputs(1, 2, (2, 3, 3), (2, 3, 3), 40, True, dtype=dtype))


def test_gradcheck_fp64():
    assert gradcheck(_cpu(has_cls=True, add_q=True), _plain(1, 2, 7, 5, 8), eps=1e-6, atol=1e-7)


def test_deterministic_across_runs_and_threads():
    inputs = _plain(4, 8, 49, 49, 64, dtype=torch.float32)
    first = assert_deterministic(_cpu(), inputs)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = assert_deterministic(_cpu(), inputs, first.upstream)
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(first.outputs[0], again.outputs[0])
    for n, g in first.grads.items():
        assert torch.equal(g, again.grads[n]), f"d{n} depends on the thread count"

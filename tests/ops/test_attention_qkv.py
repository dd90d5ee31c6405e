"""`qkv_attention` (fxkernels/ops/attention/qkv.py): self-attention read from one packed (S, L, 3*d) projection,
the gradient written back in its layout. Against the plain formula (views of qkv, attention_ref, transpose and
reshape): output and dqkv under a random upstream gradient, fp64 and fp32/fp16/bf16, STT's short lengths and a
long one (the flash path), odd head widths, a non-contiguous qkv, S = 0; opcheck of the private kit op,
torch.compile(fullgraph=True), fp64 gradcheck, and the input errors.
"""

import pytest
import torch

from fxkernels.ops.attention import attention_ref, qkv_attention
from fxkernels.testing import check_op, gradcheck
from tests.conftest import BACKEND_PARAMS


def plain(qkv, num_heads):
    S, L, d3 = qkv.shape
    q, k, v = qkv.reshape(S, L, 3, num_heads, d3 // (3 * num_heads)).permute(2, 0, 3, 1, 4)
    return attention_ref(q, k, v).transpose(1, 2).reshape(S, L, d3 // 3)


# (S, L, heads, head width)
SHAPES = [
    pytest.param(3, 17, 8, 8, id="stt-temporal-like-17"),
    pytest.param(2, 49, 4, 16, id="stt-spatial-like-49"),
    pytest.param(2, 7, 3, 5, id="odd-L7-hd5"),
    pytest.param(1, 70, 2, 8, id="long-L70-flash"),
    pytest.param(1, 1, 1, 4, id="L1"),
]


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("S,L,nh,hd", SHAPES)
def test_matches_plain_fp64(device, backend, S, L, nh, hd):
    qkv = torch.randn(S, L, 3 * nh * hd, dtype=torch.float64, device=device)
    check_op(lambda qkv: qkv_attention(qkv, nh, backend=backend), lambda qkv: plain(qkv, nh), {"qkv": qkv})


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(torch.float32, id="fp32"),
        pytest.param(torch.float16, id="fp16"),
        pytest.param(torch.bfloat16, id="bf16"),
    ],
)
def test_low_precision(device, backend, dtype):
    qkv = torch.randn(2, 17, 3 * 4 * 16, dtype=dtype, device=device)
    check_op(lambda qkv: qkv_attention(qkv, 4, backend=backend), lambda qkv: plain(qkv, 4), {"qkv": qkv})


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_noncontiguous_and_empty(device, backend):
    base = torch.randn(9, 2, 3 * 2 * 8, dtype=torch.float64, device=device)
    qkv = base.transpose(0, 1)  # (2, 9, 48), not contiguous
    check_op(lambda qkv: qkv_attention(qkv, 2, backend=backend), lambda qkv: plain(qkv, 2), {"qkv": qkv})
    empty = torch.randn(0, 5, 24, device=device, requires_grad=True)
    out = qkv_attention(empty, 2, backend=backend)
    out.sum().backward()
    assert out.shape == (0, 5, 8) and empty.grad.shape == empty.shape


@pytest.mark.parametrize("device,backend", [p for p in BACKEND_PARAMS if p.values[1] != "reference"])
def test_opcheck_and_gradcheck(device, backend):
    qkv = torch.randn(2, 5, 3 * 2 * 4, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.fxkernels._qkv_attention.default, (qkv, 2, 0.5, backend))
    assert gradcheck(lambda qkv: qkv_attention(qkv, 2, backend=backend), {"qkv": qkv.detach()})


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_compile_fullgraph(device, backend):
    if device == "cpu" and backend == "triton":
        pytest.skip("torch.compile of a Triton kernel needs a GPU (the interpreter runs eager only)")
    qkv = torch.randn(2, 9, 3 * 2 * 8, device=device)

    def fn(qkv):
        return qkv_attention(qkv, 2, backend=backend)

    compiled = torch.compile(fn, fullgraph=True, backend="eager" if backend == "reference" else "inductor")
    check_op(compiled, fn, {"qkv": qkv}, ref_dtype=None)


@pytest.mark.parametrize(
    "args,match",
    [
        pytest.param((torch.randn(2, 5, 24), 5), r"last axis \(24\) must be 3 \* num_heads", id="heads"),
        pytest.param((torch.randn(2, 5, 24), True), "num_heads=True", id="bool-heads"),
        pytest.param((torch.randn(5, 24), 2), "qkv", id="rank"),
        pytest.param((torch.randn(2, 0, 24), 2), "at least one token", id="no-tokens"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        qkv_attention(*args)

"""Attention, the C++ CPU backend (fxkernels/ops/attention/README.md, "Backend contract").

The public op with backend="cpu" vs attention_ref (torchvision's math) evaluated in fp64 on the same values:
the output and the gradients of q, k, v and the three rel-pos tables under a random upstream gradient, over
mvit-like grids (Lq > Lk, Lq < Lk, Lq = Lk, cls on / off, residual pooling with and without the cls row),
head widths 32 .. 256 and odd ones, several key tiles and query blocks (the kernels tile keys by 64 and queries
by 48), non-contiguous q / k / v, B = 0, and every CPU ISA variant (generic, avx2, avx512 where the CPU has it,
and avx512-emulated: the AVX-512 source compiled for AVX2). Also the kernel-level contract (O, lse vs
attention_rel_ref), fp64 gradcheck, bitwise determinism across runs and thread counts, and the TORCH_CHECKs of
the C++ ops called directly.
"""

import math

import pytest
import torch

import fxkernels
from fxkernels.ops.attention import attention, attention_ref
from fxkernels.ops.attention.reference import attention_rel_ref, rel_pos_gather, rel_pos_project
from fxkernels.testing import assert_close, assert_deterministic, check_op, gradcheck
from tests.conftest import AVAILABLE


def _have_ops() -> bool:
    return AVAILABLE["cpu"] and fxkernels._ext.has_kernel("attention_fwd", "cpu")


pytestmark = pytest.mark.skipif(
    not _have_ops(), reason="needs the compiled CPU kernels with attention_fwd/bwd"
)
ops = torch.ops.fxkernels

# (B, nh, thw_q, thw_k, hd, has_cls, add_q, add_q_cls)
CASES = [
    pytest.param(1, 1, (2, 6, 6), (2, 3, 3), 96, True, True, False, id="mvit-s1-Lq73-Lk19-hd96"),
    pytest.param(1, 2, (2, 3, 3), (2, 6, 6), 64, False, True, False, id="Lq18-Lk72-nocls-hd64"),
    pytest.param(2, 2, (3, 4, 5), (3, 4, 5), 32, True, True, True, id="Lq61-eq-Lk-addqcls-hd32"),
    pytest.param(1, 3, (2, 4, 3), (2, 2, 3), 128, True, False, False, id="Lq25-Lk13-noaddq-hd128"),
    pytest.param(1, 1, (2, 3, 3), (2, 3, 2), 256, False, False, False, id="Lq18-Lk12-hd256"),
    pytest.param(1, 2, (3, 5, 7), (3, 3, 4), 40, True, True, False, id="odd-Lq106-Lk37-hd40"),
    pytest.param(1, 1, (2, 5, 11), (2, 7, 7), 20, True, True, False, id="tiles-Lq111-Lk99-hd20"),
]


def _tables(thw_q, thw_k, hd, dtype, interp=False):
    """MViTv2 tables with 2*max(nq, nk)-1 rows per axis (one more with interp: linear interpolation)."""
    rows = [2 * max(a, b) - 1 + int(interp) for a, b in zip(thw_q, thw_k)]
    return {
        n: 0.5 * torch.randn(r, hd, dtype=dtype)
        for n, r in zip(("rel_pos_t", "rel_pos_h", "rel_pos_w"), rows)
    }


def _qkv_layout(t: torch.Tensor, slot: int) -> torch.Tensor:
    """t (B, nh, L, hd) as torchvision's qkv(x).reshape(B, L, 3, nh, hd).transpose(1, 3).unbind(2)[slot] view."""
    B, nh, L, hd = t.shape
    base = torch.randn(B, L, 3, nh, hd, dtype=t.dtype)
    base[:, :, slot] = t.transpose(1, 2)
    return base.transpose(1, 3)[:, :, slot]


def make_inputs(
    B, nh, thw_q, thw_k, hd, has_cls, dtype=torch.float64, tables=True, noncontig=False, interp=False
):
    c = int(has_cls)
    Lq, Lk = c + math.prod(thw_q), c + math.prod(thw_k)
    q = torch.randn(B, nh, Lq, hd, dtype=dtype)
    k = torch.randn(B, nh, Lk, hd, dtype=dtype)
    v = torch.randn(B, nh, Lk, hd, dtype=dtype)
    if noncontig:
        q, k, v = _qkv_layout(q, 0), _qkv_layout(k, 1), _qkv_layout(v, 2)
        assert not q.is_contiguous() and q.stride(-1) == 1
    inputs = {"q": q, "k": k, "v": v}
    if tables:
        inputs.update(_tables(thw_q, thw_k, hd, dtype, interp))
    return inputs


def _fns(thw_q, thw_k, has_cls, add_q, add_q_cls):
    kw = dict(thw_q=thw_q, thw_k=thw_k, has_cls=has_cls, add_q=add_q, add_q_cls=add_q_cls)
    return (lambda **t: attention(**t, **kw, backend="cpu")), (lambda **t: attention_ref(**t, **kw))


@pytest.mark.parametrize("B,nh,thw_q,thw_k,hd,has_cls,add_q,add_q_cls", CASES)
def test_matches_reference_fp64(B, nh, thw_q, thw_k, hd, has_cls, add_q, add_q_cls):
    fn, ref = _fns(thw_q, thw_k, has_cls, add_q, add_q_cls)
    check_op(fn, ref, make_inputs(B, nh, thw_q, thw_k, hd, has_cls))


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float64, id="fp64"), pytest.param(torch.float32, id="fp32")]
)
@pytest.mark.parametrize(
    "case",
    [
        pytest.param((1, 2, (2, 5, 5), (2, 3, 3), 48, True, True, False), id="Lq51-Lk19-hd48"),
        pytest.param((1, 1, (2, 2, 5), (2, 6, 6), 24, False, True, False), id="Lq20-Lk72-hd24"),
    ],
)
def test_isa_variants(isa, case, dtype):
    B, nh, thw_q, thw_k, hd, has_cls, add_q, add_q_cls = case
    fn, ref = _fns(thw_q, thw_k, has_cls, add_q, add_q_cls)
    check_op(fn, ref, make_inputs(B, nh, thw_q, thw_k, hd, has_cls, dtype=dtype))


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(torch.float32, id="fp32"),
        pytest.param(torch.float16, id="fp16"),
        pytest.param(torch.bfloat16, id="bf16"),
    ],
)
def test_low_precision(dtype):
    fn, ref = _fns((2, 4, 4), (2, 3, 3), True, True, False)
    check_op(fn, ref, make_inputs(1, 2, (2, 4, 4), (2, 3, 3), 64, True, dtype=dtype))


@pytest.mark.parametrize(
    "noncontig_last", [pytest.param(False, id="qkv-view"), pytest.param(True, id="last-axis-strided")]
)
def test_noncontiguous(noncontig_last):
    thw_q, thw_k = (2, 4, 3), (2, 2, 3)
    fn, ref = _fns(thw_q, thw_k, True, True, False)
    inputs = make_inputs(2, 2, thw_q, thw_k, 32, True, noncontig=not noncontig_last)
    if noncontig_last:  # last axis not unit-stride: the op makes it so
        for n in ("q", "k", "v"):
            inputs[n] = inputs[n].transpose(-1, -2).contiguous().transpose(-1, -2)
            assert inputs[n].stride(-1) != 1
    check_op(fn, ref, inputs)


@pytest.mark.parametrize(
    "has_cls,Lq,Lk",
    [
        pytest.param(False, 53, 70, id="nocls"),
        pytest.param(True, 54, 71, id="cls"),
        pytest.param(True, 6, 1, id="cls-key-only"),
    ],
)
def test_plain_attention(has_cls, Lq, Lk):
    # no tables: rel = None in the kernels
    kw = dict(has_cls=has_cls, add_q=True)
    inputs = {
        "q": torch.randn(2, 3, Lq, 64, dtype=torch.float64),
        "k": torch.randn(2, 3, Lk, 64, dtype=torch.float64),
        "v": torch.randn(2, 3, Lk, 64, dtype=torch.float64),
    }
    check_op(lambda **t: attention(**t, **kw, backend="cpu"), lambda **t: attention_ref(**t, **kw), inputs)


def test_interpolated_tables():
    fn, ref = _fns((2, 4, 4), (2, 2, 2), True, True, False)
    check_op(fn, ref, make_inputs(1, 1, (2, 4, 4), (2, 2, 2), 32, True, interp=True))


def test_kernel_contract_lse():
    # the C++ op itself: O and lse vs attention_rel_ref, in fp64 and fp32 (lse in the accumulation dtype)
    for dtype in (torch.float64, torch.float32):
        thw_q, thw_k = (2, 5, 5), (2, 3, 3)
        t = make_inputs(1, 2, thw_q, thw_k, 32, True, dtype=dtype)
        Gt, Gh, Gw = rel_pos_gather(t["rel_pos_t"], t["rel_pos_h"], t["rel_pos_w"], thw_q, thw_k)
        rel = rel_pos_project(t["q"], Gt, Gh, Gw, True)
        args = (rel, 0.3, list(thw_k), True, True, False)
        out, lse = ops.attention_fwd(t["q"], t["k"], t["v"], *args)
        q64, k64, v64 = (t[n].double() for n in "qkv")
        ro, rl = attention_rel_ref(q64, k64, v64, rel.double(), *args[1:])
        assert (
            out.dtype == dtype and out.is_contiguous() and lse.dtype == rel.dtype and lse.shape == (1, 2, 51)
        )
        assert_close(out, ro, dtype, "O")
        assert_close(lse, rl, dtype, "lse")
        # need_rel=False: an empty drel, the other gradients unchanged
        dout = torch.randn_like(out)
        full = ops.attention_bwd(
            dout, t["q"], t["k"], t["v"], rel, out, lse, 0.3, list(thw_k), True, True, False, True
        )
        part = ops.attention_bwd(
            dout, t["q"], t["k"], t["v"], rel, out, lse, 0.3, list(thw_k), True, True, False, False
        )
        assert full[3].shape == rel.shape and part[3].numel() == 0
        for a, b in zip(full[:3], part[:3]):
            assert torch.equal(a, b)


def test_empty_batch():
    fn, ref = _fns(None, None, False, True, False)
    got, _ = check_op(fn, ref, make_inputs(0, 2, (2, 3, 3), (2, 2, 2), 32, False, tables=False))
    assert got.outputs[0].shape == (0, 2, 18, 32)
    # with rel, through the C++ ops directly
    q, k = torch.randn(0, 2, 19, 32), torch.randn(0, 2, 9, 32)
    rel = torch.randn(0, 2, 18, 2 + 2 + 2)
    out, lse = ops.attention_fwd(q, k, k, rel, 0.2, [2, 2, 2], True, True, False)
    assert out.shape == q.shape and lse.shape == (0, 2, 19)
    dq, dk, dv, drel = ops.attention_bwd(out, q, k, k, rel, out, lse, 0.2, [2, 2, 2], True, True, False, True)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == k.shape and drel.shape == rel.shape
    # no query rows at all: dk, dv are zeros, not left unwritten
    q, k = torch.randn(1, 2, 0, 16), torch.randn(1, 2, 5, 16)
    out, lse = ops.attention_fwd(q, k, k, None, 0.25, [1, 1, 5], False, False, False)
    assert out.shape == (1, 2, 0, 16) and lse.shape == (1, 2, 0)
    dq, dk, dv, _ = ops.attention_bwd(q, q, k, k, None, out, lse, 0.25, [1, 1, 5], False, False, False, False)
    assert dq.shape == q.shape and not dk.any() and not dv.any()


def test_gradcheck():
    thw_q, thw_k = (2, 2, 3), (1, 2, 2)
    fn, _ = _fns(thw_q, thw_k, True, True, False)
    assert gradcheck(fn, make_inputs(1, 1, thw_q, thw_k, 8, True), eps=1e-6, atol=1e-7)


def test_deterministic_and_thread_independent():
    # B x nh = 1 and Lq = 241: five query blocks, each its own chunk of the backward (partial dk, dv summed)
    thw_q, thw_k = (3, 8, 10), (3, 5, 6)
    fn, _ = _fns(thw_q, thw_k, True, True, False)
    inputs = make_inputs(1, 1, thw_q, thw_k, 32, True, dtype=torch.float32)
    first = assert_deterministic(fn, inputs)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = assert_deterministic(fn, inputs, first.upstream)
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(first.outputs[0], again.outputs[0])
    for n, g in first.grads.items():
        assert torch.equal(g, again.grads[n]), f"d{n} depends on the thread count"


def test_torch_checks():
    q, k, v = torch.randn(1, 2, 10, 16), torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    rel = torch.randn(1, 2, 9, 1 + 2 + 2)
    good = (0.25, [1, 2, 2], True, False, False)
    out, lse = ops.attention_fwd(q, k, v, rel, *good)
    with pytest.raises(
        RuntimeError, match=r"attention_fwd: rel must have shape \(B, nh, Lq - c, Tk\+Hk\+Wk\)"
    ):
        ops.attention_fwd(q, k, v, rel[..., :4], *good)
    with pytest.raises(RuntimeError, match="attention_fwd: k must have the same dtype as q"):
        ops.attention_fwd(q, k.double(), v, rel, *good)
    with pytest.raises(
        RuntimeError, match=r"attention_fwd: k must have shape \(B, nh, Lk, hd\) = \(1, 2, Lk, 16\)"
    ):
        ops.attention_fwd(q, k[..., :8], v[..., :8], rel, *good)
    with pytest.raises(RuntimeError, match=r"attention_fwd: v must have shape \(B, nh, Lk, hd\)"):
        ops.attention_fwd(q, k, v[:, :, :4], rel, *good)
    with pytest.raises(RuntimeError, match="attention_fwd: rel must have the accumulation dtype"):
        ops.attention_fwd(q, k, v, rel.double(), *good)
    with pytest.raises(RuntimeError, match="attention_fwd: thw_k"):
        ops.attention_fwd(q, k, v, rel, 0.25, [1, 2, 3], True, False, False)
    with pytest.raises(RuntimeError, match="attention_fwd: q must be 4-D"):
        ops.attention_fwd(q[0], k, v, rel, *good)
    with pytest.raises(RuntimeError, match="attention_fwd: q must be float32, float64"):
        ops.attention_fwd(q.long(), k.long(), v.long(), None, *good)
    with pytest.raises(RuntimeError, match=r"attention_bwd: lse must have shape \(B, nh, Lq\)"):
        ops.attention_bwd(out, q, k, v, rel, out, lse[..., :5], *good, True)
    with pytest.raises(RuntimeError, match="attention_bwd: dout must have shape"):
        ops.attention_bwd(out[:, :1], q, k, v, rel, out, lse, *good, True)
    with pytest.raises(RuntimeError, match="attention_bwd: need_rel=True needs rel"):
        ops.attention_bwd(out, q, k, v, None, out, lse, *good, True)

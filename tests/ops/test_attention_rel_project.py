"""The cpu kernel of attention's rel-pos projection (`fxkernels::_rel_pos_project`, csrc/attention/rel_project_cpu.cpp)
vs `reference.rel_pos_project`: rel and the gradients of q and the three gathered tables under a random upstream
gradient, fp64 gradcheck, opcheck, determinism across thread counts, empty batches and bad input."""

import pytest
import torch

from fxkernels.ops.attention.reference import rel_pos_gather, rel_pos_project
from fxkernels.ops.attention.rel_project import rel_project
from fxkernels.testing import assert_deterministic, check_op, gradcheck
from tests.conftest import AVAILABLE

if not AVAILABLE["cpu"]:
    pytest.skip("the C++ extension is not built", allow_module_level=True)


def make(B, nh, thw_q, thw_k, hd, has_cls, dtype=torch.float64, layout="contig"):
    c = int(has_cls)
    L = c + thw_q[0] * thw_q[1] * thw_q[2]
    if layout == "heads-last":
        q = torch.randn(B, L, nh, hd, dtype=torch.float64).transpose(1, 2)
    else:
        q = torch.randn(B, nh, L, hd, dtype=torch.float64)
    tables = [torch.randn(2 * max(a, b) - 1, hd, dtype=torch.float64) for a, b in zip(thw_q, thw_k)]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    G = [g.to(acc) for g in rel_pos_gather(*tables, thw_q, thw_k)]
    return {"q": q.to(dtype), "Gt": G[0], "Gh": G[1], "Gw": G[2]}


def fused(has_cls):
    return lambda q, Gt, Gh, Gw: rel_project(q, Gt, Gh, Gw, has_cls, "cpu")


def ref(has_cls):
    return lambda q, Gt, Gh, Gw: rel_pos_project(q, Gt, Gh, Gw, has_cls)


@pytest.mark.parametrize(
    "B,nh,thw_q,thw_k,hd,has_cls,layout",
    [
        pytest.param(1, 1, (2, 4, 4), (2, 2, 2), 32, True, "contig", id="mvit-cls-hd32"),
        pytest.param(2, 3, (3, 5, 7), (3, 2, 3), 96, False, "heads-last", id="odd-grid-hd96-heads-last"),
        pytest.param(1, 2, (1, 3, 2), (2, 3, 5), 17, True, "contig", id="lq-lt-lk-hd17"),
    ],
)
@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float64, id="fp64"), pytest.param(torch.float32, id="fp32")]
)
def test_matches_reference(B, nh, thw_q, thw_k, hd, has_cls, layout, dtype):
    inp = make(B, nh, thw_q, thw_k, hd, has_cls, dtype, layout)
    check_op(fused(has_cls), ref(has_cls), inp, dtype=dtype, check_dtype=False)


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]
)
def test_half_q(dtype):
    """Half q: rel and the table gradients in fp32, dq in q's dtype."""
    inp = make(2, 2, (2, 3, 3), (2, 2, 2), 32, True, dtype)
    got, _ = check_op(fused(True), ref(True), inp, dtype=dtype, check_dtype=False)
    assert got.outputs[0].dtype == torch.float32 and got.grads["q"].dtype == dtype


def test_gradcheck_fp64():
    inp = make(2, 2, (2, 2, 3), (1, 2, 2), 5, True)
    assert gradcheck(fused(True), inp, eps=1e-6, atol=1e-8)


def test_deterministic_across_threads():
    inp = make(2, 3, (3, 4, 5), (2, 2, 3), 24, False, torch.float32)
    first = assert_deterministic(fused(False), inp)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = assert_deterministic(fused(False), inp, upstream=first.upstream)
    finally:
        torch.set_num_threads(saved)
    for a, b in zip(first.outputs + tuple(first.grads.values()), again.outputs + tuple(again.grads.values())):
        assert torch.equal(a, b)


def test_opcheck():
    inp = make(2, 2, (2, 3, 2), (2, 1, 2), 8, True, torch.float32)
    args = [t.requires_grad_(True) for t in inp.values()]
    torch.library.opcheck(torch.ops.fxkernels._rel_pos_project.default, (*args, True, "cpu"))


def test_empty_batch():
    inp = make(0, 2, (2, 2, 2), (1, 2, 2), 8, True)
    leaves = {k: v.requires_grad_(True) for k, v in inp.items()}
    rel = rel_project(*leaves.values(), True, "cpu")
    assert rel.shape == (0, 2, 8, 5)
    rel.sum().backward()
    assert leaves["q"].grad.shape == leaves["q"].shape
    assert all(float(leaves[k].grad.abs().sum()) == 0 for k in ("Gt", "Gh", "Gw"))


def test_bad_input():
    inp = make(1, 2, (2, 2, 2), (1, 2, 2), 8, True, torch.float32)
    q, Gt, Gh, Gw = inp.values()
    op = torch.ops.fxkernels.rel_pos_project_fwd
    with pytest.raises(RuntimeError, match="Gt must be in q's accumulation dtype"):
        op(q, Gt.double(), Gh, Gw, True)
    with pytest.raises(RuntimeError, match="Gh must be .nq, nk, hd. with q's hd = 8"):
        op(q, Gt, Gh[..., :4], Gw, True)
    with pytest.raises(RuntimeError, match="q must have c \\+ Tq\\*Hq\\*Wq = 1 \\+ 8 tokens"):
        op(q[:, :, 1:], Gt, Gh, Gw, True)
    with pytest.raises(RuntimeError, match="q must be float32, float64, float16 or bfloat16"):
        op(q.int(), Gt, Gh, Gw, True)
    rel = op(q, Gt, Gh, Gw, True)
    with pytest.raises(RuntimeError, match="drel must have shape"):
        torch.ops.fxkernels.rel_pos_project_bwd(rel[..., :3], q, Gt, Gh, Gw, True, True, True)

"""Attention (fxkernels/ops/attention/README.md): the Triton backend vs the fp64 references, outputs and every
gradient (q, k, v and the three rel-pos tables, under a random upstream gradient).

The public op `fxkernels.attention(backend="triton")` is held to `attention_ref` (torchvision's math) and the
launchers to `attention_rel_ref` (the kernel contract: lse and drel too). Runs the kernels on CPU tensors under
TRITON_INTERPRET=1 (set by conftest when there is no GPU) or on CUDA; small shapes (the interpreter is slow).
"""

import math
import os
from functools import partial

import pytest
import torch

import fxkernels
from fxkernels.ops.attention.reference import attention_ref, attention_rel_ref
from fxkernels.testing import assert_close, assert_deterministic, check_op, gradcheck, run_with_grads
from tests.conftest import AVAILABLE

if not AVAILABLE["triton"]:
    pytest.skip("triton is not available", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

from fxkernels._triton_utils import record_launches  # noqa: E402
from fxkernels.ops.attention.triton import (  # noqa: E402
    MAX_R,
    attention_bwd_triton,
    attention_fwd_triton,
    unsupported,
)

HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


def kernel_dtype(dtype, hd, R, call=None):
    """`dtype` if the Triton tiles take (dtype, hd, R) (triton_common.BLOCKS), else fp16 (which takes every
    class); for a refused class first checks that `call(dtype)` raises the ValueError naming it."""
    if unsupported(dtype, hd, R) is None:
        return dtype
    if call is not None:
        with pytest.raises(ValueError, match="no spill-free tiles"):
            call(dtype)
    return torch.float16


def rand(shape, dtype, layout="contig"):
    """(B, nh, L, hd) standard normal in `layout`: "contig"; "heads-last" (a (B, L, nh, hd) tensor transposed, as
    torchvision's qkv split gives); "strided-d" (every other element of the last axis: no unit stride there)."""
    B, nh, L, hd = shape
    if layout == "heads-last":
        t = torch.randn(B, L, nh, hd, dtype=torch.float64).transpose(1, 2)
    elif layout == "strided-d":
        t = torch.randn(B, nh, L, 2 * hd, dtype=torch.float64)[..., ::2]
    else:
        t = torch.randn(shape, dtype=torch.float64)
    t = t.to(dtype=dtype, device=DEVICE)
    assert layout == "contig" or B * nh * L == 0 or not t.is_contiguous()
    return t


def make(B, nh, thw_q, thw_k, hd, has_cls, dtype, layout="contig", tables=True, extra_rows=0):
    """Inputs of `fxkernels.attention` / `attention_ref`; tables of 2*max(nq, nk)-1 rows (+ extra_rows: then
    they are interpolated), scaled so that each axis' bias is about N(0, 1)."""
    c = int(has_cls)
    Lq, Lk = c + math.prod(thw_q), c + math.prod(thw_k)
    inp = {
        "q": rand((B, nh, Lq, hd), dtype, layout),
        "k": rand((B, nh, Lk, hd), dtype, layout),
        "v": rand((B, nh, Lk, hd), dtype, "contig" if layout == "heads-last" else layout),
        "has_cls": has_cls,
    }
    if tables:
        for name, nq, nk in zip(("rel_pos_t", "rel_pos_h", "rel_pos_w"), thw_q, thw_k):
            rows = 2 * max(nq, nk) - 1 + extra_rows
            inp[name] = (torch.randn(rows, hd, dtype=torch.float64) * hd**-0.5).to(dtype=dtype, device=DEVICE)
        inp.update(thw_q=tuple(thw_q), thw_k=tuple(thw_k))
    return inp


def triton_attention(**kw):
    return fxkernels.attention(**kw, backend="triton")


# (B, nh, thw_q, thw_k, hd, has_cls, add_q, add_q_cls, layout): mvit_v2_s-like blocks scaled down (T 2-3), the
# three Lq / Lk orders, odd token counts, every head class, several key / query tiles, non-contiguous inputs
SHAPES = [
    pytest.param(1, 1, (2, 4, 4), (2, 2, 2), 32, True, True, False, "contig", id="mvit-cls-lq33-lk9-hd32"),
    pytest.param(
        2, 2, (2, 3, 3), (2, 3, 3), 64, True, True, True, "heads-last", id="lq19-eq-lk-addqcls-heads-last"
    ),
    pytest.param(
        1, 2, (1, 2, 3), (3, 3, 5), 32, False, False, False, "strided-d", id="lq6-lt-lk45-strided-d"
    ),
    pytest.param(
        1, 2, (3, 3, 3), (3, 2, 2), 96, True, True, False, "heads-last", id="hd96-lq28-lk13-heads-last"
    ),
    pytest.param(1, 1, (2, 2, 3), (2, 3, 2), 128, False, True, False, "contig", id="hd128-lq12-lk12"),
    pytest.param(1, 1, (1, 3, 3), (1, 2, 3), 256, True, True, False, "contig", id="hd256-lq10-lk7"),
    pytest.param(1, 1, (3, 5, 5), (3, 3, 3), 64, False, True, False, "contig", id="mtstwn-lq75-lk27-hd64"),
    pytest.param(1, 1, (2, 3, 5), (2, 5, 7), 32, True, False, False, "contig", id="lq31-lk71-key-tiles"),
]


@pytest.mark.parametrize("B,nh,thw_q,thw_k,hd,has_cls,add_q,add_q_cls,layout", SHAPES)
def test_matches_reference_fp64(B, nh, thw_q, thw_k, hd, has_cls, add_q, add_q_cls, layout):
    """fp64 where the Triton tiles take the class; a wide class they refuse raises first and runs in bf16."""

    def run(dtype):
        inp = make(B, nh, thw_q, thw_k, hd, has_cls, dtype, layout)
        check_op(triton_attention, attention_ref, dict(inp, add_q=add_q, add_q_cls=add_q_cls))

    run(kernel_dtype(torch.float64, hd, sum(thw_k), run))


@pytest.mark.parametrize(
    "thw_q,thw_k,hd,has_cls",
    [
        pytest.param((2, 3, 3), (2, 2, 2), 64, True, id="mvit-cls-hd64"),
        pytest.param((1, 3, 5), (2, 5, 5), 96, False, id="lq15-lt-lk50-hd96"),
        pytest.param((1, 2, 3), (1, 3, 3), 200, True, id="hd200-head-chunks"),
    ],
)
def test_matches_reference_fp32(thw_q, thw_k, hd, has_cls):
    def run(dtype):
        inp = make(2, 2, thw_q, thw_k, hd, has_cls, dtype, "heads-last")
        check_op(triton_attention, attention_ref, dict(inp, add_q=True, add_q_cls=False))

    run(kernel_dtype(torch.float32, hd, sum(thw_k), run))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(
    "thw_q,thw_k,hd,has_cls",
    [
        pytest.param((2, 3, 3), (2, 2, 2), 64, True, id="mvit-cls-hd64"),
        pytest.param((1, 3, 5), (2, 3, 5), 96, False, id="lq15-lt-lk30-hd96"),
    ],
)
def test_half_matches_reference(thw_q, thw_k, hd, has_cls, dtype):
    """fp16 / bf16 inputs (fp32 accumulation, P and dS rounded to the input dtype for the products) vs the fp64
    reference on the same values, with the harness tolerances of the dtype."""
    inp = make(1, 2, thw_q, thw_k, hd, has_cls, dtype)
    check_op(triton_attention, attention_ref, dict(inp, add_q=True, add_q_cls=False))


def test_tables_interpolated():
    """Tables whose length is not 2*max(nq, nk)-1 are linearly interpolated (torchvision `_interpolate`)."""
    for extra in (4, -2):
        inp = make(1, 2, (3, 4, 2), (2, 2, 3), 32, True, torch.float64, extra_rows=extra)
        check_op(triton_attention, attention_ref, dict(inp, add_q=True, add_q_cls=False))


@pytest.mark.parametrize(
    "Lq,Lk,hd,has_cls,add_q,add_q_cls",
    [
        pytest.param(13, 70, 32, False, False, False, id="lq13-lk70"),
        pytest.param(37, 5, 64, True, True, False, id="cls-lq37-lk5-addq"),
        pytest.param(9, 9, 96, True, True, True, id="cls-lq9-lk9-addqcls"),
    ],
)
def test_plain_attention(Lq, Lk, hd, has_cls, add_q, add_q_cls):
    """No tables: plain softmax attention (the cls row only matters for the residual)."""
    inp = {
        "q": rand((2, 2, Lq, hd), torch.float64, "heads-last"),
        "k": rand((2, 2, Lk, hd), torch.float64),
        "v": rand((2, 2, Lk, hd), torch.float64, "strided-d"),
    }
    check_op(triton_attention, attention_ref, dict(inp, has_cls=has_cls, add_q=add_q, add_q_cls=add_q_cls))


def test_scale_given():
    inp = make(1, 2, (2, 2, 3), (1, 2, 3), 32, True, torch.float64)
    for scale in (0.3, 1.7):
        check_op(partial(triton_attention, scale=scale), partial(attention_ref, scale=scale), inp)


def test_gradcheck_fp64():
    inp = make(1, 1, (1, 2, 2), (1, 1, 2), 4, True, torch.float64)
    fn = partial(triton_attention, add_q=True)
    assert gradcheck(fn, inp, eps=1e-6, atol=1e-8, fast_mode=True)
    plain = {k: inp[k] for k in ("q", "k", "v")}
    assert gradcheck(triton_attention, plain, eps=1e-6, atol=1e-8, fast_mode=True)


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
)
def test_deterministic(dtype):
    """Two identical runs are bitwise equal, forward and backward (every output row owned by one program)."""
    inp = make(2, 2, (2, 3, 3), (2, 5, 3), 32, True, dtype)
    assert_deterministic(partial(triton_attention, add_q=True), inp)


@pytest.mark.parametrize(
    "dtype,hd,tables",
    [
        pytest.param(torch.float32, 256, False, id="fp32-hd256-plain"),
        pytest.param(torch.float32, 128, True, id="fp32-hd128-bias"),
        pytest.param(torch.float64, 256, True, id="fp64-hd256-bias"),
    ],
)
def test_head_chunked_classes(dtype, hd, tables):
    """The classes whose whole-head tiles spill run head-chunked (BLOCK_DC < BLOCK_D: each program owns a slice
    of the outputs' head columns, triton_common.BLOCKS): at least one of the three launches is chunked, and
    the outputs and gradients match the fp64 reference."""
    from fxkernels.ops.attention.triton_common import bd_class, meta

    bd = bd_class(hd)
    chunked = [
        m["BLOCK_DC"] < bd for m in (meta(kind, dtype, "ieee", bd, tables) for kind in ("fwd", "row", "col"))
    ]
    assert any(chunked), chunked
    inp = make(1, 2, (2, 2, 3), (1, 3, 2), hd, True, dtype, "heads-last", tables=tables)
    check_op(partial(triton_attention, add_q=True), partial(attention_ref, add_q=True), inp)
    assert_deterministic(partial(triton_attention, add_q=True), inp)


# --------------------------------------------------------------------------------------------- launchers
def launch_both(q, k, v, rel, thw_k, has_cls, add_q, add_q_cls, dout, need_rel=True, scale=0.2):
    o, lse = attention_fwd_triton(q, k, v, rel, scale, list(thw_k), has_cls, add_q, add_q_cls)
    grads = attention_bwd_triton(
        dout, q, k, v, rel, o, lse, scale, list(thw_k), has_cls, add_q, add_q_cls, need_rel
    )
    return o, lse, grads


@pytest.mark.parametrize(
    "Lq,thw_k,hd,has_cls,add_q,add_q_cls",
    [
        pytest.param(20, (2, 3, 5), 32, True, True, False, id="cls-lq20-lk31"),
        pytest.param(70, (1, 2, 3), 64, False, True, True, id="lq70-lk6"),
        pytest.param(5, (30, 2, 1), 32, True, False, False, id="cls-R33"),
        pytest.param(3, (126, 1, 1), 32, False, False, False, id="R128-lk126"),
    ],
)
def test_launchers_match_rel_reference(Lq, thw_k, hd, has_cls, add_q, add_q_cls):
    """O, lse, dq, dk, dv and drel of the launchers vs autograd of attention_rel_ref (fp64), rel of each width
    class (R = Tk+Hk+Wk up to MAX_R); need_rel=False returns no drel and the same other gradients."""
    c = int(has_cls)
    Lk = c + math.prod(thw_k)

    def inputs(dtype):
        adt = torch.float64 if dtype == torch.float64 else torch.float32
        q, k, v = (rand((1, 2, n, hd), dtype) for n in (Lq, Lk, Lk))
        rel = torch.randn(1, 2, Lq - c, sum(thw_k), dtype=adt, device=DEVICE)
        return q, k, v, rel, torch.randn_like(q)

    dtype = kernel_dtype(
        torch.float64,
        hd,
        sum(thw_k),
        lambda dt: launch_both(*inputs(dt)[:4], thw_k, has_cls, add_q, add_q_cls, inputs(dt)[4]),
    )
    q, k, v, rel, dout = inputs(dtype)
    o, lse, (dq, dk, dv, drel) = launch_both(q, k, v, rel, thw_k, has_cls, add_q, add_q_cls, dout)
    ref = run_with_grads(
        lambda q, k, v, rel: attention_rel_ref(q, k, v, rel, 0.2, thw_k, has_cls, add_q, add_q_cls),
        {"q": q.double(), "k": k.double(), "v": v.double(), "rel": rel.double()},
        (dout.double(), None),
    )
    assert o.is_contiguous() and lse.is_contiguous() and lse.dtype == rel.dtype
    for name, a, e in (("O", o, ref.outputs[0]), ("lse", lse, ref.outputs[1]), ("dk", dk, ref.grads["k"])):
        assert_close(a, e, dtype=dtype, name=name)
    assert_close(dv, ref.grads["v"], dtype=dtype, name="dv")
    assert_close(drel, ref.grads["rel"], dtype=dtype, name="drel")
    # dq of the launchers excludes the path through rel: rel_ref's dq is the direct part (rel is a leaf there)
    assert_close(dq, ref.grads["q"], dtype=dtype, name="dq")
    _, _, (dq2, dk2, dv2, drel2) = launch_both(
        q, k, v, rel, thw_k, has_cls, add_q, add_q_cls, dout, need_rel=False
    )
    assert drel2 is None and torch.equal(dq2, dq) and torch.equal(dk2, dk) and torch.equal(dv2, dv)


def test_empty_batch():
    """B = 0 through the public op (plain attention; with tables: test_attention_edge_cases.py) and
    through the launchers with a rel of B = 0."""
    inp = {"q": rand((0, 2, 5, 32), torch.float64), "k": rand((0, 2, 7, 32), torch.float64)}
    inp["v"] = inp["k"].clone()
    got, _ = check_op(triton_attention, attention_ref, dict(inp, add_q=True))
    assert got.outputs[0].shape == (0, 2, 5, 32)
    q, k = inp["q"], inp["k"]
    rel = torch.zeros(0, 2, 4, 6, dtype=torch.float64, device=DEVICE)
    with record_launches() as rec:
        o, lse, (dq, dk, dv, drel) = launch_both(q, k, k, rel, (1, 2, 3), True, True, False, q)
    assert not rec and o.shape == dq.shape == q.shape and drel.shape == rel.shape and dk.shape == k.shape


def test_launchers_empty():
    """B = 0, nh = 0 or Lq = 0: empty outputs (dk, dv zero) and nothing launched."""
    for B, nh, Lq in ((0, 2, 5), (2, 0, 5), (2, 2, 0)):
        q = torch.randn(B, nh, Lq, 32, device=DEVICE)
        k = torch.randn(B, nh, 6, 32, device=DEVICE)
        with record_launches() as rec:
            o, lse, (dq, dk, dv, drel) = launch_both(q, k, k, None, (1, 1, 6), False, True, False, q)
        assert not rec
        assert o.shape == dq.shape == q.shape and lse.shape == (B, nh, Lq) and drel is None
        assert dk.shape == dv.shape == k.shape and not dk.any() and not dv.any()


def test_launchers_bad_input():
    q = torch.randn(1, 2, 9, 32, device=DEVICE)
    k = torch.randn(1, 2, 7, 32, device=DEVICE)
    rel = torch.randn(1, 2, 8, 7, device=DEVICE)
    fwd = attention_fwd_triton
    with pytest.raises(ValueError, match="rel must be"):
        fwd(q, k, k, rel[:, :, :7], 0.1, [1, 2, 3], True, False, False)
    with pytest.raises(ValueError, match="rel must be"):
        fwd(q, k, k, rel.double(), 0.1, [1, 2, 3], True, False, False)
    with pytest.raises(ValueError, match="thw_k"):
        fwd(q, k, k, rel, 0.1, [1, 2, 2], True, False, False)
    with pytest.raises(ValueError, match="v must be"):
        fwd(q, k, k.half(), rel, 0.1, [1, 2, 3], True, False, False)
    with pytest.raises(ValueError, match="hd"):
        fwd(
            q.new_zeros(1, 2, 9, 300),
            k.new_zeros(1, 2, 7, 300),
            k.new_zeros(1, 2, 7, 300),
            None,
            0.1,
            [1, 1, 7],
            False,
            False,
            False,
        )
    wide = (1, 1, MAX_R)  # R = MAX_R + 2
    kw = torch.randn(1, 2, MAX_R, 32, device=DEVICE)
    with pytest.raises(ValueError, match=f"> {MAX_R}"):
        fwd(q, kw, kw, torch.randn(1, 2, 9, MAX_R + 2, device=DEVICE), 0.1, list(wide), False, False, False)


def test_opcheck():
    """The registered kit op on the Triton backend: schema, fakes, autograd registration (torch.compile's path)."""
    inp = make(1, 2, (1, 2, 3), (1, 2, 2), 32, True, torch.float32)
    rel = torch.randn(1, 2, 6, 5, device=DEVICE)
    args = [inp["q"], inp["k"], inp["v"], rel]
    args = [t.detach().requires_grad_(True) for t in args]
    torch.library.opcheck(
        torch.ops.fxkernels.attention.default, (*args, 0.2, [1, 2, 2], True, True, False, "triton")
    )
    plain = [t.detach().requires_grad_(True) for t in args[:3]]
    torch.library.opcheck(
        torch.ops.fxkernels.attention.default, (*plain, None, 0.2, [1, 1, 4], True, False, False, "triton")
    )

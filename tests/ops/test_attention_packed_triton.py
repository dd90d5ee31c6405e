"""Attention's packed short-sequence Triton path (fxkernels/ops/attention/triton_packed.py) vs the fp64 references:
outputs and every gradient (q, k, v, under a random upstream gradient), which path the launchers take, and that
the packed and flash kernels share their lse.

The public op `fxkernels.attention(backend="triton")` without tables is held to `attention_ref` and the launchers
to `attention_rel_ref` (O and lse of the kernel contract too). Runs on CPU tensors under TRITON_INTERPRET=1 (set
by conftest when there is no GPU) or on CUDA; small shapes (the interpreter is slow).
"""

import os

import pytest
import torch

import fxkernels
from fxkernels.ops.attention.reference import attention_ref, attention_rel_ref
from fxkernels.testing import assert_close, assert_deterministic, check_op, run_with_grads
from tests.conftest import AVAILABLE

if not AVAILABLE["triton"]:
    pytest.skip("triton is not available", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

from fxkernels._triton_utils import kernel_name, record_launches  # noqa: E402
from fxkernels.ops.attention import triton_packed  # noqa: E402
from fxkernels.ops.attention.triton import attention_bwd_triton, attention_fwd_triton  # noqa: E402
from fxkernels.ops.attention.triton_packed import PACKED, packed_cfg, uses_packed  # noqa: E402

FP32 = pytest.param(torch.float32, id="fp32")
FP64 = pytest.param(torch.float64, id="fp64")
FP16 = pytest.param(torch.float16, id="fp16")
BF16 = pytest.param(torch.bfloat16, id="bf16")
PACKED_KERNELS = {"_attention_packed_fwd_kernel", "_attention_packed_bwd_kernel"}


def rand(shape, dtype, layout="contig"):
    """(B, nh, L, hd) standard normal, "contig" or "heads-last" (a (B, L, nh, hd) tensor transposed)."""
    B, nh, L, hd = shape
    if layout == "heads-last":
        t = torch.randn(B, L, nh, hd, dtype=torch.float64).transpose(1, 2)
    else:
        t = torch.randn(shape, dtype=torch.float64)
    return t.to(dtype=dtype, device=DEVICE)


def qkv_packed(S, L, nh, hd, dtype):
    """q, k, v as the three slices of one (S, L, 3, nh, hd) tensor permuted to (3, S, nh, L, hd): STT's qkv
    split, strides (3 nh hd L, hd, 3 nh hd) on the first three axes."""
    qkv = torch.randn(S, L, 3, nh, hd, dtype=torch.float64).to(dtype=dtype, device=DEVICE)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous() and q.stride() == (L * 3 * nh * hd, hd, 3 * nh * hd, 1)
    return q, k, v


def kernels_launched(fn) -> list:
    with record_launches() as rec:
        fn()
    return [kernel_name(f) for f, _, _ in rec]


def triton_attention(**kw):
    return fxkernels.attention(**kw, backend="triton")


# (B, nh, Lq, Lk, hd, has_cls, add_q, add_q_cls, layout, dtype): STT's shapes (narrowed in B), BLOCK_L 16 / 32 /
# 64, odd lengths with Lq != Lk both ways, odd head widths, the cls row with and without its residual, a pair
# count that is no multiple of PAIRS, every dtype
SHAPES = [
    pytest.param(2, 8, 49, 49, 64, False, False, False, "contig", torch.float16, id="stt-space-49-fp16"),
    pytest.param(2, 8, 49, 49, 64, False, False, False, "contig", torch.float64, id="stt-space-49-fp64"),
    pytest.param(2, 8, 49, 49, 64, False, True, False, "heads-last", torch.float32, id="stt-space-49-fp32"),
    pytest.param(
        3, 8, 17, 17, 64, True, True, False, "heads-last", torch.bfloat16, id="stt-time-17-cls-bf16"
    ),
    pytest.param(3, 8, 17, 17, 64, True, True, False, "contig", torch.float32, id="stt-time-17-cls-fp32"),
    pytest.param(2, 8, 16, 16, 64, False, True, False, "contig", torch.float32, id="l16-addq-fp32"),
    pytest.param(3, 3, 7, 33, 24, False, True, False, "heads-last", torch.float64, id="lq7-lk33-hd24-fp64"),
    pytest.param(1, 5, 33, 7, 40, True, True, True, "contig", torch.float64, id="lq33-lk7-hd40-addqcls-fp64"),
    pytest.param(3, 3, 1, 7, 40, False, True, False, "contig", torch.float16, id="lq1-lk7-hd40-fp16"),
    pytest.param(1, 3, 33, 1, 24, False, False, False, "contig", torch.bfloat16, id="lq33-lk1-hd24-bf16"),
    pytest.param(3, 3, 7, 7, 24, True, True, False, "contig", torch.float32, id="lq7-lk7-hd24-cls-fp32"),
    pytest.param(1, 3, 9, 12, 200, False, True, False, "contig", torch.float16, id="lq9-lk12-hd200-fp16"),
]


@pytest.mark.parametrize("B,nh,Lq,Lk,hd,has_cls,add_q,add_q_cls,layout,dtype", SHAPES)
def test_matches_reference(B, nh, Lq, Lk, hd, has_cls, add_q, add_q_cls, layout, dtype):
    """The public op without tables vs attention_ref: output, dq, dk, dv (the harness tolerances of the
    dtype); the forward takes the packed kernel."""
    inp = {
        "q": rand((B, nh, Lq, hd), dtype, layout),
        "k": rand((B, nh, Lk, hd), dtype, layout),
        "v": rand((B, nh, Lk, hd), dtype),
        "has_cls": has_cls,
        "add_q": add_q,
        "add_q_cls": add_q_cls,
    }
    assert uses_packed(inp["q"], inp["k"], None, "fwd")
    check_op(triton_attention, attention_ref, inp)


@pytest.mark.parametrize("dtype", [FP64, FP32, FP16, BF16])
def test_qkv_permuted_views(dtype):
    """q, k, v as permuted views of one qkv tensor (no unit stride but the last), as STT splits them."""
    q, k, v = qkv_packed(3, 17, 4, 40, dtype)
    check_op(triton_attention, attention_ref, {"q": q, "k": k, "v": v, "add_q": True})


@pytest.mark.parametrize(
    "Lq,Lk,hd,has_cls,add_q,add_q_cls",
    [
        pytest.param(49, 49, 64, False, True, False, id="l49-addq"),
        pytest.param(17, 9, 40, True, True, False, id="cls-lq17-lk9-hd40"),
        pytest.param(5, 17, 24, True, True, True, id="cls-lq5-lk17-addqcls"),
    ],
)
def test_launchers_match_rel_reference(Lq, Lk, hd, has_cls, add_q, add_q_cls):
    """O, lse (fp64, contiguous), dq, dk, dv of the launchers vs autograd of attention_rel_ref without rel;
    both launchers run packed; no drel."""
    q, k, v, dout = (rand((2, 3, n, hd), torch.float64) for n in (Lq, Lk, Lk, Lq))
    args = (0.2, [1, 1, Lk - int(has_cls)], has_cls, add_q, add_q_cls)
    assert uses_packed(q, k, None, "fwd") and uses_packed(q, k, None, "bwd")
    o, lse = attention_fwd_triton(q, k, v, None, *args)
    dq, dk, dv, drel = attention_bwd_triton(dout, q, k, v, None, o, lse, *args, True)
    ref = run_with_grads(
        lambda q, k, v: attention_rel_ref(q, k, v, None, 0.2, None, has_cls, add_q, add_q_cls),
        {"q": q, "k": k, "v": v},
        (dout, None),
    )
    assert o.is_contiguous() and lse.is_contiguous() and lse.dtype == torch.float64 and drel is None
    for name, a, e in (("O", o, ref.outputs[0]), ("lse", lse, ref.outputs[1])):
        assert_close(a, e, dtype=torch.float64, name=name)
    for name, a in (("q", dq), ("k", dk), ("v", dv)):
        assert a.is_contiguous()
        assert_close(a, ref.grads[name], dtype=torch.float64, name="d" + name)


def test_packed_path_taken():
    """uses_packed and the launches agree: no rel, Lq, Lk <= 64 and packed tiles -> the packed kernels (one
    launch each way); Lk = 65, Lq = 65 or a rel bias -> the flash kernels (forward, row and column pass)."""
    q, k = rand((2, 3, 49, 64), torch.float16), rand((2, 3, 64, 64), torch.float16)

    def both(q, k, rel=None, thw_k=None):
        thw = thw_k or [1, 1, k.shape[2]]
        o, lse = attention_fwd_triton(q, k, k, rel, 0.125, thw, False, True, False)
        return lambda: (
            attention_fwd_triton(q, k, k, rel, 0.125, thw, False, True, False),
            attention_bwd_triton(o, q, k, k, rel, o, lse, 0.125, thw, False, True, False, False),
        )

    assert uses_packed(q, k, None, "fwd") and uses_packed(q, k, None, "bwd")
    assert kernels_launched(both(q, k)) == ["_attention_packed_fwd_kernel", "_attention_packed_bwd_kernel"]
    flash = ["_attention_fwd_kernel", "_attention_bwd_row_kernel", "_attention_bwd_col_kernel"]
    k65 = rand((2, 3, 65, 64), torch.float16)
    q65 = rand((2, 3, 65, 64), torch.float16)
    for qq, kk in ((q, k65), (q65, k)):
        assert not uses_packed(qq, kk, None, "fwd") and not uses_packed(qq, kk, None, "bwd")
        assert kernels_launched(both(qq, kk)) == flash
    rel = torch.zeros(2, 3, 49, 3 + 4 + 4, device=DEVICE)
    assert not uses_packed(q, k, rel, "fwd")
    k48 = rand((2, 3, 48, 64), torch.float16)
    assert kernels_launched(both(q, k48, rel, [3, 4, 4])) == flash


def test_packed_classes():
    """uses_packed follows the PACKED table (kernel, dtype class, BLOCK_L, BLOCK_D); every BLOCK_L of the half
    class at STT's head width 64 is packed both ways, and a class without tiles runs the flash kernels."""
    for L, bl in ((1, 16), (16, 16), (17, 32), (33, 64), (64, 64)):
        q = rand((1, 1, L, 64), torch.bfloat16)
        assert packed_cfg("fwd", q.dtype, L, L, 64) == PACKED[("fwd", "half", bl, 64)]
        assert uses_packed(q, q, None, "fwd") and uses_packed(q, q, None, "bwd")
    assert packed_cfg("fwd", torch.float32, 65, 3, 64) is None
    for (kind, dc, bl, bd), cfg in PACKED.items():
        dtype = {"half": torch.float16, "f32": torch.float32, "f64": torch.float64}[dc]
        q = torch.zeros(1, 2, bl - 1 if bl > 16 else 9, bd - 3, dtype=dtype, device=DEVICE)
        assert uses_packed(q, q, None, kind) == (cfg is not None), (kind, dc, bl, bd)
    unpacked = [key for key, cfg in PACKED.items() if cfg is None and key[0] == "fwd"]
    if unpacked:
        kind, dc, bl, bd = unpacked[0]
        dtype = {"half": torch.float16, "f32": torch.float32, "f64": torch.float64}[dc]
        q = rand((1, 2, bl - 1, bd - 3), dtype)
        assert kernels_launched(
            lambda: attention_fwd_triton(q, q, q, None, 0.1, [1, 1, bl - 1], False, False, False)
        ) == ["_attention_fwd_kernel"]


@pytest.mark.parametrize("mix", ["packed-fwd-flash-bwd", "flash-fwd-packed-bwd"])
def test_lse_shared_with_flash(mix, monkeypatch):
    """The packed and flash kernels store the same lse: a forward on one path and the backward on the other
    match the fp64 reference (PACKED patched so that one kernel kind has no packed tiles)."""
    off = "bwd" if mix.startswith("packed-fwd") else "fwd"
    for key in [key for key in PACKED if key[0] == off]:
        monkeypatch.setitem(PACKED, key, None)
    q, k, v = (rand((2, 3, n, 40), torch.float64) for n in (17, 30, 30))
    launched = kernels_launched(lambda: triton_attention(q=q, k=k, v=v, add_q=True))
    assert set(launched) & PACKED_KERNELS == ({"_attention_packed_fwd_kernel"} if off == "bwd" else set())
    check_op(triton_attention, attention_ref, {"q": q, "k": k, "v": v, "add_q": True})


@pytest.mark.parametrize("dtype", [FP32, BF16])
def test_deterministic(dtype):
    """Two identical runs are bitwise equal, forward and backward (every output row owned by one program)."""
    q, k, v = qkv_packed(3, 17, 3, 24, dtype)
    assert_deterministic(triton_attention, {"q": q, "k": k, "v": v, "add_q": True})


def test_empty_and_tails():
    """B = 0 launches nothing; a pair count that is no multiple of PAIRS (the last program's extra pairs
    masked) leaves no output element unwritten (torch.empty is NaN-poisoned under tests/ops) and matches the
    reference."""
    q = rand((0, 2, 9, 32), torch.float64)
    assert (
        kernels_launched(lambda: attention_fwd_triton(q, q, q, None, 0.1, [1, 1, 9], False, False, False))
        == []
    )
    pairs = {kind: triton_packed.packed_meta(kind, torch.float64, 16, 32)["PAIRS"] for kind in ("fwd", "bwd")}
    assert pairs["fwd"] > 1 and pairs["bwd"] > 1, pairs
    nh = max(pairs.values()) + 1
    inp = {"q": rand((1, nh, 9, 32), torch.float64), "k": rand((1, nh, 5, 32), torch.float64)}
    check_op(triton_attention, attention_ref, dict(inp, v=rand((1, nh, 5, 32), torch.float64), add_q=True))

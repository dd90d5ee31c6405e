"""Attention family, the public op (fxkernels/ops/attention/README.md): the reference against torchvision's
MViT code, the table gather, the SDPA route, "auto" dispatch, input checks, and the registered op (opcheck,
torch.compile) on every fused backend here. The kernels' own sweeps are in test_attention_{cpp,triton}.py."""

import importlib
import importlib.util
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels.ops.attention.reference import (
    attention_ref,
    attention_rel_ref,
    rel_pos_gather,
    rel_pos_index,
    rel_pos_project,
)
from fxkernels.testing import assert_close, check_op
from tests.conftest import BACKEND_PARAMS

mvit = pytest.importorskip("torchvision.models.video.mvit")
attention_mod = importlib.import_module("fxkernels.ops.attention.attention")  # the module, not the function


def make(B, nh, thw_q, thw_k, hd, has_cls=True, rows=None, dtype=torch.float64, device="cpu"):
    """q, k, v and tables as MViTv2 has them; rows = (t rows, h/w rows) of the tables (default: the sizes that
    need no interpolation)."""
    c = int(has_cls)
    Lq, Lk = c + math.prod(thw_q), c + math.prod(thw_k)
    q = torch.randn(B, nh, Lq, hd, dtype=torch.float64)
    k = torch.randn(B, nh, Lk, hd, dtype=torch.float64)
    v = torch.randn(B, nh, Lk, hd, dtype=torch.float64)
    if rows is None:
        rows = (2 * max(thw_q[0], thw_k[0]) - 1, 2 * max(thw_q[1], thw_k[1]) - 1)
    tables = [torch.randn(n, hd, dtype=torch.float64) * 0.5 for n in (rows[0], rows[1], rows[1])]
    return [t.to(dtype=dtype, device=device) for t in (q, k, v, *tables)]


def torchvision_attention(q, k, v, rt, rh, rw, thw_q, thw_k, residual_with_cls):
    """torchvision MultiscaleAttention.forward's math between the poolings and the projection."""
    attn = torch.matmul((q.shape[-1] ** -0.5) * q, k.transpose(2, 3))
    attn = mvit._add_rel_pos(attn, q, thw_q, thw_k, rh, rw, rt)
    x = torch.matmul(attn.softmax(dim=-1), v)
    return mvit._add_shortcut(x, q, residual_with_cls)


# (B, nh, thw_q, thw_k, hd, table rows or None): mvit_v2_s-like blocks scaled down
GRIDS = [
    pytest.param(2, 1, (2, 8, 8), (2, 1, 1), 8, None, id="stage1-like-Lq>Lk"),
    pytest.param(1, 2, (2, 4, 4), (2, 2, 2), 16, None, id="stage2-like"),
    pytest.param(2, 2, (3, 3, 3), (3, 3, 3), 8, None, id="Lq=Lk-odd"),
    pytest.param(1, 2, (2, 2, 2), (2, 4, 4), 8, None, id="Lq<Lk"),
    pytest.param(1, 1, (3, 5, 5), (3, 3, 3), 8, (3, 7), id="interpolated-tables"),
    pytest.param(1, 1, (1, 7, 3), (1, 2, 5), 4, None, id="rect-odd"),
]


@pytest.mark.parametrize("B,nh,thw_q,thw_k,hd,rows", GRIDS)
@pytest.mark.parametrize(
    "with_cls", [pytest.param(False, id="shortcut-grid"), pytest.param(True, id="shortcut-all")]
)
def test_reference_is_torchvision(B, nh, thw_q, thw_k, hd, rows, with_cls):
    q, k, v, rt, rh, rw = make(B, nh, thw_q, thw_k, hd, True, rows)
    want = torchvision_attention(q, k, v, rt, rh, rw, thw_q, thw_k, with_cls)
    got = attention_ref(
        q,
        k,
        v,
        thw_q=thw_q,
        thw_k=thw_k,
        rel_pos_t=rt,
        rel_pos_h=rh,
        rel_pos_w=rw,
        has_cls=True,
        add_q=True,
        add_q_cls=with_cls,
    )
    assert_close(got, want, torch.float64)


@pytest.mark.parametrize("nq,nk", [(8, 1), (4, 2), (3, 3), (2, 4), (7, 2), (5, 3), (1, 6)])
def test_rel_pos_index_in_range(nq, nk):
    idx = rel_pos_index(nq, nk)
    assert idx.shape == (nq, nk) and idx.min() >= 0 and idx.max() < 2 * max(nq, nk) - 1
    # torchvision's own distance expression
    rq, rk = max(nk / nq, 1.0), max(nq / nk, 1.0)
    want = (torch.arange(nq)[:, None] * rq - (torch.arange(nk)[None, :] + (1.0 - nk)) * rk).long()
    assert torch.equal(idx, want)


def test_rel_pos_gather_gradient_reaches_tables():
    q, k, v, rt, rh, rw = make(1, 1, (3, 5, 5), (3, 3, 3), 4, True, (3, 7))  # h/w tables interpolated 7 -> 9
    tables = [t.requires_grad_(True) for t in (rt, rh, rw)]
    G = rel_pos_gather(*tables, (3, 5, 5), (3, 3, 3))
    assert [g.shape for g in G] == [(3, 3, 4), (5, 3, 4), (5, 3, 4)]
    assert torch.autograd.gradcheck(lambda *t: rel_pos_gather(*t, (3, 5, 5), (3, 3, 3)), tuple(tables))


@pytest.mark.parametrize("has_cls", [pytest.param(True, id="cls"), pytest.param(False, id="nocls")])
def test_rel_contract_matches_reference(has_cls):
    # the kernel-level oracle (rel form) equals the torchvision-form oracle
    thw_q, thw_k = (2, 4, 4), (2, 2, 2)
    q, k, v, rt, rh, rw = make(2, 2, thw_q, thw_k, 8, has_cls)
    rel = rel_pos_project(q, *rel_pos_gather(rt, rh, rw, thw_q, thw_k), has_cls)
    assert rel.shape == (2, 2, 32, 2 + 2 + 2)
    o, lse = attention_rel_ref(q, k, v, rel, 8**-0.5, thw_k, has_cls, True, False)
    want = attention_ref(
        q,
        k,
        v,
        thw_q=thw_q,
        thw_k=thw_k,
        rel_pos_t=rt,
        rel_pos_h=rh,
        rel_pos_w=rw,
        has_cls=has_cls,
        add_q=True,
    )
    assert_close(o, want, torch.float64)
    assert lse.shape == (2, 2, q.shape[2]) and torch.isfinite(lse).all()


def _public(backend, **kw):
    def fn(q, k, v, rel_pos_t=None, rel_pos_h=None, rel_pos_w=None):
        return fxkernels.attention(
            q, k, v, rel_pos_t=rel_pos_t, rel_pos_h=rel_pos_h, rel_pos_w=rel_pos_w, backend=backend, **kw
        )

    return fn


@pytest.mark.parametrize("biased", [pytest.param(True, id="biased"), pytest.param(False, id="plain")])
@pytest.mark.parametrize(
    "has_cls,add_q,add_q_cls",
    [
        pytest.param(True, True, False, id="cls-addq"),
        pytest.param(True, True, True, id="cls-addq-cls"),
        pytest.param(False, True, False, id="nocls-addq"),
        pytest.param(True, False, False, id="cls"),
    ],
)
def test_sdpa_route_matches_reference(biased, has_cls, add_q, add_q_cls):
    thw_q, thw_k = (2, 3, 5), (2, 2, 3)
    q, k, v, rt, rh, rw = make(2, 2, thw_q, thw_k, 8, has_cls)
    kw = dict(thw_q=thw_q, thw_k=thw_k, has_cls=has_cls, add_q=add_q, add_q_cls=add_q_cls)
    inputs = {"q": q, "k": k, "v": v}
    if biased:
        inputs.update(rel_pos_t=rt, rel_pos_h=rh, rel_pos_w=rw)
    check_op(_public("sdpa", **kw), _public("reference", **kw), inputs)


def test_dropout_goes_to_sdpa_with_the_bias():
    thw_q, thw_k = (2, 3, 3), (2, 2, 2)
    q, k, v, rt, rh, rw = make(1, 2, thw_q, thw_k, 8, True, dtype=torch.float32)
    torch.manual_seed(3)
    got = fxkernels.attention(
        q,
        k,
        v,
        thw_q=thw_q,
        thw_k=thw_k,
        rel_pos_t=rt,
        rel_pos_h=rh,
        rel_pos_w=rw,
        has_cls=True,
        add_q=True,
        dropout_p=0.3,
        backend="cpu" if fxkernels.backends()["cpu"] else "auto",
    )
    rel = rel_pos_project(q, *rel_pos_gather(rt, rh, rw, thw_q, thw_k), True)
    from fxkernels.ops.attention.reference import rel_bias

    mask = F.pad(rel_bias(rel, thw_k), (1, 0, 1, 0))
    torch.manual_seed(3)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.3)
    want = torch.cat((want[:, :, :1], want[:, :, 1:] + q[:, :, 1:]), dim=2)
    assert torch.equal(got, want)
    no_drop = attention_ref(
        q, k, v, thw_q=thw_q, thw_k=thw_k, rel_pos_t=rt, rel_pos_h=rh, rel_pos_w=rw, has_cls=True, add_q=True
    )
    assert not torch.allclose(got, no_drop)


def test_auto_dispatch_on_cpu(monkeypatch):
    calls = []
    real = attention_mod._sdpa
    monkeypatch.setattr(attention_mod, "_sdpa", lambda *a: calls.append("sdpa") or real(*a))
    thw_q, thw_k = (2, 2, 3), (2, 1, 3)
    q, k, v, rt, rh, rw = make(1, 2, thw_q, thw_k, 8, False, dtype=torch.float32)
    long_q = torch.randn(1, 2, 65, 8)
    fxkernels.attention(long_q, long_q, long_q)  # plain, Lq = Lk = 65: SDPA's flash kernel
    assert calls == ["sdpa"]
    fxkernels.attention(q, k, v)  # plain and short (Lq = 12, Lk = 6): the packed path of the cpu kernel
    assert calls == ["sdpa"] if fxkernels.backends()["cpu"] else ["sdpa", "sdpa"]
    fxkernels.attention(q, k, v, thw_q=thw_q, thw_k=thw_k, rel_pos_t=rt, rel_pos_h=rh, rel_pos_w=rw)
    assert calls == ["sdpa"]  # biased: the cpu kernel (or the reference without it), not SDPA
    with fxkernels.use_backend("reference"):  # an explicit default wins over the SDPA choice
        fxkernels.attention(q, k, v)
    assert calls == ["sdpa"]


@pytest.mark.skipif(not fxkernels.backends()["triton"] and importlib.util.find_spec("triton") is None,
                    reason="needs triton")  # fmt: skip
def test_auto_packed_rule_on_cuda():
    """The rule "auto" applies on CUDA tensors (checked here on CPU tensors: it reads shapes and dtypes only):
    short plain attention goes to the triton backend when its packed path covers forward and backward."""
    q16 = torch.zeros(2, 8, 49, 64, dtype=torch.float16)
    assert attention_mod._packed_ok("triton", q16, q16)  # STT's spatial shape in fp16: packed both ways
    q32 = q16.float()
    assert not attention_mod._packed_ok("triton", q32, q32)  # fp32 at (49, 64): no packed backward tiles
    t17 = torch.zeros(2, 8, 17, 64)
    assert attention_mod._packed_ok("triton", t17, t17)  # the temporal shape, fp32
    long_ = torch.zeros(1, 1, 65, 64, dtype=torch.float16)
    assert not attention_mod._packed_ok("triton", long_, long_)
    assert attention_mod._packed_ok("cpu", long_, long_) and not attention_mod._packed_ok(
        "reference", q16, q16
    )


# ----------------------------------------------------------------------------------------- bad input
def _bad(match, **over):
    thw_q, thw_k = (2, 2, 2), (2, 1, 1)
    q, k, v, rt, rh, rw = make(1, 2, thw_q, thw_k, 8, True, dtype=torch.float32)
    kw = dict(thw_q=thw_q, thw_k=thw_k, rel_pos_t=rt, rel_pos_h=rh, rel_pos_w=rw, has_cls=True)
    args = {"q": q, "k": k, "v": v}
    for name, val in over.items():
        (args if name in args else kw)[name] = val(args, kw) if callable(val) else val
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        fxkernels.attention(args["q"], args["k"], args["v"], **kw)


BAD = [
    pytest.param("k must be", {"k": lambda a, kw: a["k"][..., :4]}, id="hd-mismatch"),
    pytest.param("v must have k's shape", {"v": lambda a, kw: a["v"][:, :, :2]}, id="v-shape"),
    pytest.param("q must be 4-D", {"q": lambda a, kw: a["q"][0]}, id="q-3d"),
    pytest.param("thw_q .* does not multiply out", {"thw_q": (2, 2, 3)}, id="thw_q-product"),
    pytest.param("thw_k .* does not multiply out", {"thw_k": (1, 1, 1)}, id="thw_k-product"),
    pytest.param("thw_q must be 3 ints", {"thw_q": (8,)}, id="thw_q-len"),
    pytest.param(
        "rel_pos_h must be .* hd = 8", {"rel_pos_h": lambda a, kw: kw["rel_pos_h"][:, :4]}, id="table-width"
    ),
    pytest.param("all or none", {"rel_pos_w": None}, id="tables-partial"),
    pytest.param("need thw_q and thw_k", {"thw_q": None}, id="tables-without-thw"),
    pytest.param("q must be float32", {"q": lambda a, kw: a["q"].to(torch.int32)}, id="q-int"),
    pytest.param("k has dtype", {"k": lambda a, kw: a["k"].double()}, id="k-dtype"),
    pytest.param(
        "rel_pos_t is on meta", {"rel_pos_t": lambda a, kw: kw["rel_pos_t"].to("meta")}, id="mixed-devices"
    ),
    pytest.param("backend must be one of", {"backend": "cuda-fast"}, id="backend-name"),
    pytest.param("dropout_p must be", {"dropout_p": 1.5}, id="dropout"),
    pytest.param("scale must be a float", {"scale": "x"}, id="scale-type"),
]


@pytest.mark.parametrize("match,over", BAD)
def test_bad_input(match, over):
    _bad(match, **over)


def test_hd_above_fused_limit():
    q, k, v = (torch.randn(1, 1, 5, 300) for _ in range(3))
    assert_close(fxkernels.attention(q, k, v, backend="auto"), attention_ref(q, k, v), torch.float32)
    if fxkernels.backends()["cpu"]:
        with pytest.raises(ValueError, match="hd <= 256"):
            fxkernels.attention(q, k, v, backend="cpu")


# ----------------------------------------------------------------------------- the registered op
def _op_args(device, dtype=torch.float32, has_cls=True):
    thw_q, thw_k = (2, 3, 2), (2, 1, 2)
    q, k, v, rt, rh, rw = make(2, 2, thw_q, thw_k, 16, has_cls, dtype=dtype, device=device)
    rel = rel_pos_project(q, *rel_pos_gather(rt, rh, rw, thw_q, thw_k), has_cls)
    return q, k, v, rel, 0.25, list(thw_k), has_cls


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_opcheck(device, backend):
    q, k, v, rel, scale, thw_k, has_cls = _op_args(device)
    args = [t.requires_grad_(True) for t in (q, k, v, rel)]
    torch.library.opcheck(
        torch.ops.fxkernels.attention.default, (*args, scale, thw_k, has_cls, True, False, backend)
    )
    torch.library.opcheck(
        torch.ops.fxkernels.attention.default,
        (*args[:3], None, scale, [1, 1, 4], has_cls, False, False, backend),
    )


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_registered_op_autograd_matches_reference(device, backend):
    q, k, v, rel, scale, thw_k, has_cls = _op_args(device, torch.float64)

    def via_op(q, k, v, rel):
        return torch.ops.fxkernels.attention(q, k, v, rel, scale, thw_k, has_cls, True, True, backend)[0]

    def ref(q, k, v, rel):
        return attention_rel_ref(q, k, v, rel, scale, thw_k, has_cls, True, True)[0]

    check_op(via_op, ref, {"q": q, "k": k, "v": v, "rel": rel})


@pytest.mark.parametrize(
    "device,backend", BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
)
def test_compile_fullgraph(device, backend):
    if device == "cpu" and backend == "triton":
        pytest.skip("torch.compile of a Triton kernel needs a GPU (the interpreter runs eager only)")
    thw_q, thw_k = (2, 3, 2), (2, 1, 2)
    q, k, v, rt, rh, rw = make(1, 2, thw_q, thw_k, 16, True, dtype=torch.float32, device=device)
    fn = partial(fxkernels.attention, thw_q=thw_q, thw_k=thw_k, has_cls=True, add_q=True, backend=backend)
    compiled = torch.compile(fn, fullgraph=True, backend="eager" if backend == "reference" else "inductor")
    inputs = {"q": q, "k": k, "v": v, "rel_pos_t": rt, "rel_pos_h": rh, "rel_pos_w": rw}
    check_op(compiled, fn, inputs, ref_dtype=None)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_fake_tensors(device, backend):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 3, 1 + 12, 32, device=device)
        k = torch.empty(2, 3, 1 + 4, 32, device=device)
        t = torch.empty(3, 32, device=device)
        hw = torch.empty(5, 32, device=device)
        y = fxkernels.attention(
            q,
            k,
            k,
            thw_q=(2, 3, 2),
            thw_k=(2, 1, 2),
            rel_pos_t=t,
            rel_pos_h=hw,
            rel_pos_w=hw,
            has_cls=True,
            backend=backend,
        )
    assert tuple(y.shape) == (2, 3, 13, 32)

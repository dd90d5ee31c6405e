"""attention_pool (fxkernels/ops/attention/README.md, "attention_pool"): the reference pinned to torchvision's own
`Pool`, every fused backend vs the fp64 reference (output and the gradients of x, weight, norm weight and bias),
and the C++ ops torch.ops.fxkernels.attention_pool_fwd / _bwd called directly (both CPU ISA variants)."""

import importlib.util
import math

import pytest
import torch
from torchvision.models.video.mvit import Pool

import fxkernels
from fxkernels._backend import backend_available
from fxkernels.ops.attention import pool as pool_mod
from fxkernels.ops.attention.reference import attention_pool_ref
from fxkernels.testing import assert_close, assert_deterministic, check_op, gradcheck, run_with_grads
from tests.conftest import BACKEND_PARAMS


def _fused_available(backend: str) -> bool:
    if not backend_available(backend, pool_mod.OP, pool_mod.KERNELS):
        return False
    return backend != "triton" or importlib.util.find_spec("fxkernels.ops.attention.pool_triton") is not None


# the harness's backends that serve this op here; the Triton interpreter (CPU tensors) runs its own, smaller sweep
# in test_attention_pool_triton.py (every program runs in Python: these shapes would add minutes)
FUSED = [
    p
    for p in BACKEND_PARAMS
    if _fused_available(p.values[1]) and not (p.values[1] == "triton" and p.values[0] == "cpu")
]
HAVE_CPU = _fused_available("cpu")
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="needs the compiled CPU kernel attention_pool_fwd")
NAMES = ("x", "weight", "norm_weight", "norm_bias")
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


# (B, nh, (T, H, W), hd, kernel, stride, has_cls, norm, non-contiguous x (a q/k/v slice of the qkv projection))
def _shape(*values, id):
    return pytest.param(values, id=id)


SHAPES = [
    _shape(2, 2, (3, 5, 7), 12, (3, 3, 3), (1, 1, 1), True, True, False, id="k3-s111-odd-cls"),
    _shape(1, 2, (4, 7, 9), 16, (3, 3, 3), (1, 2, 2), True, True, True, id="k3-s122-qkv"),
    _shape(1, 1, (3, 9, 11), 8, (3, 3, 3), (1, 4, 4), False, True, False, id="k3-s144-nocls"),
    _shape(2, 1, (2, 17, 15), 8, (3, 3, 3), (1, 8, 8), True, True, False, id="k3-s188"),
    _shape(1, 2, (5, 6, 7), 10, (3, 3, 3), (2, 2, 2), True, False, False, id="k3-s222-hd10-nonorm"),
    _shape(1, 1, (9, 9, 17), 9, (3, 3, 3), (4, 4, 8), False, False, True, id="k3-s448-qkv-nonorm"),
    _shape(1, 1, (9, 10, 17), 5, (3, 3, 3), (8, 8, 8), True, True, False, id="k3-s888-hd5"),
    _shape(2, 1, (2, 3, 3), 8, (1, 1, 1), (1, 1, 1), True, True, False, id="k1-s111"),
    _shape(1, 2, (3, 5, 5), 7, (1, 1, 1), (2, 2, 2), False, False, False, id="k1-s222-nocls"),
    _shape(1, 2, (3, 6, 5), 40, (1, 3, 3), (1, 2, 2), True, True, True, id="k133-s122-qkv"),
    _shape(1, 2, (2, 5, 6), 96, (3, 3, 3), (1, 2, 2), True, True, False, id="k3-s122-hd96"),
    _shape(1, 1, (11, 5, 37), 8, (3, 3, 3), (1, 1, 1), True, True, True, id="k3-s111-T11-W37-qkv"),
    _shape(1, 1, (1, 1, 1), 3, (3, 3, 3), (1, 1, 1), True, True, False, id="1x1x1-grid"),
    _shape(1, 1, (3, 4, 5), 6, (2, 2, 2), (1, 2, 1), False, True, False, id="even-kernel"),
]


def make(B, nh, thw, hd, kernel, has_cls, norm, noncontig, dtype=torch.float64):
    """Inputs of `attention_pool` by name (values drawn in fp64, then cast)."""
    N = int(has_cls) + math.prod(thw)
    if noncontig:  # torchvision: qkv(x).reshape(B, N, 3, nh, hd).transpose(1, 3).unbind(2)
        x = torch.randn(B, N, 3, nh, hd, dtype=torch.float64).to(dtype).transpose(1, 3).unbind(2)[1]
    else:
        x = torch.randn(B, nh, N, hd, dtype=torch.float64).to(dtype)
    w = torch.randn(hd, 1, *kernel, dtype=torch.float64) / math.sqrt(math.prod(kernel))
    nw = 1 + 0.3 * torch.randn(hd, dtype=torch.float64) if norm else None
    nb = 0.3 * torch.randn(hd, dtype=torch.float64) if norm else None
    out = {"weight": w, "norm_weight": nw, "norm_bias": nb}
    return {"x": x, **{k: None if v is None else v.to(dtype) for k, v in out.items()}}


def pool_fn(stride, thw, has_cls, backend, y_only=False):
    def f(x, weight, norm_weight, norm_bias):
        out = fxkernels.attention_pool(
            x, weight, stride, thw, has_cls, norm_weight, norm_bias, backend=backend
        )
        return out[0] if y_only else out

    return f


def ref_fn(stride, thw, has_cls):
    def f(x, weight, norm_weight, norm_bias):
        return attention_pool_ref(x, weight, stride, thw, has_cls, norm_weight, norm_bias)

    return f


def check(case, dtype, backend, scale=1.0):
    B, nh, thw, hd, kernel, stride, has_cls, norm, noncontig = case
    inputs = make(B, nh, thw, hd, kernel, has_cls, norm, noncontig, dtype)
    if noncontig:
        assert not inputs["x"].is_contiguous()
    return check_op(
        pool_fn(stride, thw, has_cls, backend),
        ref_fn(stride, thw, has_cls),
        inputs,
        scale=scale,
        out_names=("y", "thw"),
    )


# --------------------------------------------------------------------------- the reference vs torchvision
@pytest.mark.parametrize("norm", [True, False], ids=["norm", "nonorm"])
@pytest.mark.parametrize("has_cls", [True, False], ids=["cls", "nocls"])
@pytest.mark.parametrize(
    "thw,kernel,stride",
    [
        pytest.param((3, 7, 6), (3, 3, 3), (1, 1, 1), id="k3-s111"),
        pytest.param((4, 9, 9), (3, 3, 3), (1, 2, 2), id="k3-s122"),
        pytest.param((2, 17, 16), (3, 3, 3), (1, 8, 8), id="k3-s188"),
        pytest.param((3, 6, 5), (1, 3, 3), (1, 4, 4), id="k133-s144"),
    ],
)
def test_reference_matches_torchvision_pool(thw, kernel, stride, has_cls, norm):
    """backend="reference" = torchvision's Pool(Conv3d(groups=hd), LayerNorm) on the same parameters (torchvision
    always has the cls row: without one, a dummy row is prepended for Pool and dropped from its output)."""
    B, nh, hd = 2, 2, 8
    inp = make(B, nh, thw, hd, kernel, has_cls, norm, True)
    conv = torch.nn.Conv3d(hd, hd, kernel, stride, [k // 2 for k in kernel], groups=hd, bias=False).double()
    ln = torch.nn.LayerNorm(hd, eps=1e-6).double() if norm else None
    tv = Pool(conv, ln)
    with torch.no_grad():
        conv.weight.copy_(inp["weight"])
        if norm:
            ln.weight.copy_(inp["norm_weight"])
            ln.bias.copy_(inp["norm_bias"])
    x = inp["x"].detach().requires_grad_(True)
    xt = x if has_cls else torch.cat((torch.randn(B, nh, 1, hd, dtype=x.dtype), x), 2)
    y_tv, thw_tv = tv(xt, thw)
    y_tv = y_tv if has_cls else y_tv[:, :, 1:]
    dy = torch.randn_like(y_tv)
    params = [x, conv.weight] + ([ln.weight, ln.bias] if norm else [])
    want = torch.autograd.grad(y_tv, params, dy)
    got = run_with_grads(
        pool_fn(stride, thw, has_cls, "reference"),
        inp,
        (dy, None),
        no_grad=[k for k, v in inp.items() if v is None],
    )
    assert got.outputs[1] == tuple(thw_tv)
    assert_close(got.outputs[0], y_tv, torch.float64, "y")
    for name, w in zip(("x", "weight", "norm_weight", "norm_bias"), want):
        assert_close(got.grads[name], w, torch.float64, f"d{name}")


# ------------------------------------------------------------------------------------- the fused backends
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SHAPES)
@pytest.mark.parametrize("device,backend", FUSED)
def test_matches_reference(case, dtype, device, backend):
    check(case, dtype, backend)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("device,backend", FUSED)
def test_half_precision(dtype, device, backend):
    check((2, 2, (3, 7, 6), 24, (3, 3, 3), (1, 2, 2), True, True, True), dtype, backend)
    check((1, 2, (2, 9, 8), 16, (3, 3, 3), (1, 1, 1), False, False, False), dtype, backend)


@pytest.mark.parametrize("device,backend", FUSED)
def test_mvit_stage_shape_fp32(device, backend):
    # mvit_v2_s stage 3 pooling, the grid scaled down (hd 96, 4 heads, k/v stride (1, 2, 2))
    check((1, 4, (2, 14, 14), 96, (3, 3, 3), (1, 2, 2), True, True, True), torch.float32, backend)


@pytest.mark.parametrize("norm", [True, False], ids=["norm", "nonorm"])
@pytest.mark.parametrize("device,backend", FUSED + [pytest.param("cpu", "reference", id="cpu-reference")])
def test_gradcheck_fp64(device, backend, norm):
    for thw, kernel, stride, has_cls in (
        ((2, 3, 4), (3, 3, 3), (1, 2, 2), True),
        ((3, 3, 2), (1, 3, 3), (2, 1, 1), False),
    ):
        inputs = make(1, 2, thw, 5, kernel, has_cls, norm, True)
        # fast mode (random directions) for the Triton interpreter, which runs every program in Python
        fast = backend == "triton"
        fn = pool_fn(stride, thw, has_cls, backend, y_only=True)
        assert gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=fast)


@pytest.mark.parametrize("device,backend", FUSED)
def test_backward_is_deterministic(device, backend):
    inputs = make(2, 3, (3, 9, 7), 16, (3, 3, 3), True, True, True, torch.float32)
    assert_deterministic(pool_fn((1, 1, 1), (3, 9, 7), True, backend, y_only=True), inputs)


@needs_cpu
def test_cpu_independent_of_thread_count():
    # the backward's reductions run over a fixed partition of the rows: bitwise the same for any thread count
    inputs = make(2, 2, (3, 17, 15), 24, (3, 3, 3), True, True, False, torch.float32)
    fn, runs, prev = pool_fn((1, 1, 1), (3, 17, 15), True, "cpu"), [], torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(run_with_grads(fn, inputs, runs[0].upstream if runs else None))
    finally:
        torch.set_num_threads(prev)
    for r in runs[1:]:
        assert torch.equal(r.outputs[0], runs[0].outputs[0])
        for k, g in r.grads.items():
            assert torch.equal(g, runs[0].grads[k]), f"d{k} depends on the thread count"


@pytest.mark.parametrize("device,backend", FUSED)
def test_empty(device, backend):
    for B, nh in ((0, 2), (2, 0)):
        inp = make(B, nh, (2, 4, 4), 8, (3, 3, 3), True, True, False, torch.float32)
        args = {k: v.requires_grad_(True) for k, v in inp.items()}
        y, thw = pool_fn((1, 2, 2), (2, 4, 4), True, backend)(**args)
        assert y.shape == (B, nh, 1 + 2 * 2 * 2, 8) and thw == (2, 2, 2)
        y.sum().backward()
        assert args["x"].grad.shape == inp["x"].shape
        for k in ("weight", "norm_weight", "norm_bias"):
            assert args[k].grad.shape == inp[k].shape and not args[k].grad.any()


@pytest.mark.parametrize("device,backend", FUSED)
def test_opcheck(device, backend):
    inp = make(1, 2, (2, 5, 4), 8, (3, 3, 3), True, True, True, torch.float32)
    args = [inp[k].requires_grad_(True) for k in ("x", "weight", "norm_weight", "norm_bias")]
    torch.library.opcheck(
        torch.ops.fxkernels.attention_pool.default, (*args, [1, 2, 2], [2, 5, 4], True, 1e-6, backend)
    )
    inp = make(1, 1, (3, 3, 3), 4, (1, 3, 3), False, False, False, torch.float32)
    torch.library.opcheck(
        torch.ops.fxkernels.attention_pool.default,
        (
            inp["x"].requires_grad_(True),
            inp["weight"],
            None,
            None,
            [1, 1, 1],
            [3, 3, 3],
            False,
            1e-6,
            backend,
        ),
    )


def test_bad_input():
    inp = make(1, 2, (2, 3, 4), 8, (3, 3, 3), True, True, False, torch.float32)
    x, w, nw, nb = inp["x"], inp["weight"], inp["norm_weight"], inp["norm_bias"]

    def call(x=x, w=w, stride=(1, 2, 2), thw=(2, 3, 4), has_cls=True, nw=nw, nb=nb, eps=1e-6):
        return fxkernels.attention_pool(x, w, stride, thw, has_cls, nw, nb, eps, backend="reference")

    for bad, match in (
        ({"w": w[:7]}, "weight must be \\(hd, 1, kt, kh, kw\\) with x's hd = 8"),
        ({"w": w.expand(8, 2, 3, 3, 3)}, "weight must be \\(hd, 1, kt, kh, kw\\)"),
        ({"w": w[:, :, 0]}, "weight must be 5-D"),
        ({"x": x[0]}, "x must be 4-D"),
        ({"thw": (2, 3, 3)}, "thw = \\(2, 3, 3\\) does not multiply out to x's 25 tokens"),
        ({"has_cls": False}, "does not multiply out"),
        ({"thw": (2, 3)}, "thw must be 3 ints"),
        ({"stride": (1, 0, 2)}, "stride must be positive"),
        ({"nw": nw[:7]}, "norm_weight must have shape \\(hd,\\)"),
        ({"nb": torch.randn(8, 1)}, "norm_bias must be 1-D"),
        ({"nb": None}, "norm_weight and norm_bias go together"),
        ({"w": w.double()}, "weight has dtype torch.float64 but x has torch.float32"),
        ({"nw": nw.to("meta")}, "norm_weight is on meta but x is on cpu"),
        ({"x": x.long()}, "x must be float32, float64"),
        ({"eps": 0.0}, "eps must be a positive float"),
    ):
        with pytest.raises(ValueError, match=match):
            call(**bad)
    with pytest.raises(ValueError, match="backend"):
        fxkernels.attention_pool(x, w, 1, (2, 3, 4), True, backend="gpu")


# ------------------------------------------------------------------------------ the C++ ops called directly
@pytest.fixture(params=["generic", "avx2"])
def cpu_isa(request):
    """Run the test with the baseline and the AVX2+FMA kernels (where this CPU runs them)."""
    if not HAVE_CPU:
        pytest.skip("needs the compiled CPU kernel attention_pool_fwd")
    if request.param not in fxkernels._ext._INFO.get("cpu_isa_usable", []):
        pytest.skip(f"this CPU does not run the {request.param} kernels")
    C = fxkernels._ext._C
    prev = C._set_cpu_isa(request.param)
    yield request.param
    C._set_cpu_isa(prev)


def _ops_vs_reference(case, dtype):
    """fwd (y, stats) and bwd (dx, dw, dnw, dnb) of the C++ ops vs autograd of the reference in fp64."""
    B, nh, thw, hd, kernel, stride, has_cls, norm, noncontig = case
    lp = [make(B, nh, thw, hd, kernel, has_cls, norm, noncontig, dtype)[k] for k in NAMES]
    ref_args = [a.double().requires_grad_(True) if a is not None else None for a in lp]
    y_ref, _ = attention_pool_ref(ref_args[0], ref_args[1], stride, thw, has_cls, ref_args[2], ref_args[3])
    dy = torch.randn(y_ref.shape, dtype=torch.float64).to(dtype)
    dy = dy.transpose(2, 3).contiguous().transpose(2, 3)  # a strided hd axis
    want = torch.autograd.grad(y_ref, [a for a in ref_args if a is not None], dy.double())
    ops = torch.ops.fxkernels
    y, stats = ops.attention_pool_fwd(*lp, list(stride), list(thw), has_cls, 1e-6)
    assert y.is_contiguous() and y.dtype == dtype
    assert_close(y, y_ref, dtype, "y")
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    if norm:  # (mean, rstd) of each row before the norm
        z, _ = attention_pool_ref(ref_args[0].detach(), ref_args[1].detach(), stride, thw, has_cls)
        assert stats.shape == (*y.shape[:3], 2) and stats.dtype == acc
        assert_close(stats[..., 0], z.mean(-1), acc, "mean")
        assert_close(stats[..., 1], (z.var(-1, unbiased=False) + 1e-6).rsqrt(), acc, "rstd")
    else:
        assert stats.numel() == 0
    grads = ops.attention_pool_bwd(dy, *lp, stats, list(stride), list(thw), has_cls, 1e-6)
    assert grads[0].is_contiguous() and all(g.dtype == dtype for g in grads)
    for name, g, w in zip(("dx", "dweight", "dnorm_weight", "dnorm_bias"), grads, want):
        assert_close(g, w, dtype, name)
    if not norm:
        assert grads[2].numel() == 0 and grads[3].numel() == 0
    return y, grads


@pytest.mark.parametrize("dtype", DTYPES + HALF)
@pytest.mark.parametrize("case", [SHAPES[1], SHAPES[4], SHAPES[6], SHAPES[9], SHAPES[10]])
def test_ops_match_reference(case, dtype, cpu_isa):
    _ops_vs_reference(case, dtype)


@needs_cpu
def test_isa_variants_both_run():
    # both variants match the reference (above); here: the switch takes effect (FMA rounds differently)
    if "avx2" not in fxkernels._ext._INFO.get("cpu_isa_usable", []):
        pytest.skip("this CPU does not run the avx2 kernels")
    C, out = fxkernels._ext._C, []
    prev = C._set_cpu_isa("generic")
    try:
        for isa in ("generic", "avx2"):
            C._set_cpu_isa(isa)
            torch.manual_seed(1)
            out.append(_ops_vs_reference(SHAPES[10].values[0], torch.float32))
    finally:
        C._set_cpu_isa(prev)
    assert not torch.equal(out[0][0], out[1][0]) or not torch.equal(out[0][1][1], out[1][1][1])


@needs_cpu
def test_torch_checks():
    ops = torch.ops.fxkernels
    inp = make(1, 2, (2, 3, 4), 8, (3, 3, 3), True, True, False, torch.float32)
    x, w, nw, nb = inp["x"], inp["weight"], inp["norm_weight"], inp["norm_bias"]
    s, thw = [1, 2, 2], [2, 3, 4]
    for args, match in (
        ((x[0], w, nw, nb, s, thw, True, 1e-6), "attention_pool_fwd: x must be 4-D"),
        ((x.long(), w, nw, nb, s, thw, True, 1e-6), "x must be float32"),
        (
            (x, w[:7], nw, nb, s, thw, True, 1e-6),
            "weight must have shape \\(hd, 1, kt, kh, kw\\) with x's hd = 8",
        ),
        ((x, w.double(), nw, nb, s, thw, True, 1e-6), "weight must have the same dtype as x"),
        ((x, w, nw, nb, s, [2, 3, 3], True, 1e-6), "thw = \\(2, 3, 3\\) must multiply out to x's L = 25"),
        ((x, w, nw, nb, s, [2, 3], True, 1e-6), "thw must be 3 ints"),
        ((x, w, nw, nb, [1, 0, 2], thw, True, 1e-6), "stride must be positive"),
        ((x, w, nw[:7], nb, s, thw, True, 1e-6), "norm_weight must have shape \\(hd,\\)"),
        ((x, w, nw, None, s, thw, True, 1e-6), "norm_weight and norm_bias go together"),
        ((x, w, nw, nb.double(), s, thw, True, 1e-6), "norm_bias must have the same dtype as x"),
        ((x, w, nw, nb, s, thw, True, -1.0), "eps must be a positive float"),
    ):
        with pytest.raises(RuntimeError, match=match):
            ops.attention_pool_fwd(*args)
    y, stats = ops.attention_pool_fwd(x, w, nw, nb, s, thw, True, 1e-6)
    for dy, st, match in (
        (y[:, :, :-1], stats, "dy must have shape \\(B, nh, Lo, hd\\) = \\(1, 2, 9, 8\\)"),
        (y.double(), stats, "dy must have the same dtype as x"),
        (y, stats[..., :1], "stats must have shape \\(B, nh, Lo, 2\\)"),
        (y, stats.double(), "stats must have the accumulation dtype"),
    ):
        with pytest.raises(RuntimeError, match=match):
            ops.attention_pool_bwd(dy, x, w, nw, nb, st, s, thw, True, 1e-6)

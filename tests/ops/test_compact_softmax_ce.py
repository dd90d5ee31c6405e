"""Compact softmax cross-entropy (fxkernels/ops/compact_softmax_ce/README.md): the reference vs an explicit per-row
loop, the analytic gradient vs autograd of the reference, and every kernel backend vs the float64 reference,
outputs and gradients."""

import math
from functools import partial

import pytest
import torch

import fxkernels
from fxkernels.ops.compact_softmax_ce.compact_softmax_ce import KERNELS, compact_softmax_ce_op
from fxkernels.ops.compact_softmax_ce.reference import compact_softmax_ce_ref, compact_softmax_ce_rows_ref
from fxkernels.testing import assert_deterministic, check_op, gradcheck
from tests.conftest import BACKEND_PARAMS as _ALL_BACKENDS

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
REDUCTIONS = ["mean", "sum", "none"]
# the kernel backends here that serve this family
BACKEND_PARAMS = [p for p in _ALL_BACKENDS if p.values[1] in KERNELS]


def make(N, C, dtype=torch.float64, device="cpu", layout="contiguous", scale=3.0):
    """logits (N, C) in a layout the op must accept (contiguous | transposed: a (C, N) tensor's .t() | sliced:
    every other column of a wider tensor | offset: columns 1 .. C of an (N, C + 1) tensor) and targets covering
    the first and last class. The view is taken last (scaling or moving a non-dense view would copy it)."""

    def base(*shape):
        return (scale * torch.randn(*shape, dtype=torch.float64)).to(dtype=dtype, device=device)

    if layout == "transposed":
        z = base(C, N).t()
    elif layout == "sliced":
        z = base(N, 2 * C)[:, ::2]
    elif layout == "offset":  # rows contiguous but one element off and C + 1 apart
        z = base(N, C + 1)[:, 1:]
    else:
        z = base(N, C)
    y = torch.randint(0, C, (N,))
    if N >= 2:
        y[0], y[1] = 0, C - 1
    return z, y.to(device)


def loop_loss(z, y, beta):
    """l_n by the definition, one row at a time, in Python floats."""
    out = []
    for row, t in zip(z.tolist(), y.tolist()):
        C = len(row)
        K = C - 1
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        others = [v for c, v in enumerate(row) if c != t]
        m2 = max(others)
        lse2 = m2 + math.log(sum(math.exp(v - m2) for v in others))
        q = [math.exp(v - lse2) for v in others]
        kl_uq = sum((1 / K) * math.log(1 / (K * qc)) for qc in q)
        kl_qu = sum(qc * math.log(K * qc) for qc in q)
        out.append(-(row[t] - lse) + beta / 2 * (kl_uq + kl_qu))
    return torch.tensor(out, dtype=torch.float64)


def analytic_grad(z, y, beta):
    """dl_n/dz_c = p_c - [c=y] + beta/2 [c!=y] (p'_c - 1/K + p'_c (log p'_c - S)), S = sum_{a!=y} p'_a log p'_a."""
    N, C = z.shape
    mask = torch.nn.functional.one_hot(y, C).bool()
    p = torch.softmax(z, 1)
    logq = torch.log_softmax(z.masked_fill(mask, -math.inf), 1)
    q = logq.exp()
    S = (q * logq.masked_fill(mask, 0.0)).sum(1, keepdim=True)
    extra = q - 1 / (C - 1) + q * (logq - S)
    return p - mask.to(z.dtype) + beta / 2 * extra.masked_fill(mask, 0.0)


def check(z, y, backend, beta=0.2, reduction="mean", via=None, **kw):
    fn = via or partial(fxkernels.compact_softmax_ce, beta=beta, reduction=reduction, backend=backend)
    ref = partial(compact_softmax_ce_ref, beta=beta, reduction=reduction)
    return check_op(fn, ref, {"logits": z, "target": y}, **kw)


# ------------------------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("C", [2, 3, 7, 1000])
@pytest.mark.parametrize("beta", [0.0, 0.2, 1.5])
def test_reference_matches_the_definition(C, beta):
    z, y = make(6, C)
    rows = compact_softmax_ce_rows_ref(z, y, beta)
    torch.testing.assert_close(rows, loop_loss(z, y, beta), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(compact_softmax_ce_ref(z, y, beta, "mean"), rows.mean())
    torch.testing.assert_close(compact_softmax_ce_ref(z, y, beta, "sum"), rows.sum())
    torch.testing.assert_close(compact_softmax_ce_ref(z, y, beta, "none"), rows)


def test_reference_beta0_is_cross_entropy_and_c2_has_no_kl_term():
    z, y = make(9, 7)
    for red in REDUCTIONS:
        want = torch.nn.functional.cross_entropy(z, y, reduction=red)
        torch.testing.assert_close(compact_softmax_ce_ref(z, y, 0.0, red), want)
    z, y = make(9, 2)  # K = 1: p' = 1 = u', both KL terms vanish
    torch.testing.assert_close(
        compact_softmax_ce_ref(z, y, 0.7, "none"), torch.nn.functional.cross_entropy(z, y, reduction="none")
    )


@pytest.mark.parametrize("C", [2, 3, 7, 1000])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_analytic_gradient_equals_autograd_of_the_reference(C, reduction):
    N = 5
    z, y = make(N, C)
    z.requires_grad_(True)
    loss = compact_softmax_ce_ref(z, y, 0.2, reduction)
    up = (
        torch.randn(N, dtype=torch.float64) if reduction == "none" else torch.tensor(1.0, dtype=torch.float64)
    )
    (g,) = torch.autograd.grad(loss, z, up)
    w = {"mean": torch.full((N, 1), 1 / N, dtype=torch.float64), "sum": torch.ones(N, 1, dtype=torch.float64)}
    w = w[reduction] if reduction in w else up.view(N, 1)
    torch.testing.assert_close(g, w * analytic_grad(z.detach(), y, 0.2), rtol=1e-12, atol=1e-13)


def test_reference_gradcheck():
    z, y = make(4, 7)
    for red in REDUCTIONS:
        assert gradcheck(partial(compact_softmax_ce_ref, beta=0.3, reduction=red), {"logits": z, "target": y})


# ------------------------------------------------------------------------------------------------ backends
SHAPES = [
    pytest.param(5, 2, "contiguous", id="C2"),
    pytest.param(13, 7, "contiguous", id="C7"),
    pytest.param(1, 7, "contiguous", id="N1-C7"),
    pytest.param(300, 7, "contiguous", id="N300-C7"),
    pytest.param(9, 1000, "contiguous", id="C1000"),
    pytest.param(7, 33, "transposed", id="C33-transposed"),
    pytest.param(6, 1000, "transposed", id="C1000-transposed"),
    pytest.param(11, 17, "sliced", id="C17-sliced"),
]


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,C,layout", SHAPES)
def test_matches_reference(N, C, layout, dtype, reduction, device, backend):
    z, y = make(N, C, dtype, device, layout)
    check(z, y, backend, reduction=reduction)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("beta", [0.0, 1.0, 3])
def test_other_betas(beta, device, backend):
    z, y = make(8, 11, torch.float32, device)
    check(z, y, backend, beta=beta, reduction="none")


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision(dtype, device, backend):
    for N, C, layout in ((13, 7, "contiguous"), (5, 300, "transposed")):
        for red in ("mean", "none"):
            z, y = make(N, C, dtype, device, layout)
            check(z, y, backend, reduction=red)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_extreme_logits_stay_finite(device, backend):
    # a target logit far above the others (p' is formed from the non-target logits alone) and large offsets
    z, y = make(6, 9, torch.float32, device, scale=1.0)
    z = z.clone()
    z[torch.arange(6), y] = 200.0
    z[3] += 1e4
    check(z, y, backend, reduction="none")


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_gradcheck_fp64(device, backend):
    for N, C, layout in ((3, 7, "contiguous"), (4, 5, "transposed")):
        z, y = make(N, C, torch.float64, device, layout, scale=1.0)
        for red in REDUCTIONS:
            fn = partial(fxkernels.compact_softmax_ce, beta=0.4, reduction=red, backend=backend)
            assert gradcheck(fn, {"logits": z, "target": y})


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_registered_op_autograd_matches_reference(device, backend):
    # eager calls take a direct autograd.Function; this checks the registered op's autograd (torch.compile's path)
    z, y = make(7, 9, torch.float64, device, "transposed")

    def via(logits, target):
        return torch.ops.fxkernels.compact_softmax_ce(logits, target, 0.2, backend)

    check_op(via, partial(compact_softmax_ce_rows_ref, beta=0.2), {"logits": z, "target": y})


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_opcheck(device, backend):
    for N, C, layout in ((6, 7, "contiguous"), (5, 12, "transposed")):
        z, y = make(N, C, torch.float32, device, layout)
        torch.library.opcheck(
            torch.ops.fxkernels.compact_softmax_ce.default, (z.requires_grad_(True), y, 0.2, backend)
        )
    z, y = make(6, 7, torch.float32, device)
    dl = torch.randn(6, device=device)
    torch.library.opcheck(torch.ops.fxkernels.compact_softmax_ce_backward.default, (dl, z, y, 0.2, backend))


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_backward_is_deterministic(device, backend):
    z, y = make(64, 100, torch.float32, device)
    fn = partial(fxkernels.compact_softmax_ce, reduction="none", backend=backend)
    assert_deterministic(fn, {"logits": z, "target": y})


@pytest.mark.parametrize(
    "device,backend", BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(reduction, device, backend):
    z = torch.randn(0, 7, device=device, requires_grad=True)
    y = torch.zeros(0, dtype=torch.int64, device=device)
    loss = fxkernels.compact_softmax_ce(z, y, reduction=reduction, backend=backend)
    want = torch.nn.functional.cross_entropy(
        z.detach(), y, reduction=reduction
    )  # mean: nan, sum: 0, none: (0,)
    assert loss.shape == want.shape and loss.dtype == z.dtype
    torch.testing.assert_close(loss.detach(), want, equal_nan=True)
    if reduction != "mean":
        loss.sum().backward()
        assert z.grad.shape == z.shape


@pytest.mark.parametrize(
    "device,backend", BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
)
def test_nan_propagates_to_its_row(device, backend):
    z, y = make(5, 7, torch.float32, device)
    z = z.clone()
    z[1, (y[1] + 1) % 7] = float("nan")  # a non-target logit
    z[3, y[3]] = float("nan")  # the target logit
    z.requires_grad_(True)
    loss = fxkernels.compact_softmax_ce(z, y, reduction="none", backend=backend)
    nan_rows = torch.tensor([False, True, False, True, False], device=device)
    assert torch.equal(loss.isnan(), nan_rows)
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert torch.equal(g.isnan().all(1), nan_rows) and not g[~nan_rows].isnan().any()
    if backend != "reference":
        check(z.detach(), y, backend, reduction="none")


def test_meta_tensors():
    z = torch.empty(8, 7, device="meta", requires_grad=True)
    y = torch.empty(8, dtype=torch.int64, device="meta")
    for red, shape in (("mean", ()), ("sum", ()), ("none", (8,))):
        loss = fxkernels.compact_softmax_ce(z, y, reduction=red)
        assert loss.device.type == "meta" and loss.shape == shape


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_compile_fullgraph(backend, reduction):
    if backend == "cpu" and not fxkernels.backends()["cpu"]:
        pytest.skip("needs the compiled CPU kernels")
    z, y = make(9, 7, torch.float32, "cpu", "transposed")

    def fn(logits, target):
        return 2 * fxkernels.compact_softmax_ce(logits * 1.5, target, 0.3, reduction, backend=backend)

    torch._dynamo.reset()
    check_op(torch.compile(fn, fullgraph=True), fn, {"logits": z, "target": y}, ref_dtype=None)


def test_auto_backend_choice():
    assert "cuda" not in KERNELS
    want = "cpu" if fxkernels.backends()["cpu"] else "reference"
    assert compact_softmax_ce_op.resolve("auto", torch.device("cpu")) == want
    with fxkernels.use_backend("reference"):
        assert compact_softmax_ce_op.resolve("auto", torch.device("cpu")) == "reference"


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_more_than_1024_classes(device, backend):
    z, y = make(3, 1500, torch.float32, device)
    if backend == "triton":  # a row in registers: refused with the reason, "auto" goes elsewhere
        with pytest.raises(ValueError, match=r"triton backend takes C <= 1024 classes .* got C = 1500"):
            fxkernels.compact_softmax_ce(z, y, backend="triton")
    else:
        check(z, y, backend, reduction="none")


def test_bad_input():
    f = fxkernels.compact_softmax_ce
    z, y = make(4, 7, torch.float32)
    with pytest.raises(ValueError, match=r"logits must be 2-D \(N, C\), got shape \(4, 7, 1\)"):
        f(z[..., None], y)
    with pytest.raises(ValueError, match="C >= 2 classes, got C = 1"):
        f(z[:, :1], torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits must be float32, float64"):
        f(z.long(), y)
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        f([[1.0, 2.0]], y)
    with pytest.raises(ValueError, match="target must be int64"):
        f(z, y.int())
    with pytest.raises(ValueError, match="target must be int64"):
        f(z, y.float())
    with pytest.raises(ValueError, match="target must be an int64 torch.Tensor"):
        f(z, [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(4,\), got \(4, 1\)"):
        f(z, y[:, None])
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(4,\), got \(3,\)"):
        f(z, y[:3])
    for bad in (7, -1):
        yb = y.clone()
        yb[2] = bad
        with pytest.raises(ValueError, match=r"target values must be in \[0, C\) = \[0, 7\)"):
            f(z, yb)
    with pytest.raises(ValueError, match="reduction must be one of"):
        f(z, y, reduction="avg")
    for beta in (True, "0.2", torch.tensor(0.2), None):
        with pytest.raises(ValueError, match="beta must be a Python float"):
            f(z, y, beta=beta)
    with pytest.raises(ValueError, match="backend"):
        f(z, y, backend="gpu")
    with pytest.raises(RuntimeError, match="'cuda' is not available"):
        f(z, y, backend="cuda")


@pytest.mark.skipif(not fxkernels.backends()["cpu"], reason="needs the compiled CPU kernels")
def test_cpp_op_checks():
    ops = torch.ops.fxkernels
    z, y = make(4, 7, torch.float32)
    with pytest.raises(RuntimeError, match="target values must be in"):
        ops.compact_softmax_ce_fwd(z, torch.full((4,), 7), 0.2)
    with pytest.raises(RuntimeError, match="target must be int64"):
        ops.compact_softmax_ce_fwd(z, y.int(), 0.2)
    with pytest.raises(RuntimeError, match="C >= 2"):
        ops.compact_softmax_ce_fwd(z[:, :1], torch.zeros(4, dtype=torch.int64), 0.2)
    with pytest.raises(RuntimeError, match=r"dl must have shape \(N,\)"):
        ops.compact_softmax_ce_bwd(torch.ones(3), z, y, 0.2)


# ------------------------------------------------------------------------------- C++ CPU kernels, per ISA
ALL_DTYPES = DTYPES + HALF
# the `isa` fixture (tests/conftest.py): this family has no AVX-512 build, its avx512 slots hold its AVX2 kernels


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("C", [2, 7, 1000, 1003])
def test_isa_variants(isa, C, dtype):
    # 37 random targets: in a full vector chunk, in the last partial one, first and last class
    z, y = make(37, C, dtype)
    for red in ("none", "mean"):
        check(z, y, "cpu", reduction=red)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(
    "C,layout", [(1003, "transposed"), (7, "sliced"), (1000, "sliced"), (1003, "offset"), (7, "offset")]
)
def test_isa_variants_non_contiguous(isa, C, layout, dtype):
    z, y = make(11, C, dtype, layout=layout)
    assert not z.is_contiguous()
    check(z, y, "cpu", reduction="none")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [7, 1003])
def test_isa_nan_propagates_to_its_row(isa, C, dtype):
    z, y = make(6, C, dtype)
    y[4] = 0
    z = z.clone()
    z[1, (y[1] + 1) % C] = float("nan")  # a non-target logit (in the row's first chunk)
    z[3, y[3]] = float("nan")  # the target logit
    z[4, C - 1] = float("nan")  # the last column: the partial vector chunk
    z[5, torch.arange(C) != y[5]] = float("nan")  # every non-target logit
    nan_rows = torch.tensor([False, True, False, True, True, True])
    z.requires_grad_(True)
    loss = fxkernels.compact_softmax_ce(z, y, reduction="none", backend="cpu")
    assert torch.equal(loss.isnan(), nan_rows)
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert torch.equal(g.isnan().all(1), nan_rows) and not g[~nan_rows].isnan().any()
    check(z.detach(), y, "cpu", reduction="none")


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(
    "N,C,layout", [(600, 1003, "contiguous"), (12000, 7, "contiguous"), (300, 33, "transposed")]
)
def test_isa_bitwise_across_thread_counts(isa, N, C, layout, dtype):
    # enough rows that at::parallel_for splits them between 2 threads (grain 32768 / C rows forward, 16384 / C
    # backward): every row is reduced in a fixed order, whichever thread takes it
    z, y = make(N, C, dtype, layout=layout)
    dl = torch.randn(N, dtype=dtype)
    ops = torch.ops.fxkernels
    prev = torch.get_num_threads()
    got = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got[threads] = (ops.compact_softmax_ce_fwd(z, y, 0.2), ops.compact_softmax_ce_bwd(dl, z, y, 0.2))
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(got[1][0], got[2][0]), "the row losses differ between 1 and 2 threads"
    assert torch.equal(got[1][1], got[2][1]), "the gradients differ between 1 and 2 threads"

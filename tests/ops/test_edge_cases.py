"""Regression tests for issue 11, "Defects found by testing the landed ops as a new user would".

One test per defect, on every backend of `tests.conftest.BACKEND_PARAMS` (and the reference where the defect
was the reference's): non-finite values propagate as in the reference, or by the rule the op's README states
where a fused formula groups terms differently; empty inputs give empty results; the edge convolutions accept
meta and fake tensors; knn_cosine ties duplicate rows to the lower index; spatial_correlation rejects absurd
patch sizes and dilations with a ValueError.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import fxkernels
from fxkernels.ops.ccc.reference import channel_edge_conv_ref, knn_cosine_ref
from fxkernels.ops.corr.reference import spatial_correlation_loop, spatial_correlation_ref
from fxkernels.ops.spectral.reference import spectral_filter_ref
from fxkernels.testing import assert_close
from tests.conftest import AVAILABLE, BACKEND_PARAMS

WITH_REFERENCE = BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
ALL_DTYPES = DTYPES + [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
INF, NAN = float("inf"), float("nan")
# NaN arithmetic is what these tests are about (numpy warns about it under TRITON_INTERPRET=1)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def grads(fn, inputs, dy):
    """(y, [d input]) of fn(*inputs) under the upstream gradient dy."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    y.backward(dy)
    return y.detach(), [t.grad for t in leaves]


def assert_same(got, want, dtype, names):
    """Outputs and gradients: NaN, +inf and -inf at exactly the same places, the finite rest within
    tolerance."""
    for name, a, b in zip(names, got, want):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        for kind, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
            assert torch.equal(test(a), test(b)), f"{name}: {kind} at different places"
        assert_close(a, b, dtype, name)


def poison(t, where, value):
    t = t.clone()
    t[where] = value
    return t


# ------------------------------------------------------------------------------------ edge convolutions
def edge_case(graph, case, dtype, B=2, C=6, N=5, F_out=4, k=3):
    x = torch.randn(B, C, N, dtype=torch.float64)
    w1, w2 = torch.randn(F_out, N, dtype=torch.float64), torch.randn(F_out, N, dtype=torch.float64)
    b1, b2 = torch.randn(F_out, dtype=torch.float64), torch.randn(F_out, dtype=torch.float64)
    nbr = knn_cosine_ref(x if graph == "channel" else x.transpose(1, 2), k)
    x, w1, w2, b1, b2 = {
        "x-inf": lambda: (poison(x, (0, 1, 2), INF), w1, w2, b1, b2),
        "x-nan": lambda: (poison(x, (1, 4, 0), NAN), w1, w2, b1, b2),
        "w1-inf": lambda: (x, poison(w1, (1, 2), INF), w2, b1, b2),
        "w2-inf": lambda: (x, w1, poison(w2, (2, 3), -INF), b1, b2),
        "b1-nan": lambda: (x, w1, w2, poison(b1, 1, NAN), b2),  # y NaN where every input is finite
    }[case]()
    return [t.to(dtype) for t in (x, w1, w2, b1, b2)], nbr, torch.randn(B, C, F_out, dtype=torch.float64)


def spatial_edge_conv_rule(x, nbr, w1, w2, b1, b2):
    """The fused spatial_edge_conv as the kernels group it (fxkernels/ops/ccc/README.md, non-finite inputs):
    y = max_s ReLU(a + h_s), a = x (W1 - 2 W2)^T + (b1 + b2), h_s = W2 P_s x. Its autograd is the rule of the
    gradients."""
    B, C, N = x.shape
    k = nbr.shape[-1]
    xg = torch.gather(x, 2, nbr.reshape(B, 1, N * k).expand(B, C, N * k)).view(B, C, N, k)
    a = x @ (w1 - 2.0 * w2).t() + (b1 + b2)
    e = a.unsqueeze(-1) + torch.einsum("bcnk,on->bcok", xg, w2)
    return torch.relu(e).max(dim=-1).values


EDGE_NAMES = ("y", "dx", "dweight1", "dweight2", "dbias1", "dbias2")


def edge_run(op, nbr, backend, inputs, dy):
    """[y, dx, dw1, dw2, db1, db2] of op(x, nbr, w1, w2, b1, b2, backend=...); None: plain."""
    kw = {} if backend is None else {"backend": backend}
    y, g = grads(lambda x, w1, w2, b1, b2: op(x, nbr, w1, w2, b1, b2, **kw), inputs, dy)
    return [y] + g


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["x-inf", "x-nan", "w1-inf", "w2-inf", "b1-nan"])
def test_channel_edge_conv_nonfinite_matches_reference(case, dtype, device, backend):
    inputs, nbr, dy = edge_case("channel", case, dtype)
    want = edge_run(channel_edge_conv_ref, nbr, None, [t.double() for t in inputs], dy)
    got = edge_run(
        fxkernels.channel_edge_conv,
        nbr.to(device),
        backend,
        [t.to(device) for t in inputs],
        dy.to(device, dtype),
    )
    assert_same(got, want, dtype, EDGE_NAMES)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["x-inf", "x-nan", "w1-inf", "w2-inf", "b1-nan"])
def test_spatial_edge_conv_nonfinite_follows_rule(case, dtype, device, backend):
    inputs, nbr, dy = edge_case("spatial", case, dtype)
    want = edge_run(
        spatial_edge_conv_rule,
        nbr,
        None,
        [t.double() for t in inputs],
        dy,
    )
    got = edge_run(
        fxkernels.spatial_edge_conv,
        nbr.to(device),
        backend,
        [t.to(device) for t in inputs],
        dy.to(device, dtype),
    )
    assert_same(got, want, dtype, EDGE_NAMES)


def test_spatial_edge_conv_rule_is_the_op_for_finite_inputs():
    """The rule's grouping changes only rounding for finite inputs: it is the reference backend's op."""
    inputs, nbr, dy = edge_case("spatial", "x-inf", torch.float64)
    inputs[0] = torch.randn_like(inputs[0])
    want = edge_run(fxkernels.spatial_edge_conv, nbr, "reference", inputs, dy)
    got = edge_run(spatial_edge_conv_rule, nbr, None, inputs, dy)
    assert_same(got, want, torch.float64, EDGE_NAMES)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", ["channel", "spatial"])
def test_edge_conv_nan_output_passes_gradient(graph, device, backend):
    """Where y is NaN the reference's ReLU-max backward passes dy to the winning (first NaN) neighbour."""
    inputs, nbr, dy = edge_case(graph, "b1-nan", torch.float64)
    op = fxkernels.channel_edge_conv if graph == "channel" else fxkernels.spatial_edge_conv
    want = edge_run(op, nbr, "reference", inputs, dy)
    got = edge_run(op, nbr.to(device), backend, [t.to(device) for t in inputs], dy.to(device))
    assert torch.isnan(want[0]).any() and torch.isfinite(want[2]).all()
    assert_same(got, want, torch.float64, EDGE_NAMES)


# -------------------------------------------------------------------------------------------------- knn
@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_nonfinite_rows_match_reference(dtype, device, backend):
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    x[0, 3, 1], x[1, 7, 0], x[1, 2, 5] = NAN, INF, -INF  # rows of NaN similarities: first, by index
    x = x.to(dtype)
    want = knn_cosine_ref(x, 12)
    assert torch.equal(fxkernels.knn_cosine(x.to(device), 12, backend=backend).cpu(), want)


@pytest.fixture
def gpu_like_interpreter_dot(monkeypatch):
    """Under TRITON_INTERPRET=1 a `tl.dot` is numpy's BLAS matmul, whose rounding depends on the position in
    the matrix; the GPU's dot (FMA or MMA) computes every element the same way. This makes the interpreter's
    dot position-independent too (fp32 / fp64 accumulation in the order of the K axis)."""
    try:
        from triton.runtime import interpreter as interp
    except ImportError:  # pragma: no cover
        return
    import triton.language as tl

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        def up(h):
            if h.dtype.scalar == tl.bfloat16:
                return interp._convert_float(h.data, tl.bfloat16, tl.float32, None).view(np.float32)
            return h.data

        dt = d.data.dtype
        av, bv = up(a).astype(dt), up(b).astype(dt)
        acc = d.data.copy()
        for j in range(av.shape[-1]):
            acc = acc + av[..., :, j : j + 1] * bv[..., j : j + 1, :]
        return interp.TensorHandle(acc, d.dtype.scalar)

    monkeypatch.setattr(interp.InterpreterBuilder, "create_dot", create_dot)


@pytest.mark.parametrize("device,backend", WITH_REFERENCE)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("R", [pytest.param(40, id="R40"), pytest.param(300, id="R300-tiled")])
def test_knn_duplicate_rows_tie_to_lower_index(R, dtype, device, backend, gpu_like_interpreter_dot):
    """Bitwise-equal rows score bitwise-equal similarities on every backend: in every row's list a duplicate
    follows its lowest equal row directly (no other row has the same similarity in random data), and equal
    rows get equal lists."""
    torch.manual_seed(1)
    uniq = R // 2
    src = torch.cat([torch.arange(uniq), torch.randint(0, uniq, (R - uniq,))])
    src = src[torch.randperm(R)]
    x = torch.randn(2, uniq, 24, dtype=torch.float64).to(dtype)[:, src]
    k = R if R <= 40 else 20
    nbr = fxkernels.knn_cosine(x.to(device), k, backend=backend).cpu()
    first = {int(s): int((src == s).nonzero()[0]) for s in src.unique()}
    rep = torch.tensor([first[int(s)] for s in src])
    for b in range(2):
        assert torch.equal(nbr[b], nbr[b, rep]), "equal rows got different neighbour lists"
        for r in range(R):
            row = nbr[b, r].tolist()
            groups = [rep[q].item() for q in row]
            for g in set(groups):
                members = [q for q in row if rep[q] == g]
                pos = [i for i, q in enumerate(row) if rep[q] == g]
                assert members == sorted(members), f"row {r}: equal rows {members} not in index order"
                assert pos == list(range(pos[0], pos[0] + len(pos))), f"row {r}: equal rows {members} apart"
    sims = F.normalize(x.double(), dim=-1) @ F.normalize(x.double(), dim=-1).transpose(1, 2)
    got = sims.gather(-1, nbr)
    assert (got[..., :-1] >= got[..., 1:] - 2e-2).all(), "lists not in decreasing similarity"


# ---------------------------------------------------------------------------------- spatial correlation
CORR_CASES = [
    pytest.param((0, 1, 4, 5), INF, "f2", id="f2-inf-corner"),
    pytest.param((0, 1, 8, 9), NAN, "f2", id="f2-nan-corner"),
    pytest.param((0, 2, 4, 5), INF, "f1", id="f1-inf"),
    pytest.param((0, 0, 0, 0), -INF, "dout", id="dout-inf"),
]


def corr_case(where, value, which, dtype):
    f1, f2 = torch.randn(1, 3, 9, 10, dtype=torch.float64), torch.randn(1, 3, 9, 10, dtype=torch.float64)
    dout = torch.randn(1, 9, 9, 10, dtype=torch.float64)
    if which == "f1":
        f1 = poison(f1, where, value)
    elif which == "f2":
        f2 = poison(f2, where, value)
    else:
        dout = poison(dout, where, value)
    return f1.to(dtype), f2.to(dtype), dout


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where,value,which", CORR_CASES)
def test_corr_nonfinite_follows_rule(where, value, which, dtype, device, backend):
    """Forward as the reference; backward by the README's rule: only displacements inside the map contribute
    (as the loop form), so a non-finite value reaches only the positions that displace onto it (the
    reference's Gram GEMM spreads it over the whole (b, c) plane instead)."""
    f1, f2, dout = corr_case(where, value, which, dtype)
    y_ref = spatial_correlation_ref(f1.double(), f2.double(), 3, 2)
    want = grads(lambda a, b: spatial_correlation_loop(a, b, 3, 2), [f1.double(), f2.double()], dout)
    y, g = grads(
        lambda a, b: fxkernels.spatial_correlation(a, b, 3, 2, backend=backend),
        [f1.to(device), f2.to(device)],
        dout.to(device, dtype),
    )
    assert_same([y, y] + g, [y_ref, want[0]] + want[1], dtype, ("y vs reference", "y vs loop", "df1", "df2"))
    assert all(torch.isfinite(t).any() for t in g), "a non-finite value spread over a whole gradient"


# ------------------------------------------------------------------------------------------- spectral
SPECTRAL_BACKENDS = BACKEND_PARAMS + (
    [pytest.param("cpu", "cpu-emulated", id="cpu-cuda-emulation")] if AVAILABLE["cpu"] else []
)


def spectral_run(backend, x, f, dy):
    """The op's output and gradients; "cpu-emulated": the CUDA kernels' per-column math of spectral_math.h run
    by the cpu backend (test hook)."""
    if backend != "cpu-emulated":
        return grads(lambda a, b: fxkernels.spectral_filter(a, b, backend=backend), [x, f], dy)
    C = fxkernels._ext._C
    prev = C._set_cpu_emulate_threads(1)
    try:
        return grads(lambda a, b: fxkernels.spectral_filter(a, b, backend="cpu"), [x, f], dy)
    finally:
        C._set_cpu_emulate_threads(prev)


SPECTRAL_CASES = [
    pytest.param(8, "x", 2, INF, id="T8-x2-inf"),
    pytest.param(8, "x", 0, NAN, id="T8-x0-nan"),
    pytest.param(7, "x", 1, -INF, id="T7-x1-inf"),
    pytest.param(6, "x", 3, INF, id="T6-x3-inf"),
    pytest.param(8, "dy", 5, INF, id="T8-dy5-inf"),
    pytest.param(6, "filt", 1, INF, id="T6-filt1-inf"),
]


@pytest.mark.parametrize("device,backend", SPECTRAL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,which,t0,value", SPECTRAL_CASES)
def test_spectral_nonfinite_follows_rule(T, which, t0, value, dtype, device, backend):
    """The README's rule: dfilt's DC and Nyquist terms exactly as the reference's (the defect: an inf in x
    gave NaN there, from 0 * inf in their structurally zero imaginary parts); NaN / inf wherever the reference
    has them (elsewhere a backend may also give NaN where a twiddle's cosine or sine is exactly 0); every
    element finite in both within tolerance."""
    M = T // 2 + 1
    x = torch.randn(2, 2, T, 3, 4, dtype=torch.float64)
    f = torch.randn(2, 2, M, 3, 4, 2, dtype=torch.float64)
    dy = torch.randn_like(x)
    if which == "x":
        x = poison(x, (1, 0, t0, 2, 1), value)
    elif which == "dy":
        dy = poison(dy, (0, 1, t0, 1, 3), value)
    else:
        f = poison(f, (1, 1, t0, 0, 2, 0), value)
    got = spectral_run(backend, x.to(device, dtype), f.to(device, dtype), dy.to(device, dtype))
    want = grads(lambda a, b: spectral_filter_ref(a, b), [x, f], dy)
    real = [0] + ([M - 1] if T % 2 == 0 else [])
    assert_same([got[1][1][:, :, real]], [want[1][1][:, :, real]], dtype, ["dfilt at DC / Nyquist"])
    for name, a, b in zip(("y", "dx", "dfilt"), [got[0]] + got[1], [want[0]] + want[1]):
        a, b = a.detach().double().cpu(), b.double()
        assert not (torch.isfinite(a) & ~torch.isfinite(b)).any(), (
            f"{name}: finite where the reference is not"
        )
        both = torch.isfinite(a) & torch.isfinite(b)
        assert both.any() or name == "y", f"{name}: no finite element left to compare"
        assert_close(a[both], b[both], dtype, name)


# ------------------------------------------------------------------------------------------ empty inputs
EMPTY = [
    pytest.param("circular_conv", (2, 0, 4, 3), id="circular_conv-C0"),
    pytest.param("circular_conv", (2, 3, 0, 3), id="circular_conv-H0"),
    pytest.param("circular_conv", (2, 3, 4, 0), id="circular_conv-W0"),
    pytest.param("circular_conv2d", (2, 0, 4, 3), id="circular_conv2d-C0"),
    pytest.param("circular_conv2d", (2, 3, 0, 3), id="circular_conv2d-H0"),
    pytest.param("circular_conv2d", (2, 3, 4, 0), id="circular_conv2d-W0"),
    pytest.param("channel_edge_conv", (0, 4, 5), id="channel_edge_conv-B0"),
    pytest.param("channel_edge_conv", (2, 0, 5), id="channel_edge_conv-C0"),
    pytest.param("spatial_edge_conv", (0, 4, 5), id="spatial_edge_conv-B0"),
    pytest.param("spatial_edge_conv", (2, 0, 5), id="spatial_edge_conv-C0"),
    pytest.param("knn_cosine", (0, 4, 5), id="knn_cosine-B0"),
    pytest.param("knn_cosine", (2, 4, 0), id="knn_cosine-D0"),
    pytest.param("spatial_correlation", (0, 3, 4, 5), id="spatial_correlation-B0"),
    pytest.param("spatial_correlation", (2, 0, 4, 5), id="spatial_correlation-C0"),
    pytest.param("spatial_correlation", (2, 3, 0, 5), id="spatial_correlation-H0"),
    pytest.param("spectral_filter", (0, 2, 4, 3, 3), id="spectral_filter-B0"),
    pytest.param("spectral_filter", (2, 2, 4, 0, 3), id="spectral_filter-H0"),
]


def empty_call(op, shape, backend):
    """(inputs, fn, expected output shape) of one empty-input case."""
    r = lambda *s: torch.randn(*s, dtype=torch.float64)  # noqa: E731
    if op in ("circular_conv", "circular_conv2d"):
        B, C, H, W = shape
        if op == "circular_conv":
            return (
                [r(*shape), r(C, H)],
                lambda x, w: fxkernels.circular_conv(x, w, -2, backend=backend),
                shape,
            )
        fn = lambda x, w1, w2: fxkernels.circular_conv2d(x, w1, w2, "VH", backend=backend)  # noqa: E731
        return [r(*shape), r(C, H), r(C, W)], fn, shape
    if op in ("channel_edge_conv", "spatial_edge_conv"):
        B, C, N = shape
        nbr = torch.zeros(B, C if op == "channel_edge_conv" else N, 2, dtype=torch.int64)
        fn = getattr(fxkernels, op)
        return [r(*shape), r(3, N), r(3, N)], lambda x, w1, w2: fn(x, nbr, w1, w2, backend=backend), (B, C, 3)
    if op == "knn_cosine":
        return [r(*shape)], lambda x: fxkernels.knn_cosine(x, 2, backend=backend).double(), shape[:2] + (2,)
    if op == "spatial_correlation":
        B, C, H, W = shape
        fn = lambda a, b: fxkernels.spatial_correlation(a, b, 3, 1, backend=backend)  # noqa: E731
        return [r(*shape), r(*shape)], fn, (B, 9, H, W)
    B, C, T, H, W = shape
    fn = lambda x, f: fxkernels.spectral_filter(x, f, backend=backend)  # noqa: E731
    return [r(*shape), r(B, C, T // 2 + 1, H, W, 2)], fn, shape


@pytest.mark.parametrize("device,backend", WITH_REFERENCE)
@pytest.mark.parametrize("op,shape", EMPTY)
def test_empty_inputs_give_empty_results(op, shape, device, backend):
    inputs, fn, out_shape = empty_call(op, shape, backend)
    inputs = [t.to(device) for t in inputs]
    y = fn(*[t.requires_grad_(op != "knn_cosine") for t in inputs])
    assert tuple(y.shape) == tuple(out_shape) and y.device.type == device
    if op != "knn_cosine":
        y.backward(torch.ones_like(y))
        for t in inputs:
            assert t.grad is not None and t.grad.shape == t.shape and not t.grad.abs().sum().item()


# ----------------------------------------------------------------------------------- meta / fake tensors
def edge_args(graph, device):
    rows = 4 if graph == "channel" else 5
    return (
        torch.randn(2, 4, 5, device=device),
        torch.zeros(2, rows, 3, dtype=torch.int64, device=device),
        torch.randn(6, 5, device=device),
        torch.randn(6, 5, device=device),
    )


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("graph", ["channel", "spatial"])
def test_edge_conv_meta_tensors(graph, backend):
    """The index range check reads nbr's values: skipped for meta tensors, which get a meta result."""
    op = fxkernels.channel_edge_conv if graph == "channel" else fxkernels.spatial_edge_conv
    y = op(*edge_args(graph, "meta"), backend=backend)
    assert y.device.type == "meta" and tuple(y.shape) == (2, 4, 6)


@pytest.mark.parametrize("graph", ["channel", "spatial"])
def test_edge_conv_fake_tensors(graph):
    """As for meta tensors: fake tensors (torch.compile's, here outside a trace) have no values to check."""
    op = fxkernels.channel_edge_conv if graph == "channel" else fxkernels.spatial_edge_conv
    with FakeTensorMode():
        y = op(*edge_args(graph, "cpu"), backend="reference")
        assert tuple(y.shape) == (2, 4, 6)


# ------------------------------------------------------------------------- huge spatial_correlation args
@pytest.mark.parametrize("device,backend", WITH_REFERENCE)
@pytest.mark.parametrize(
    "patch,dilation,name",
    [
        pytest.param(2**20, 1, "patch_size", id="patch-2^20"),
        pytest.param(3, 2**31, "dilation", id="dilation-2^31"),
    ],
)
def test_corr_huge_patch_or_dilation_is_a_value_error(patch, dilation, name, device, backend):
    f = torch.randn(1, 2, 4, 4, device=device)
    with pytest.raises(ValueError, match=name):
        fxkernels.spatial_correlation(f, f, patch, dilation, backend=backend)

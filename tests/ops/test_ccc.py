"""CCC family (fxkernels/ops/ccc/README.md): every kernel backend vs the reference, outputs and all gradients."""

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels.ops.ccc.reference import channel_edge_conv_ref, knn_cosine_ref, spatial_edge_conv_ref
from fxkernels.testing import (
    assert_close,
    assert_deterministic,
    check_op,
    gradcheck,
    run_with_grads,
    to_device,
)
from tests.conftest import AVAILABLE, BACKEND_PARAMS

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
ALL_DTYPES = DTYPES + [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
GRAPHS = ["channel", "spatial"]

# knn rows: (B, R rows, D features, k, non-contiguous x)
KNN_SHAPES = [
    pytest.param(2, 96, 49, 4, False, id="C96-N49-k4"),
    pytest.param(1, 128, 256, 4, False, id="C128-N256-k4-MOL"),
    pytest.param(2, 130, 49, 1, False, id="C130-N49-k1"),
    pytest.param(1, 130, 49, 130, False, id="C130-N49-kC"),
    pytest.param(1, 96, 3136, 96, False, id="C96-N3136-kC"),
    pytest.param(1, 256, 128, 4, True, id="spatial-N256-C128-k4-noncontig"),
    pytest.param(1, 300, 16, 4, False, id="spatial-N300-C16-k4-tiled"),
    pytest.param(1, 3136, 96, 4, False, id="spatial-N3136-C96-k4"),
    pytest.param(3, 5, 7, 3, True, id="C5-N7-k3-noncontig"),
]

# edge convs: (B, C, N, k, N_out, non-contiguous x)
CHANNEL_SHAPES = [
    pytest.param(2, 96, 49, 4, 49, False, id="C96-N49-k4"),
    pytest.param(1, 128, 256, 4, 256, False, id="C128-N256-k4-MOL"),
    pytest.param(2, 130, 49, 1, 49, False, id="C130-N49-k1"),
    pytest.param(1, 130, 49, 130, 49, False, id="C130-N49-kC"),
    pytest.param(1, 96, 3136, 4, 40, False, id="C96-N3136-k4"),
    pytest.param(2, 7, 13, 3, 9, True, id="C7-N13-k3-Nout9-noncontig"),
]
SPATIAL_SHAPES = [
    pytest.param(2, 96, 49, 4, 49, False, id="C96-N49-k4"),
    pytest.param(1, 128, 256, 4, 256, False, id="C128-N256-k4-MOL"),
    pytest.param(2, 130, 49, 1, 49, False, id="C130-N49-k1"),
    pytest.param(1, 5, 49, 49, 49, False, id="C5-N49-kN"),
    pytest.param(1, 6, 3136, 4, 24, False, id="C6-N3136-k4"),
    pytest.param(2, 7, 13, 3, 9, True, id="C7-N13-k3-Nout9-noncontig"),
]


def make_x(B, C, N, dtype, noncontig=False, exact=False):
    if exact:  # small integers: every sum below is exact in every dtype, so ties are exact too
        x = torch.randint(-1, 2, (B, N, C) if noncontig else (B, C, N)).to(dtype)
    else:
        x = torch.randn((B, N, C) if noncontig else (B, C, N), dtype=torch.float64).to(dtype)
    return x.transpose(1, 2) if noncontig else x


def make_edge(B, C, N, k, Nout, dtype, graph, noncontig=False, exact=False, bias=(True, True), device="cpu"):
    """Inputs of the edge convs: x (B, C, N), nbr (B, rows, k) from the reference k-NN, w1, w2 (Nout, N),
    b1, b2 (Nout,); exact: small integers and quarter weights, so every sum is exact in every dtype."""
    x = make_x(B, C, N, dtype, noncontig, exact)

    def w(*s):
        if exact:
            return (torch.randint(-1, 2, s) / 4).to(dtype)
        return (torch.randn(*s, dtype=torch.float64) * N**-0.5).to(dtype)

    nodes = x if graph == "channel" else x.transpose(1, 2)
    nbr = knn_cosine_ref(nodes.double(), k)
    inputs = {
        "x": x,
        "nbr": nbr,
        "w1": w(Nout, N),
        "w2": w(Nout, N),
        "b1": w(Nout) if bias[0] else None,
        "b2": w(Nout) if bias[1] else None,
    }
    return to_device(inputs, device)


def edge(graph, backend="auto"):
    """The public edge conv of `graph` as a function of make_edge's names."""
    fn = fxkernels.channel_edge_conv if graph == "channel" else fxkernels.spatial_edge_conv
    return lambda x, nbr, w1, w2, b1, b2: fn(x, nbr, w1, w2, b1, b2, backend=backend)


def edge_ref(graph):
    fn = channel_edge_conv_ref if graph == "channel" else spatial_edge_conv_ref
    return lambda x, nbr, w1, w2, b1, b2: fn(x, nbr, w1, w2, b1, b2)


FLOAT_KEYS = ("x", "w1", "w2", "b1", "b2")


# ------------------------------------------------------------------------------------------------- knn
def cosine64(x):
    xn = F.normalize(x.double(), dim=-1, eps=1e-12)
    return xn @ xn.transpose(1, 2)


def check_knn(nbr, x, k, dtype):
    """nbr must pick the reference's top-k similarities in order; indices must match exactly wherever the
    similarity gaps are larger than the dtype's rounding (near-ties may legitimately swap)."""
    assert nbr.dtype == torch.int64 and tuple(nbr.shape) == (x.shape[0], x.shape[1], k)
    sim = cosine64(x)
    want_vals, want_idx = torch.sort(sim, dim=-1, descending=True, stable=True)
    got_vals = sim.gather(-1, nbr)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2e-2)
    assert (got_vals - want_vals[..., :k]).abs().max().item() <= tol, "selected similarities differ"
    assert (nbr.sort(-1).values.diff(dim=-1) > 0).all(), "indices repeat within a row"
    gap = torch.minimum(
        (want_vals[..., :k] - want_vals[..., 1 : k + 1]).abs()
        if k < x.shape[1]
        else torch.full_like(got_vals, 1),
        torch.cat(
            [torch.ones_like(got_vals[..., :1]), (want_vals[..., 1:k] - want_vals[..., : k - 1]).abs()], -1
        ),
    )
    clear = gap > 10 * tol
    assert torch.equal(nbr[clear], want_idx[..., :k][clear]), "indices differ where the order is unambiguous"


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,R,D,k,noncontig", KNN_SHAPES)
def test_knn_matches_reference(B, R, D, k, noncontig, dtype, device, backend):
    if backend == "triton" and device == "cpu" and R > 1024:
        # ~8 min per case in the interpreter; the same tiled kernel (R > 256) runs at R = 300 above
        pytest.skip("R > 1024 is too slow under the Triton interpreter; tiled path covered by N300")
    x = make_x(B, R, D, dtype, noncontig).to(device)
    check_knn(fxkernels.knn_cosine(x, k, backend=backend).cpu(), x.cpu(), k, dtype)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_knn_half_precision(dtype, device, backend):
    x = make_x(2, 40, 33, dtype).to(device)
    check_knn(fxkernels.knn_cosine(x, 5, backend=backend).cpu(), x.cpu(), 5, dtype)


@pytest.mark.parametrize(
    "device,backend", BACKEND_PARAMS + [pytest.param("cpu", "reference", id="reference")]
)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_knn_zero_channel_tie_order(dtype, device, backend):
    # all-zero rows have similarity exactly 0 with everything: ties, which go to the lower index
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    x[:, [1, 4, 5, 8]] = 0
    x[1, :] = 0  # a batch element with no signal at all
    x = x.to(dtype)
    want = knn_cosine_ref(x.double(), 9)
    got = fxkernels.knn_cosine(x.to(device), 9, backend=backend).cpu()
    assert torch.equal(got, want), f"tie order differs:\n{got}\nvs\n{want}"
    # documented order for the all-zero batch element: every row lists 0, 1, ..., C-1
    assert torch.equal(got[1], torch.arange(9).expand(9, 9))


def test_knn_reference_gives_documented_tie_order():
    x = torch.zeros(1, 4, 3)
    x[0, 2] = torch.tensor([1.0, 0.0, 0.0])
    nbr = knn_cosine_ref(x, 4)
    assert nbr[0, 2].tolist() == [2, 0, 1, 3]  # itself first (sim 1), then the zero rows in index order
    assert nbr[0, 0].tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------ edge convs
@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,N,k,Nout,noncontig", CHANNEL_SHAPES)
def test_channel_edge_conv_matches_reference(B, C, N, k, Nout, noncontig, dtype, device, backend):
    inp = make_edge(B, C, N, k, Nout, dtype, "channel", noncontig, device=device)
    check_op(edge("channel", backend), edge_ref("channel"), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,N,k,Nout,noncontig", SPATIAL_SHAPES)
def test_spatial_edge_conv_matches_reference(B, C, N, k, Nout, noncontig, dtype, device, backend):
    inp = make_edge(B, C, N, k, Nout, dtype, "spatial", noncontig, device=device)
    check_op(edge("spatial", backend), edge_ref("spatial"), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("graph", GRAPHS)
def test_edge_conv_exact_data_all_dtypes(graph, dtype, device, backend):
    # integer-valued data: every projection is exact in every dtype, so the max has exact ties (decided by
    # the first neighbour slot, as the reference's max) and all four dtypes can be compared elementwise
    inp = make_edge(2, 10, 49, 4, 30, dtype, graph, exact=True, device=device)
    check_op(edge(graph, backend), edge_ref(graph), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "bias",
    [
        pytest.param((False, False), id="no-bias"),
        pytest.param((True, False), id="bias1-only"),
        pytest.param((False, True), id="bias2-only"),
    ],
)
@pytest.mark.parametrize("graph", GRAPHS)
def test_edge_conv_optional_bias(graph, bias, device, backend):
    inp = make_edge(2, 6, 10, 3, 7, torch.float32, graph, bias=bias, device=device)
    check_op(edge(graph, backend), edge_ref(graph), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_edge_conv_gradcheck_fp64(graph, device, backend):
    inp = make_edge(1, 5, 6, 2, 4, torch.float64, graph, device=device)
    assert gradcheck(edge(graph, backend), inp, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_edge_conv_registered_op_autograd_matches_reference(graph, device, backend):
    # eager calls take a direct autograd.Function; this checks the registered ops' autograd (torch.compile's path)
    inp = make_edge(2, 9, 12, 3, 8, torch.float64, graph, device=device)
    op = (
        torch.ops.fxkernels.channel_edge_conv if graph == "channel" else torch.ops.fxkernels.spatial_edge_conv
    )

    def via_op(x, nbr, w1, w2, b1, b2):
        return op(x, nbr, w1, w2, b1, b2, backend)[0]

    check_op(via_op, edge_ref(graph), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_edge_conv_opcheck(graph, device, backend):
    inp = make_edge(2, 6, 8, 3, 5, torch.float32, graph, device=device)
    for key in FLOAT_KEYS:
        inp[key].requires_grad_(True)
    op = (
        torch.ops.fxkernels.channel_edge_conv if graph == "channel" else torch.ops.fxkernels.spatial_edge_conv
    )
    torch.library.opcheck(
        op.default, (inp["x"], inp["nbr"], inp["w1"], inp["w2"], inp["b1"], inp["b2"], backend)
    )


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_knn_opcheck(device, backend):
    x = torch.randn(2, 7, 5, device=device)
    torch.library.opcheck(torch.ops.fxkernels.knn_cosine.default, (x, 3, backend))


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_edge_conv_backward_is_deterministic(graph, device, backend):
    inp = make_edge(2, 16, 20, 4, 20, torch.float32, graph, device=device)
    assert_deterministic(edge(graph, backend), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_edge_conv_batch_zero(graph, device, backend):
    inp = make_edge(1, 4, 6, 2, 5, torch.float32, graph, device=device)
    inp["x"] = inp["x"][:0]
    inp["nbr"] = inp["nbr"][:0]
    run = run_with_grads(edge(graph, backend), inp, torch.randn(0, 4, 5))
    assert run.outputs[0].shape == (0, 4, 5)
    assert run.grads["w1"].abs().sum() == 0 and run.grads["b1"].abs().sum() == 0


def test_reference_max_takes_first_slot_on_ties():
    # the fused kernels save the first maximising neighbour; the reference's max must agree for the
    # gradient of exact ties (exact-data tests above) to be comparable
    e = torch.tensor([[1.0, 3.0, 3.0, 2.0]], requires_grad=True)
    e.max(dim=1).values.sum().backward()
    assert e.grad.tolist() == [[0.0, 1.0, 0.0, 0.0]]


# ------------------------------------------------------------------------------------------- bad input
def _edge_args():
    x = torch.randn(2, 6, 10)
    nbr = knn_cosine_ref(x, 3)
    w = torch.randn(10, 10)
    return x, nbr, w


BAD = [
    pytest.param(lambda x, n, w: fxkernels.knn_cosine(x, 7), r"k must be in \[1, C\]", id="k>C"),
    pytest.param(lambda x, n, w: fxkernels.knn_cosine(x, 0), r"k must be in \[1, C\]", id="k<1"),
    pytest.param(lambda x, n, w: fxkernels.knn_cosine(x, 2.0), "k must be an int", id="k-float"),
    pytest.param(lambda x, n, w: fxkernels.knn_cosine(x[0], 2), "x must be 3-D", id="knn-rank"),
    pytest.param(lambda x, n, w: fxkernels.knn_cosine(x.int(), 2), "x must be float", id="knn-int"),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n, w[:, :9], w), "weight1 must have shape", id="w1"
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n, w, w[:9]), "weight2 must have shape", id="w2"
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n, w, w, w[0, :9]), "bias1 must have shape", id="b1"
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n + 6, w, w),
        r"nbr values must be in \[0, 6\)",
        id="nbr-high",
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n - 1, w, w),
        r"nbr values must be in \[0, 6\)",
        id="nbr-neg",
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n.int(), w, w), "nbr must be int64", id="nbr-dtype"
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n[:, :5], w, w),
        r"nbr must have shape \(B, C, k\)",
        id="nbr-shape",
    ),
    pytest.param(
        lambda x, n, w: fxkernels.spatial_edge_conv(x, n, w, w),
        r"nbr must have shape \(B, N, k\)",
        id="spatial-nbr-shape",
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n, w, w.double()),
        "weight2 has dtype",
        id="mixed-dtype",
    ),
    pytest.param(
        lambda x, n, w: fxkernels.channel_edge_conv(x, n, w, w, backend="gpu"),
        "backend must be one of",
        id="backend",
    ),
]


@pytest.mark.parametrize("fn,msg", BAD)
def test_ccc_bad_input(fn, msg):
    x, nbr, w = _edge_args()
    with pytest.raises((ValueError, TypeError), match=msg):
        fn(x, nbr, w)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_fused_backends_limit_k(device, backend):
    x = torch.randn(1, 300, 4, device=device)
    nbr = torch.zeros(1, 300, 256, dtype=torch.int64, device=device)
    w = torch.randn(4, 4, device=device)
    with pytest.raises(ValueError, match="k <= 255"):
        fxkernels.channel_edge_conv(x, nbr, w, w, backend=backend)
    # "auto" falls back to the reference for such k
    y = fxkernels.channel_edge_conv(x, nbr, w, w)
    assert_close(y, channel_edge_conv_ref(x.double(), nbr, w.double(), w.double()), torch.float32)


@pytest.mark.skipif(not AVAILABLE["cpu"], reason="needs the compiled CPU kernels")
def test_cpp_op_checks():
    # the C++ ops validate on their own (TORCH_CHECK) when called directly
    x, nbr, w = _edge_args()
    ag = torch.randn(2, 6, 20)
    ops = torch.ops.fxkernels
    with pytest.raises(RuntimeError, match="k"):
        ops.ccc_knn(x, 7)
    with pytest.raises(RuntimeError, match="nbr"):
        ops.ccc_edge_max_fwd(ag, nbr + 6)
    with pytest.raises(RuntimeError, match="nbr"):
        ops.ccc_edge_max_fwd(ag, nbr - 1)
    with pytest.raises(RuntimeError, match="nbr"):
        ops.ccc_edge_max_fwd(ag, nbr.int())
    with pytest.raises(RuntimeError, match="ag"):
        ops.ccc_edge_max_fwd(ag[..., :19], nbr)
    snbr = knn_cosine_ref(x.transpose(1, 2), 3)
    with pytest.raises(RuntimeError, match="nbr"):
        ops.ccc_spatial_fwd(x, snbr + 10, w, torch.randn(2, 6, 10))
    with pytest.raises(RuntimeError, match="w2"):
        ops.ccc_spatial_fwd(x, snbr, w[:, :9], torch.randn(2, 6, 10))

"""MTSTWN modules (fxkernels/nn/spectral.py): every backend vs the module's reference-backend twin; TemporalFilter, the spatial
branch, FWM and STFM vs independent re-implementations (torch.fft, per-frame convs, explicit conv taps)."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels._backend import backend_available
from fxkernels.ops.spectral.spectral import KERNELS, OP
from fxkernels.testing import assert_close, check_module, twin
from tests.conftest import BACKEND_PARAMS, DEVICES

# kind -> (constructor, args, channels, T); the spatial sizes come from `shape`
SPECS = {
    "TemporalFilter-T1": (fxkernels.TemporalFilter, (3, 1), 3, 1),
    "TemporalFilter-T7": (fxkernels.TemporalFilter, (3, 7), 3, 7),
    "TemporalFilter-T8": (fxkernels.TemporalFilter, (2, 8), 2, 8),
    "TemporalFilter-T15": (fxkernels.TemporalFilter, (2, 15), 2, 15),
    "SpatialExtractor": (fxkernels.SpatialExtractor, (3,), 3, 4),
    "STFE-T7": (fxkernels.STFE, (10, 7), 10, 7),  # thirds 3, 3, 4
    "STFE-T8": (fxkernels.STFE, (10, 8), 10, 8),
    "FWM": (fxkernels.FWM, (10,), 10, 7),
    "STFM-T1": (fxkernels.STFM, (10, 1), 10, 1),
    "STFM-T8": (fxkernels.STFM, (10, 8), 10, 8),
    "STFM-T15": (fxkernels.STFM, (10, 15), 10, 15),
}
KINDS = list(SPECS)
SPECTRAL_FREE = ("SpatialExtractor", "FWM")  # kinds that never call spectral_filter


def shape(C, T, backend):
    # the Triton interpreter runs every program in Python: keep its columns few
    return (1, C, T, 3, 3) if backend == "triton" else (2, C, T, 5, 3)


def build(kind, backend="reference", shape_for=None):
    """-> (module on `backend`, input shape sized for `shape_for` (default: `backend`))."""
    cls, args, C, T = SPECS[kind]
    return cls(*args, backend=backend), shape(C, T, shape_for or backend)


def make_input(shape, dtype, device, layout="contiguous"):
    B, C, T, H, W = shape
    if layout == "permuted":  # channels-last-3d memory: every module must accept any strides
        return torch.randn(B, T, H, W, C, dtype=dtype, device=device).permute(0, 4, 1, 2, 3)
    return torch.randn(shape, dtype=dtype, device=device)


def skip_without_spectral_kernels(backend):
    """The fused spectral kernels land separately from their backends' other kernels."""
    if backend in ("cpu", "cuda") and not backend_available(backend, OP, KERNELS):
        pytest.skip(f"the C++ spectral kernels (spectral_fwd:{backend}) are not compiled into fxkernels._C")
    if backend == "triton" and importlib.util.find_spec("fxkernels.ops.spectral.triton") is None:
        pytest.skip("the Triton spectral kernels (fxkernels/ops/spectral/triton.py) are not there")


# ------------------------------------------------------------------------ every backend vs reference twin
DTYPES = {"fp64": torch.float64, "fp32": torch.float32}
# (dtype, layout) combinations; the Triton interpreter is slow, so it runs two that cover both of each
COMBOS = [("fp64", "contiguous"), ("fp64", "permuted"), ("fp32", "contiguous"), ("fp32", "permuted")]
TRITON_COMBOS = [("fp64", "contiguous"), ("fp32", "permuted")]
TWIN_PARAMS = [
    pytest.param(kind, *p.values, DTYPES[dt], layout, id=f"{kind}-{p.id}-{dt}-{layout}")
    for kind in KINDS
    for p in BACKEND_PARAMS
    for dt, layout in (TRITON_COMBOS if p.values[1] == "triton" else COMBOS)
]


@pytest.mark.parametrize("kind,device,backend,dtype,layout", TWIN_PARAMS)
def test_module_matches_reference_backend(kind, device, backend, dtype, layout):
    if kind not in SPECTRAL_FREE:
        skip_without_spectral_kernels(backend)
    m_ref, shp = build(kind, shape_for=backend)
    m_ref = m_ref.to(device, dtype)
    x = make_input(shp, dtype, device, layout)
    check_module(twin(m_ref, backend), m_ref, x, dtype=dtype)


COMPILE_BACKENDS = ["reference", "cpu"]


@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("kind", ["TemporalFilter-T7", "STFM-T8"])
def test_module_compile_fullgraph(kind, backend):
    if backend == "cpu" and not fxkernels.backends()["cpu"]:
        pytest.skip("needs the compiled CPU kernels (fxkernels._C)")
    skip_without_spectral_kernels(backend)
    m, shp = build(kind, backend)
    torch._dynamo.reset()
    # a copy: the compiled module must accumulate its own parameter gradients
    compiled = torch.compile(twin(m, backend), fullgraph=True)
    check_module(compiled, m, make_input(shp, torch.float32, "cpu", "permuted"))


# ----------------------------------------------------------------------- independent re-implementations
INDEPENDENT_PARAMS = [pytest.param(d, "reference", id=f"{d}-reference") for d in DEVICES] + BACKEND_PARAMS


def temporal_filter_fft(m, z):
    """TemporalFilter as its docstring in fxkernels/nn/spectral.py describes it, with torch.fft (ortho) and the
    functional convs."""
    B, c, T, H, W = z.shape
    M = T // 2 + 1
    u = F.conv3d(z, m.conv.weight, m.conv.bias, padding=1)
    f = F.conv2d(u.reshape(B, c * T, H, W), m.filter_gen.weight, m.filter_gen.bias)
    f = f.reshape(B, c, M, 2, H, W)
    spec = torch.fft.rfft(u, dim=2, norm="ortho") * torch.complex(f[:, :, :, 0], f[:, :, :, 1])
    return torch.fft.irfft(spec, n=T, dim=2, norm="ortho") + z


def spatial_per_frame(m, z):
    """SpatialExtractor frame by frame (no batch folding)."""
    frames = []
    for t in range(z.shape[2]):
        f = z[:, :, t]
        ms = [
            F.conv2d(f, conv.weight, conv.bias, padding=k // 2)
            for conv, k in ((m.conv3, 3), (m.conv5, 5), (m.conv7, 7))
        ]
        frames.append(F.conv2d(torch.cat(ms, 1), m.fuse.weight, m.fuse.bias))
    return torch.stack(frames, dim=2)


def fwm_formula(m, y):
    """FWM from its formula, the two convolutions written as explicit sums over their taps."""
    B, d, T, H, W = y.shape
    s = F.pad(y.sum(dim=(3, 4)) / (H * W), (1, 1))  # mean over (H, W), zero-padded along T
    w1 = m.temporal_conv.weight  # (d, d, 3)
    a = sum(torch.einsum("oi,bit->bot", w1[:, :, k], s[:, :, k : k + T]) for k in range(3))
    wT = torch.sigmoid(a + m.temporal_conv.bias[:, None])  # (B, d, T)
    yt = wT[:, :, :, None, None] * y
    q = F.pad(yt.sum(dim=2), (1, 1, 1, 1))  # (B, d, H+2, W+2)
    w2 = m.spatial_conv.weight  # (d, d, 3, 3)
    b = sum(
        torch.einsum("oi,bihw->bohw", w2[:, :, i, j], q[:, :, i : i + H, j : j + W])
        for i in range(3)
        for j in range(3)
    )
    wS = torch.sigmoid(b + m.spatial_conv.bias[:, None, None])  # (B, d, H, W)
    return wS[:, :, None] * yt + y


def stfm_independent(m, z):
    c1, c2, _ = m.stfe.splits
    y = torch.cat(
        [
            temporal_filter_fft(m.stfe.temporal, z[:, :c1]),
            spatial_per_frame(m.stfe.spatial, z[:, c1 : c1 + c2]),
            z[:, c1 + c2 :],
        ],
        dim=1,
    )
    return fwm_formula(m.fwm, y)


def compare_with_function(m, fn, x, dtype):
    """m(x) vs fn(m, x): the output, dx and every parameter gradient under one random upstream gradient."""
    check_module(m, lambda x: fn(m, x), x, dtype=dtype)


@pytest.mark.parametrize("T", [pytest.param(t, id=f"T{t}") for t in (1, 7, 8, 15)])
@pytest.mark.parametrize("device,backend", INDEPENDENT_PARAMS)
def test_temporal_filter_matches_torch_fft(device, backend, T):
    skip_without_spectral_kernels(backend)
    m = fxkernels.TemporalFilter(3, T, backend=backend).to(device, torch.float64)
    x = make_input(shape(3, T, backend), torch.float64, device, "permuted")
    compare_with_function(m, temporal_filter_fft, x, torch.float64)


@pytest.mark.parametrize("norm", ["backward", "forward", None])
def test_temporal_filter_norm_does_not_change_the_result(norm):
    m = fxkernels.TemporalFilter(2, 6, norm=norm, backend="reference").double()
    compare_with_function(
        m, temporal_filter_fft, torch.randn(2, 2, 6, 3, 5, dtype=torch.float64), torch.float64
    )


def test_spatial_extractor_matches_per_frame_convs():
    m = fxkernels.SpatialExtractor(3).double()
    x = make_input((2, 3, 4, 7, 5), torch.float64, "cpu", "permuted")
    compare_with_function(m, spatial_per_frame, x, torch.float64)


@pytest.mark.parametrize("T", [pytest.param(t, id=f"T{t}") for t in (1, 6, 7)])
def test_fwm_matches_formula(T):
    m = fxkernels.FWM(5).double()
    x = make_input((2, 5, T, 5, 3), torch.float64, "cpu", "permuted")
    compare_with_function(m, fwm_formula, x, torch.float64)


@pytest.mark.parametrize("device,backend", INDEPENDENT_PARAMS)
def test_stfm_matches_independent_composition(device, backend):
    skip_without_spectral_kernels(backend)
    m = fxkernels.STFM(10, 7, backend=backend).to(device, torch.float64)
    x = make_input(shape(10, 7, backend), torch.float64, device)
    compare_with_function(m, stfm_independent, x, torch.float64)


# ------------------------------------------------------------------------------------ structure, errors
def test_stfe_splits_and_passthrough():
    m = fxkernels.STFE(10, 5, backend="reference")
    assert m.splits == (3, 3, 4)
    assert m.temporal.channels == 3 and m.spatial.channels == 3
    assert m.temporal.filter_gen.weight.shape == (3 * 3 * 2, 3 * 5, 1, 1)  # c*M*2 from c*T, M = 3
    x = torch.randn(2, 10, 5, 3, 3)
    y = m(x)
    assert torch.equal(y[:, 6:], x[:, 6:])
    assert_close(y[:, :3], m.temporal(x[:, :3]), torch.float32, "temporal third")
    assert_close(y[:, 3:6], m.spatial(x[:, 3:6]), torch.float32, "spatial third")


def test_backend_propagates_and_use_backend_routes():
    m = fxkernels.STFM(6, 4, backend="reference")
    assert {s.backend for s in m.modules() if hasattr(s, "backend")} == {"reference"}
    m_auto = twin(m, "auto")
    x = torch.randn(2, 6, 4, 3, 3)
    with fxkernels.use_backend("reference"):
        y_ref = m_auto(x)
    assert_close(m(x), y_ref, torch.float32, "use_backend('reference') vs backend='reference'")


@pytest.mark.parametrize(
    "make,x,match",
    [
        pytest.param(
            lambda: fxkernels.TemporalFilter(3, 8), torch.randn(2, 3, 8, 4), "5-D", id="TemporalFilter-rank"
        ),
        pytest.param(
            lambda: fxkernels.TemporalFilter(3, 8),
            torch.randn(2, 4, 8, 3, 3),
            "3 channels",
            id="TemporalFilter-channels",
        ),
        pytest.param(
            lambda: fxkernels.TemporalFilter(3, 8),
            torch.randn(2, 3, 7, 3, 3),
            "T=8 frames",
            id="TemporalFilter-T",
        ),
        pytest.param(
            lambda: fxkernels.SpatialExtractor(3), torch.randn(2, 3, 3, 3), "5-D", id="SpatialExtractor-rank"
        ),
        pytest.param(
            lambda: fxkernels.SpatialExtractor(3),
            torch.randn(2, 2, 4, 3, 3),
            "3 channels",
            id="SpatialExtractor-channels",
        ),
        pytest.param(
            lambda: fxkernels.STFE(9, 4), torch.randn(2, 10, 4, 3, 3), "9 channels", id="STFE-channels"
        ),
        pytest.param(lambda: fxkernels.STFE(9, 4), torch.randn(2, 9, 5, 3, 3), "T=4 frames", id="STFE-T"),
        pytest.param(lambda: fxkernels.FWM(6), torch.randn(2, 5, 4, 3, 3), "6 channels", id="FWM-channels"),
        pytest.param(lambda: fxkernels.FWM(6), torch.randn(6, 4, 3, 3), "5-D", id="FWM-rank"),
        pytest.param(lambda: fxkernels.STFM(6, 4), torch.randn(2, 6, 3, 3, 3), "T=4 frames", id="STFM-T"),
        pytest.param(lambda: fxkernels.STFM(6, 4), torch.randn(2, 6, 4, 3), "5-D", id="STFM-rank"),
    ],
)
def test_input_errors(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


def test_constructor_errors():
    with pytest.raises(ValueError, match="dim must be >= 3"):
        fxkernels.STFE(2, 4)
    with pytest.raises(ValueError, match="norm must be one of"):
        fxkernels.STFM(6, 4, norm="unitary")
    with pytest.raises(ValueError, match="T must be a positive int"):
        fxkernels.TemporalFilter(3, 0)
    with pytest.raises(ValueError, match="channels must be a positive int"):
        fxkernels.SpatialExtractor(0)

"""Spatial-correlation family (fxkernels/ops/corr/README.md): every kernel backend vs the reference, output and
both gradients."""

import pytest
import torch

import fxkernels
from fxkernels.ops.corr.reference import spatial_correlation_loop, spatial_correlation_ref
from fxkernels.testing import assert_close, assert_deterministic, backend_params, check_op, gradcheck
from tests.conftest import BACKEND_PARAMS

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]

# (B, C, H, W, patch, dilation, non-contiguous inputs)
SHAPES = [
    pytest.param(2, 3, 5, 7, 3, 1, False, id="C3-5x7-P3-d1"),
    pytest.param(2, 5, 6, 6, 1, 1, False, id="P1"),
    pytest.param(1, 4, 4, 5, 4, 1, False, id="even-P4"),
    pytest.param(1, 6, 9, 9, 21, 2, False, id="P21-d2-map-smaller-than-reach"),
    pytest.param(1, 3, 3, 2, 5, 2, False, id="tiny-3x2-P5-d2"),
    pytest.param(2, 7, 6, 5, 3, 2, True, id="P3-d2-noncontig"),
    pytest.param(1, 17, 8, 10, 7, 1, True, id="C17-8x10-P7-noncontig"),
]


def make(B, C, H, W, dtype, noncontig=False, device="cpu"):
    """(f1, f2), each (B, C, H, W); non-contiguous: channels-last storage and a strided slice of W."""

    def one():
        if noncontig:
            t = torch.randn(B, H, 2 * W, C, dtype=torch.float64).to(dtype=dtype, device=device)
            return t.permute(0, 3, 1, 2)[..., ::2]
        return torch.randn(B, C, H, W, dtype=torch.float64).to(dtype=dtype, device=device)

    return one(), one()


def corr(P, d, backend="auto"):
    return lambda f1, f2: fxkernels.spatial_correlation(f1, f2, P, d, backend=backend)


def corr_ref(P, d):
    return lambda f1, f2: spatial_correlation_ref(f1, f2, P, d)


def check(f1, f2, P, d, backend, via=None):
    """Output and both gradients of the op (or `via`) vs the float64 reference."""
    check_op(via or corr(P, d, backend), corr_ref(P, d), {"f1": f1, "f2": f2})


def test_reference_matches_loop_definition():
    for B, C, H, W, P, d in [
        (2, 3, 5, 7, 3, 1),
        (1, 4, 16, 16, 21, 2),
        (1, 3, 4, 4, 4, 1),
        (2, 2, 3, 4, 1, 1),
    ]:
        f1, f2 = make(B, C, H, W, torch.float64)
        assert_close(spatial_correlation_ref(f1, f2, P, d), spatial_correlation_loop(f1, f2, P, d))


def test_reference_hand_case():
    # one channel, 1x3 map, P=3, d=1: out[p,q,h,w] = f1[h,w] * f2[h+p-1, w+q-1]
    f1 = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3)
    f2 = torch.tensor([10.0, 20.0, 30.0]).view(1, 1, 1, 3)
    out = spatial_correlation_ref(f1, f2, 3, 1).view(3, 3, 3)
    assert out[1, 1].tolist() == [10.0, 40.0, 90.0]  # no displacement
    assert out[1, 2].tolist() == [20.0, 60.0, 0.0]  # right neighbour; zero past the edge
    assert out[1, 0].tolist() == [0.0, 20.0, 60.0]
    assert out[0].abs().sum() == 0 and out[2].abs().sum() == 0  # rows outside a 1-row map


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,H,W,P,d,noncontig", SHAPES)
def test_matches_reference(B, C, H, W, P, d, noncontig, dtype, device, backend):
    f1, f2 = make(B, C, H, W, dtype, noncontig, device)
    check(f1, f2, P, d, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_mol_shape_fp32(device, backend):
    # MOL's FlowNetC correlation, 16x16 maps, patch 21, dilation 2 (C and B reduced for the interpreter)
    C, B = (256, 2) if backend != "triton" else (32, 1)
    f1, f2 = make(B, C, 16, 16, torch.float32, device=device)
    check(f1, f2, 21, 2, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision(dtype, device, backend):
    f1, f2 = make(2, 12, 6, 7, dtype, device=device)
    check(f1, f2, 5, 1, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_gradcheck_fp64(device, backend):
    f1, f2 = make(1, 2, 4, 3, torch.float64, device=device)
    assert gradcheck(corr(3, 2, backend), {"f1": f1, "f2": f2}, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_registered_op_autograd_matches_reference(device, backend):
    # eager calls take a direct autograd.Function; this checks the registered op's autograd (torch.compile's path)
    f1, f2 = make(2, 3, 5, 6, torch.float64, device=device)
    check(
        f1,
        f2,
        3,
        2,
        backend,
        via=lambda f1, f2: torch.ops.fxkernels.spatial_correlation(f1, f2, 3, 2, backend),
    )


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_opcheck(device, backend):
    f1, f2 = make(2, 3, 5, 4, torch.float32, device=device)
    torch.library.opcheck(
        torch.ops.fxkernels.spatial_correlation.default,
        (f1.requires_grad_(True), f2.requires_grad_(True), 3, 1, backend),
    )


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_backward_is_deterministic(device, backend):
    f1, f2 = make(2, 8, 7, 9, torch.float32, device=device)
    assert_deterministic(corr(5, 2, backend), {"f1": f1, "f2": f2})


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_empty_batch_and_channels(device, backend):
    for B, C in [(0, 3), (2, 0)]:
        f1, f2 = make(B, C, 4, 5, torch.float32, device=device)
        y = fxkernels.spatial_correlation(f1, f2, 3, 1, backend=backend)
        assert y.shape == (B, 9, 4, 5) and (y == 0).all()


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_compile_fullgraph(backend):
    if backend == "cpu" and not fxkernels.backends()["cpu"]:
        pytest.skip("needs the compiled CPU kernels")
    layer = fxkernels.SpatialCorrelation(5, 2, normalize=True, negative_slope=0.1, backend=backend)
    f1, f2 = make(2, 4, 6, 7, torch.float32)
    compiled = torch.compile(layer, fullgraph=True, backend="eager" if backend == "reference" else "inductor")
    check_op(compiled, layer, {"f1": f1, "f2": f2}, ref_dtype=None)


def test_module_matches_mol_formula():
    f1, f2 = make(2, 6, 5, 5, torch.float64)
    layer = fxkernels.SpatialCorrelation(21, 2, normalize=True, negative_slope=0.1, backend="reference")
    want = torch.nn.functional.leaky_relu(spatial_correlation_loop(f1, f2, 21, 2) / 6, 0.1)
    assert_close(layer(f1, f2), want)


@pytest.mark.parametrize("device,backend", backend_params(reference=True))
def test_output_that_cannot_fit_is_a_value_error(device, backend):
    # patch_size 2^15 (reach check passes: patch_size**2 = 2^30) on an 8x8 map: a 256 GiB output, refused
    # before anything is allocated or launched, on every backend
    f1 = torch.randn(1, 1, 8, 8, device=device)
    msg = r"the output \(B, patch_size\*\*2, H, W\) = \(1, 1073741824, 8, 8\) would take 256.0 GiB, more than"
    with pytest.raises(ValueError, match=msg):
        fxkernels.spatial_correlation(f1, f1, 2**15, backend=backend)
    with pytest.raises(ValueError, match="must be at most 2\\^30"):
        fxkernels.spatial_correlation(f1, f1, 2**15 + 1, backend=backend)


def test_bad_input():
    f1, f2 = make(2, 3, 5, 5, torch.float32)
    corr = fxkernels.spatial_correlation
    with pytest.raises(ValueError, match="f1 must be 4-D"):
        corr(f1[0], f2[0])
    with pytest.raises(ValueError, match="f2 must have the shape of f1"):
        corr(f1, f2[:, :2])
    with pytest.raises(ValueError, match="dtype"):
        corr(f1, f2.double())
    with pytest.raises(ValueError, match="float32, float64"):
        corr(f1.long(), f2.long())
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        corr(f1, f2, 0)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        corr(f1, f2, 3, 0)
    with pytest.raises(TypeError, match="patch_size must be an int"):
        corr(f1, f2, 3.0)
    with pytest.raises(ValueError, match="backend"):
        corr(f1, f2, backend="gpu")

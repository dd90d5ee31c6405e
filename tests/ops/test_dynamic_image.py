"""Dynamic image (fxkernels/ops/dynamic_image/README.md): the coefficients, the reference vs a per-frame sum, and
every kernel backend vs the float64 reference, output and gradient."""

from fractions import Fraction
from functools import partial

import pytest
import torch

import fxkernels
from fxkernels.ops.dynamic_image.reference import dynamic_image_coefficients, dynamic_image_ref
from fxkernels.testing import assert_close, assert_deterministic, check_op, gradcheck
from tests.conftest import BACKEND_PARAMS

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


def rnd(shape, dtype=torch.float64, device="cpu", layout="contiguous"):
    """A tensor of `shape` (logical) in one of the layouts the op must accept:
    contiguous | permuted (channels-last-like storage: axis 1 innermost) | sliced (every other element of a
    wider tensor on the last axis) | expanded (a zero stride on axis 0)."""
    if layout == "permuted":
        t = torch.randn(shape[0], *shape[2:], shape[1], dtype=torch.float64).movedim(-1, 1)
    elif layout == "sliced":
        t = torch.randn(*shape[:-1], 2 * shape[-1], dtype=torch.float64)[..., ::2]
    elif layout == "expanded":
        t = torch.randn(1, *shape[1:], dtype=torch.float64).expand(shape)
    else:
        t = torch.randn(shape, dtype=torch.float64)
    return t.to(dtype=dtype, device=device)


# (shape, dim, layout): odd sizes, T in {1, 2, 7, 30}, every dim of a 4-D tensor, strided views
SHAPES = (
    [pytest.param((2, T, 3, 5, 7), 1, "contiguous", id=f"BTCHW-T{T}") for T in (1, 2, 7, 30)]
    + [pytest.param((2, 3, T, 5, 3), 2, "contiguous", id=f"BCTHW-T{T}") for T in (1, 7, 30)]
    + [pytest.param((3, 5, 4, 7), d, "contiguous", id=f"4d-dim{d}") for d in range(-4, 4)]
    + [
        pytest.param((2, 3, 7, 5, 3), 2, "permuted", id="BCTHW-T7-channels-last"),
        pytest.param((2, 7, 3, 5, 3), 1, "permuted", id="BTCHW-T7-permuted"),
        pytest.param((2, 3, 6, 5, 9), 2, "sliced", id="BCTHW-T6-sliced"),
        pytest.param((3, 5, 4, 7), -1, "sliced", id="4d-time-last-sliced"),
        pytest.param((3, 5, 4, 7), -1, "expanded", id="4d-time-last-expanded"),
        pytest.param((2, 7, 3, 5), 1, "expanded", id="4d-dim1-expanded"),
        pytest.param((9,), 0, "contiguous", id="1d"),
        pytest.param((1, 1, 1), 1, "contiguous", id="1x1x1"),
        pytest.param((2, 3, 1, 1, 5), 3, "contiguous", id="size1-time"),
        pytest.param((2, 3, 1200, 5), -1, "contiguous", id="long-rows"),
        pytest.param((2, 3, 16411), 1, "contiguous", id="rows-longer-than-a-chunk"),
    ]
)


def check(x, dim, backend, via=None, **kw):
    fn = via or partial(fxkernels.dynamic_image, dim=dim, backend=backend)
    return check_op(fn, partial(dynamic_image_ref, dim=dim), {"x": x}, **kw)


# -------------------------------------------------------------------------------------------- coefficients
def bilen(T: int) -> list:
    """alpha_t = sum_{j >= t} (2j - T - 1) / j, exactly (rationals)."""
    return [sum(Fraction(2 * j - T - 1, j) for j in range(t, T + 1)) for t in range(1, T + 1)]


def test_coefficients_known_values():
    a = dynamic_image_coefficients(30)
    assert a.dtype == torch.float64 and a.shape == (30,)
    assert round(a[0].item(), 3) == -63.845 and round(a[-1].item(), 3) == 0.967
    assert torch.equal(dynamic_image_coefficients(1), torch.zeros(1, dtype=torch.float64))
    assert dynamic_image_coefficients(2).tolist() == [-0.5, 0.5]
    assert dynamic_image_coefficients(0).shape == (0,)


@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 30, 64, 101])
def test_coefficients_match_bilen_form_and_sum_to_zero(T):
    a = dynamic_image_coefficients(T)
    want = torch.tensor([float(v) for v in bilen(T)], dtype=torch.float64)
    torch.testing.assert_close(a, want, rtol=1e-13, atol=1e-12 * T)
    assert abs(a.sum().item()) <= 1e-12 * T * T
    assert sum(bilen(T)) == 0


def test_coefficients_dtype_and_errors():
    a = dynamic_image_coefficients(30, torch.float32)
    assert a.dtype == torch.float32 and torch.equal(a, dynamic_image_coefficients(30).float())
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="T must be an int >= 0"):
            dynamic_image_coefficients(bad)


def test_reference_is_the_weighted_frame_sum():
    x = torch.randn(2, 3, 7, 4, 5, dtype=torch.float64)
    a = bilen(7)
    want = sum(float(a[t]) * x[:, :, t] for t in range(7))
    assert_close(dynamic_image_ref(x, 2), want)
    assert_close(dynamic_image_ref(x, -3), want)


# ------------------------------------------------------------------------------------------------ backends
@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim,layout", SHAPES)
def test_matches_reference(shape, dim, layout, dtype, device, backend):
    if backend == "triton" and layout != "contiguous" and dtype == torch.float64:
        pytest.skip("interpreter time: the strided layouts run in fp32 under Triton")
    check(rnd(shape, dtype, device, layout), dim, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision(dtype, device, backend):
    for shape, dim, layout in (((2, 3, 30, 5, 3), 2, "contiguous"), ((2, 7, 3, 5, 3), 1, "permuted")):
        check(rnd(shape, dtype, device, layout), dim, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_mtstwn_clip_fp32(device, backend):
    # MTSTWN's RGB clip layout (B, 3, T, H, W), dim=2, T = 30 (H, W reduced)
    H, W = (33, 31) if backend != "triton" else (9, 7)
    check(rnd((2, 3, 30, H, W), torch.float32, device), 2, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_interleaved_strides_beyond_four_axes(device, backend):
    # six axes whose strides merge into no fewer than five (every other axis transposed): the Triton launcher
    # copies to a contiguous layout first, the C++ kernel walks the strides
    x = torch.randn(2, 3, 2, 3, 2, 3, 5, dtype=torch.float64).permute(1, 0, 3, 2, 5, 4, 6)
    check(x.to(device), 6, backend)
    check(x.to(device), 3, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_gradcheck_fp64(device, backend):
    for shape, dim, layout in (((2, 5, 3, 4), 1, "contiguous"), ((2, 3, 4, 3), -1, "permuted")):
        x = rnd(shape, torch.float64, device, layout)
        assert gradcheck(partial(fxkernels.dynamic_image, dim=dim, backend=backend), {"x": x})


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_registered_op_autograd_matches_reference(device, backend):
    # eager calls take a direct autograd.Function; this checks the registered op's autograd (torch.compile's path)
    x = rnd((2, 3, 7, 3, 5), torch.float64, device, "permuted")
    check(x, 2, backend, via=lambda x: torch.ops.fxkernels.dynamic_image(x, 2, backend))


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_opcheck(device, backend):
    for shape, dim, layout in (((2, 6, 3, 5), 1, "contiguous"), ((2, 3, 5, 4), 3, "permuted")):
        x = rnd(shape, torch.float32, device, layout).requires_grad_(True)
        torch.library.opcheck(torch.ops.fxkernels.dynamic_image.default, (x, dim, backend))
    dy = torch.randn(2, 3, 5, device=device)
    torch.library.opcheck(torch.ops.fxkernels.dynamic_image_backward.default, (dy, 1, 6, backend))


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_backward_is_deterministic(device, backend):
    x = rnd((2, 3, 30, 7, 9), torch.float32, device)
    assert_deterministic(partial(fxkernels.dynamic_image, dim=2, backend=backend), {"x": x})


@pytest.mark.parametrize(
    "device,backend", BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
)
@pytest.mark.parametrize(
    "shape,dim",
    [
        pytest.param((0, 7, 3, 4), 1, id="empty-batch"),
        pytest.param((2, 7, 0, 4), 1, id="empty-channels"),
        pytest.param((2, 0, 3, 4), 1, id="T0"),
        pytest.param((0,), 0, id="1d-T0"),
    ],
)
def test_empty(shape, dim, device, backend):
    x = torch.randn(shape, device=device, requires_grad=True)
    y = fxkernels.dynamic_image(x, dim, backend=backend)
    want = [n for a, n in enumerate(shape) if a != dim]
    assert list(y.shape) == want
    if x.shape[dim] == 0:  # an empty sum: zeros, not the NaN the poisoned allocator hands out
        assert torch.equal(y, torch.zeros(want, device=device))
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_nonfinite_propagates_like_the_reference(device, backend):
    x = torch.randn(2, 7, 3, 4, dtype=torch.float64)
    x[0, 2, 1, 1], x[1, 5, 0, 2], x[1, 0, 2, 3] = float("nan"), float("inf"), float("-inf")
    for T1 in (False, True):  # T = 1: alpha = 0, so 0 * Inf = NaN where the reference has it too
        xt = x[:, :1] if T1 else x
        check(xt.float().to(device), 1, backend)


def test_meta_tensors():
    x = torch.empty(2, 3, 30, 5, 7, device="meta", requires_grad=True)
    y = fxkernels.dynamic_image(x, dim=2)
    assert y.device.type == "meta" and y.shape == (2, 3, 5, 7)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_compile_fullgraph(backend):
    if backend == "cpu" and not fxkernels.backends()["cpu"]:
        pytest.skip("needs the compiled CPU kernels")
    x = rnd((2, 3, 7, 5, 4), torch.float32, "cpu", "permuted")

    def fn(x):
        return torch.nn.functional.gelu(fxkernels.dynamic_image(x, dim=2, backend=backend))

    torch._dynamo.reset()
    check_op(torch.compile(fn, fullgraph=True), fn, {"x": x}, ref_dtype=None)


def test_auto_picks_the_cpu_kernel():
    from fxkernels.ops.dynamic_image.dynamic_image import KERNELS, dynamic_image_op

    assert "cuda" not in KERNELS
    want = "cpu" if fxkernels.backends()["cpu"] else "reference"
    assert dynamic_image_op.resolve("auto", torch.device("cpu")) == want
    with fxkernels.use_backend("reference"):
        assert dynamic_image_op.resolve("auto", torch.device("cpu")) == "reference"
    if torch.cuda.is_available():
        assert dynamic_image_op.resolve("auto", torch.device("cuda")) == "triton"


def test_bad_input():
    di = fxkernels.dynamic_image
    x = torch.randn(2, 7, 3, 4)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        di(torch.tensor(1.0))
    with pytest.raises(ValueError, match="float32, float64"):
        di(x.long())
    with pytest.raises(ValueError, match=r"dim must name an axis of the 4-D x .* in \[-4, 3\], got 4"):
        di(x, dim=4)
    with pytest.raises(ValueError, match=r"in \[-4, 3\], got -5"):
        di(x, dim=-5)
    with pytest.raises(TypeError, match="dim must be an int"):
        di(x, dim=1.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        di([1.0, 2.0])
    with pytest.raises(ValueError, match="backend"):
        di(x, backend="gpu")
    with pytest.raises(RuntimeError, match="'cuda' is not available"):
        di(x, backend="cuda")  # no hand-written CUDA kernel: CUDA tensors go to Triton

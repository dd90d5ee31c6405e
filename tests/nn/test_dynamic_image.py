"""DynamicImage module (fxkernels/nn/dynamic_image.py): every backend vs its reference-backend twin and vs the
weighted frame sum, torch.compile, errors."""

import pytest
import torch

import fxkernels
from fxkernels.ops.dynamic_image.reference import dynamic_image_coefficients
from fxkernels.testing import assert_close, check_module, twin
from tests.conftest import BACKEND_PARAMS

# (input shape, dim, layout); MTSTWN feeds its RGB clip (B, 3, T, H, W) with dim=2
CASES = [
    pytest.param((2, 3, 30, 7, 5), 2, "contiguous", id="mtstwn-clip-T30"),
    pytest.param((2, 3, 7, 7, 5), 2, "channels-last", id="clip-T7-channels-last"),
    pytest.param((2, 7, 3, 5, 3), 1, "contiguous", id="BTCHW-T7"),
    pytest.param((2, 1, 3, 5, 3), 1, "contiguous", id="BTCHW-T1"),
    pytest.param((3, 5, 6), -1, "contiguous", id="time-last"),
]


def make_input(shape, dtype, device, layout):
    if layout == "channels-last":  # (B, C, T, H, W) with C innermost in memory
        return torch.randn(shape[0], *shape[2:], shape[1], dtype=dtype, device=device).movedim(-1, 1)
    return torch.randn(shape, dtype=dtype, device=device)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float64, id="fp64"), pytest.param(torch.float32, id="fp32")]
)
@pytest.mark.parametrize("shape,dim,layout", CASES)
def test_module_matches_reference_backend(shape, dim, layout, dtype, device, backend):
    m_ref = fxkernels.DynamicImage(dim=dim, backend="reference")
    check_module(twin(m_ref, backend), m_ref, make_input(shape, dtype, device, layout), dtype=dtype)


@pytest.mark.parametrize(
    "device,backend", BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
)
def test_module_is_the_weighted_frame_sum(device, backend):
    m = fxkernels.DynamicImage(dim=2, backend=backend)
    x = make_input((2, 3, 30, 5, 4), torch.float64, device, "contiguous")
    a = dynamic_image_coefficients(30)

    def frame_sum(x):
        return sum(a[t].item() * x[:, :, t] for t in range(30))

    check_module(m, frame_sum, x, dtype=torch.float64)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
)
def test_module_half_precision(dtype, device, backend):
    m_ref = fxkernels.DynamicImage(dim=2, backend="reference")
    check_module(twin(m_ref, backend), m_ref, make_input((2, 3, 30, 5, 3), dtype, device, "contiguous"))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_module_compile_fullgraph(backend):
    if backend == "cpu" and not fxkernels.backends()["cpu"]:
        pytest.skip("needs the compiled CPU kernels (fxkernels._C)")
    m = torch.nn.Sequential(fxkernels.DynamicImage(dim=2, backend=backend), torch.nn.Conv2d(3, 4, 3))
    torch._dynamo.reset()
    compiled = torch.compile(twin(m, backend), fullgraph=True)
    check_module(compiled, m, make_input((2, 3, 7, 6, 5), torch.float32, "cpu", "channels-last"))


def test_default_dim_and_repr():
    m = fxkernels.DynamicImage()
    assert m.dim == 1 and m.backend == "auto" and not list(m.parameters())
    assert repr(m) == "DynamicImage(dim=1, backend='auto')"
    x = torch.randn(2, 6, 3, 4, 4)
    assert m(x).shape == (2, 3, 4, 4)
    with fxkernels.use_backend("reference"):
        y_ref = m(x)
    assert_close(
        fxkernels.DynamicImage(backend="cpu" if fxkernels.backends()["cpu"] else "reference")(x), y_ref
    )


def test_errors():
    with pytest.raises(TypeError, match="dim must be an int"):
        fxkernels.DynamicImage(dim=2.0)
    with pytest.raises(ValueError, match="dim must name an axis of the 4-D x"):
        fxkernels.DynamicImage(dim=4)(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        fxkernels.DynamicImage(dim=0)(torch.tensor(2.0))
    with pytest.raises(ValueError, match="float32, float64"):
        fxkernels.DynamicImage(dim=1)(torch.ones(2, 3, dtype=torch.int64))

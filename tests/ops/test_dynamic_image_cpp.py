"""The dynamic-image C++ ops (csrc/dynamic_image/) called directly: both ISA builds, thread-count independence,
the coefficients bit for bit, the row walks (long rows, ragged tails, the Q = 1 backward) and the TORCH_CHECKs."""

import pytest
import torch

import fxkernels
from fxkernels.ops.dynamic_image.reference import dynamic_image_coefficients, dynamic_image_ref
from fxkernels.testing import assert_close

pytestmark = pytest.mark.skipif(
    not fxkernels._ext.has_kernel("dynamic_image_fwd", "cpu"), reason="needs the compiled CPU kernels"
)
ops = torch.ops.fxkernels


def isas():
    return list(fxkernels._ext.build_info()["cpu_isa_usable"])


def ref_bwd(dy, dim, T):
    return dynamic_image_coefficients(T, dy.dtype).view([T] + [1] * (dy.dim() - dim)) * dy.unsqueeze(dim)


CASES = [
    pytest.param((2, 3, 30, 5, 7), 2, id="BCTHW"),
    pytest.param((2, 3, 16500), 1, id="rows-longer-than-a-chunk"),  # chunks of 16384, a ragged tail
    pytest.param((5, 1029), 0, id="time-first"),
    pytest.param((1029, 5), 1, id="time-last"),  # forward reads x with time stride 1, backward Q = 1
    pytest.param((3, 4, 5), 2, id="time-last-3d"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,dim", CASES)
def test_every_isa_matches_reference(shape, dim, dtype):
    T = shape[dim]
    x = (torch.randn(shape, dtype=torch.float64) / T).to(
        dtype
    )  # |alpha_1| ~ T log T: fp16 range for T = 2500
    y_shape = [n for a, n in enumerate(shape) if a != dim]
    dy = torch.randn(y_shape, dtype=torch.float64).to(dtype)
    C = fxkernels._ext._C
    for isa in isas():
        prev = C._set_cpu_isa(isa)
        try:
            y, dx = ops.dynamic_image_fwd(x, dim), ops.dynamic_image_bwd(dy, dim, T)
        finally:
            C._set_cpu_isa(prev)
        assert y.is_contiguous() and dx.is_contiguous() and y.dtype == dx.dtype == dtype
        assert_close(y, dynamic_image_ref(x.double(), dim), dtype, f"y {isa}")
        assert_close(dx, ref_bwd(dy.double(), dim, T), dtype, f"dx {isa}")


def test_strided_rows_and_strided_dy():
    base = torch.randn(4, 9, 2100, dtype=torch.float64)
    x = base[:, :, ::2].transpose(0, 1)  # (9, 4, 1050), time at 0, rows with stride 2
    assert_close(ops.dynamic_image_fwd(x, 0), dynamic_image_ref(x, 0))
    dy = torch.randn(1050, 4, dtype=torch.float64).t()  # (4, 1050) transposed
    assert_close(ops.dynamic_image_bwd(dy, 1, 6), ref_bwd(dy, 1, 6))
    dy0 = torch.randn(1, dtype=torch.float64).expand(4, 1050)  # the zero strides of y.sum().backward()
    assert_close(ops.dynamic_image_bwd(dy0, 1, 6), ref_bwd(dy0, 1, 6))


@pytest.mark.parametrize("T", [1, 2, 7, 30, 64])
def test_coefficients_are_bitwise_the_python_ones(T):
    # a one-hot clip: y_j = alpha_j * 1 plus exact zeros
    for dtype in (torch.float64, torch.float32):
        eye = torch.eye(T, dtype=dtype)
        assert torch.equal(ops.dynamic_image_fwd(eye, 0), dynamic_image_coefficients(T, dtype))
        dx = ops.dynamic_image_bwd(torch.ones(1, dtype=dtype), 0, T)
        assert torch.equal(dx[:, 0], dynamic_image_coefficients(T, dtype))


def test_results_do_not_depend_on_the_thread_count():
    x = torch.randn(3, 30, 2, 9000)
    dy = torch.randn(3, 2, 9000)
    prev = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append((ops.dynamic_image_fwd(x, 1), ops.dynamic_image_bwd(dy, 1, 30)))
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_t0_and_empty():
    assert torch.equal(ops.dynamic_image_fwd(torch.randn(3, 0, 4), 1), torch.zeros(3, 4))
    assert ops.dynamic_image_fwd(torch.randn(0, 5, 4), 1).shape == (0, 4)
    assert ops.dynamic_image_bwd(torch.randn(3, 4), 1, 0).shape == (3, 0, 4)
    assert ops.dynamic_image_bwd(torch.randn(0, 4), 1, 5).shape == (0, 5, 4)


def test_checks():
    x = torch.randn(2, 5, 3)
    with pytest.raises(RuntimeError, match=r"dynamic_image_fwd: dim must name an axis of the 3-D x .* got 3"):
        ops.dynamic_image_fwd(x, 3)
    with pytest.raises(RuntimeError, match="dim must name an axis"):
        ops.dynamic_image_fwd(
            x, -1
        )  # the op takes the canonical dim; the public function wraps negative ones
    with pytest.raises(RuntimeError, match="at least 1 dimension"):
        ops.dynamic_image_fwd(torch.tensor(1.0), 0)
    with pytest.raises(RuntimeError, match="x must be float32, float64, float16 or bfloat16, got Long"):
        ops.dynamic_image_fwd(x.long(), 1)
    with pytest.raises(RuntimeError, match=r"dynamic_image_bwd: dim must be in \[0, dy.dim\(\)\]"):
        ops.dynamic_image_bwd(x, 4, 5)
    with pytest.raises(RuntimeError, match="T .* must be >= 0, got -1"):
        ops.dynamic_image_bwd(x, 1, -1)
    with pytest.raises(RuntimeError, match="dy must be float32"):
        ops.dynamic_image_bwd(x.int(), 1, 2)

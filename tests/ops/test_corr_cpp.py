"""Spatial correlation (fxkernels/ops/corr/README.md): the C++ CPU ops torch.ops.fxkernels.corr_fwd /
corr_bwd called directly.

Values and both gradients vs spatial_correlation_ref (autograd through the reference in float64, or float32 for
the half types), argument checks (TORCH_CHECK -> RuntimeError), determinism.
"""

import pytest
import torch

import fxkernels
from fxkernels.ops.corr.reference import spatial_correlation_ref
from fxkernels.testing import assert_close
from tests.conftest import AVAILABLE


def _have_ops():
    if not AVAILABLE["cpu"]:
        return False
    try:
        torch.ops.fxkernels.corr_fwd  # noqa: B018
        torch.ops.fxkernels.corr_bwd  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _have_ops(), reason="needs the compiled CPU kernels with corr_fwd/corr_bwd"
)

ops = torch.ops.fxkernels

# (B, C, H, W, patch, dilation)
SHAPES = [
    pytest.param(2, 3, 5, 7, 3, 1, id="B2-C3-5x7-P3-d1"),
    pytest.param(1, 4, 16, 16, 21, 2, id="C4-16x16-P21-d2"),
    pytest.param(2, 27, 6, 9, 5, 2, id="C27-6x9-P5-d2"),  # vector + tail paths over C
    pytest.param(1, 8, 5, 23, 7, 1, id="C8-5x23-P7-d1"),  # band narrower than the row
    pytest.param(2, 5, 3, 4, 9, 3, id="C5-3x4-P9-d3-map-smaller-than-reach"),
    pytest.param(1, 4, 3, 2, 3, 5, id="C4-3x2-P3-d5-dilation-beyond-map"),
    pytest.param(2, 6, 4, 5, 1, 1, id="P1"),
    pytest.param(2, 5, 6, 7, 4, 1, id="P4-even"),
    pytest.param(1, 9, 8, 9, 4, 2, id="P4-even-d2"),
    pytest.param(1, 17, 1, 1, 3, 1, id="1x1"),
]


def _reference(f1, f2, dout, patch, dilation, dtype):
    """(out, df1, df2) of the reference in `dtype` (float64, or float32 for the half types)."""
    a = f1.detach().to(dtype).requires_grad_(True)
    b = f2.detach().to(dtype).requires_grad_(True)
    out = spatial_correlation_ref(a, b, patch, dilation)
    df1, df2 = torch.autograd.grad(out, (a, b), dout.detach().to(dtype), allow_unused=True)
    df1 = torch.zeros_like(a) if df1 is None else df1
    df2 = torch.zeros_like(b) if df2 is None else df2
    return out.detach(), df1, df2


def _inputs(B, C, H, W, patch, dtype, noncontig=False):
    PP = patch * patch
    if noncontig:  # a permuted view, a strided slice, a transposed gradient
        f1 = torch.randn(B, H, W, C, dtype=torch.float64).to(dtype).permute(0, 3, 1, 2)
        f2 = torch.randn(B, 2 * C, H, W + 3, dtype=torch.float64).to(dtype)[:, ::2, :, 1 : W + 1]
        dout = torch.randn(B, W, H, PP, dtype=torch.float64).to(dtype).permute(0, 3, 2, 1)
        assert not (f1.is_contiguous() or f2.is_contiguous() or dout.is_contiguous())
    else:
        f1 = torch.randn(B, C, H, W, dtype=torch.float64).to(dtype)
        f2 = torch.randn(B, C, H, W, dtype=torch.float64).to(dtype)
        dout = torch.randn(B, PP, H, W, dtype=torch.float64).to(dtype)
    return f1, f2, dout


def _check(B, C, H, W, patch, dilation, dtype, noncontig=False):
    f1, f2, dout = _inputs(B, C, H, W, patch, dtype, noncontig)
    ref_dtype = torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32
    r_out, r_df1, r_df2 = _reference(f1, f2, dout, patch, dilation, ref_dtype)
    out = ops.corr_fwd(f1, f2, patch, dilation)
    df1, df2 = ops.corr_bwd(dout, f1, f2, patch, dilation)
    for name, t, shape in (
        ("out", out, (B, patch * patch, H, W)),
        ("df1", df1, (B, C, H, W)),
        ("df2", df2, (B, C, H, W)),
    ):
        assert t.dtype == dtype, f"{name}: dtype {t.dtype}"
        assert tuple(t.shape) == shape, f"{name}: shape {tuple(t.shape)}"
        assert t.is_contiguous(), f"{name} is not contiguous"
    assert_close(out, r_out, dtype, "out")
    assert_close(df1, r_df1, dtype, "df1")
    assert_close(df2, r_df2, dtype, "df2")
    return out


@pytest.fixture(params=["auto", "generic", "avx512"])
def cpu_isa(request):
    """Run the test with the selected CPU kernel variant ("auto" = AVX2 where available), the baseline, and
    the avx512 slot (which holds this family's AVX2 kernels), where the CPU runs it."""
    if request.param not in ("auto", *fxkernels._ext._INFO.get("cpu_isa_usable", [])):
        pytest.skip(f"this CPU does not run the {request.param} kernels")
    C = fxkernels._ext._C
    prev = C._set_cpu_isa(request.param)
    yield request.param
    C._set_cpu_isa(prev)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("B,C,H,W,patch,dilation", SHAPES)
def test_values(B, C, H, W, patch, dilation, dtype, cpu_isa):
    _check(B, C, H, W, patch, dilation, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_noncontiguous(dtype, cpu_isa):
    _check(2, 11, 7, 6, 5, 1, dtype, noncontig=True)
    _check(1, 16, 9, 10, 7, 2, dtype, noncontig=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "B,C,H,W,patch,dilation,noncontig",
    [(2, 3, 5, 7, 3, 1, False), (1, 24, 16, 16, 21, 2, False), (2, 9, 6, 5, 4, 1, True)],
)
def test_half_types(B, C, H, W, patch, dilation, noncontig, dtype):
    _check(B, C, H, W, patch, dilation, dtype, noncontig)


def test_zeros_outside_map():
    f1 = torch.randn(1, 4, 3, 5)
    f2 = torch.randn(1, 4, 3, 5)
    out = ops.corr_fwd(f1, f2, 21, 2).view(1, 21, 21, 3, 5)
    # rows reach at most 2 positions: |o(p)| = |p - 10| * 2 <= 2 -> p in [9, 11], likewise q in [8, 12]
    inside = torch.zeros(21, 21, dtype=torch.bool)
    inside[9:12, 8:13] = True
    assert (out[:, ~inside] == 0).all()
    center = (f1 * f2).sum(1)
    assert_close(out[0, 10, 10], center[0], torch.float32, "center displacement")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_empty(dtype):
    for B, C in ((0, 4), (2, 0), (0, 0)):
        f1 = torch.randn(B, C, 5, 6, dtype=dtype)
        f2 = torch.randn(B, C, 5, 6, dtype=dtype)
        out = ops.corr_fwd(f1, f2, 3, 2)
        assert out.shape == (B, 9, 5, 6) and out.dtype == dtype
        assert (out == 0).all()
        df1, df2 = ops.corr_bwd(torch.randn(B, 9, 5, 6, dtype=dtype), f1, f2, 3, 2)
        assert df1.shape == (B, C, 5, 6) and df2.shape == (B, C, 5, 6)
        assert df1.dtype == dtype and df2.dtype == dtype


def test_deterministic():
    f1, f2, dout = _inputs(3, 37, 12, 11, 7, torch.float32)
    out = ops.corr_fwd(f1, f2, 7, 2)
    df1, df2 = ops.corr_bwd(dout, f1, f2, 7, 2)
    nthreads = torch.get_num_threads()
    try:
        for threads in (1, nthreads, 2):
            torch.set_num_threads(threads)
            for _ in range(2):
                assert torch.equal(ops.corr_fwd(f1, f2, 7, 2), out)
                a, b = ops.corr_bwd(dout, f1, f2, 7, 2)
                assert torch.equal(a, df1) and torch.equal(b, df2)
    finally:
        torch.set_num_threads(nthreads)


def test_checks():
    f1 = torch.randn(2, 3, 5, 6)
    f2 = torch.randn(2, 3, 5, 6)
    dout = torch.randn(2, 9, 5, 6)
    with pytest.raises(RuntimeError, match=r"fxkernels.corr_fwd: f1 must be 4-D \(B, C, H, W\), got 3-D"):
        ops.corr_fwd(f1[0], f2, 3, 1)
    with pytest.raises(
        RuntimeError, match=r"f2 must have shape \(B, C, H, W\) = \(2, 3, 5, 6\), got \(2, 3, 5, 7\)"
    ):
        ops.corr_fwd(f1, torch.randn(2, 3, 5, 7), 3, 1)
    with pytest.raises(RuntimeError, match="f2 must have shape"):
        ops.corr_fwd(f1, f2[0], 3, 1)
    with pytest.raises(RuntimeError, match=r"f2 must have the same dtype as f1 \(Float\), got Double"):
        ops.corr_fwd(f1, f2.double(), 3, 1)
    with pytest.raises(RuntimeError, match="f1 must be float32, float64, float16 or bfloat16, got Int"):
        ops.corr_fwd(f1.int(), f2.int(), 3, 1)
    with pytest.raises(RuntimeError, match="f1 must be float32, float64, float16 or bfloat16, got Long"):
        ops.corr_bwd(dout.long(), f1.long(), f2.long(), 3, 1)
    with pytest.raises(RuntimeError, match="fxkernels.corr_fwd: patch must be >= 1, got 0"):
        ops.corr_fwd(f1, f2, 0, 1)
    with pytest.raises(RuntimeError, match="fxkernels.corr_fwd: dilation must be >= 1, got 0"):
        ops.corr_fwd(f1, f2, 3, 0)
    with pytest.raises(RuntimeError, match="fxkernels.corr_bwd: patch must be >= 1, got -1"):
        ops.corr_bwd(dout, f1, f2, -1, 1)
    with pytest.raises(RuntimeError, match="fxkernels.corr_bwd: dilation must be >= 1, got -2"):
        ops.corr_bwd(dout, f1, f2, 3, -2)
    with pytest.raises(
        RuntimeError,
        match=r"dout must have shape \(B, patch \* patch, H, W\) = \(2, 9, 5, 6\), got \(2, 16, 5, 6\)",
    ):
        ops.corr_bwd(torch.randn(2, 16, 5, 6), f1, f2, 3, 1)
    with pytest.raises(RuntimeError, match="dout must have the same dtype as f1"):
        ops.corr_bwd(dout.double(), f1, f2, 3, 1)
    with pytest.raises(RuntimeError, match="fxkernels.corr_bwd: f2 must have shape"):
        ops.corr_bwd(dout, f1, f2[:, :2], 3, 1)
    with pytest.raises(RuntimeError, match="patch \\* dilation must be at most 2\\^30"):
        ops.corr_fwd(f1, f2, 3, 2**30)

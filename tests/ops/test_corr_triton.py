"""Spatial correlation (fxkernels/ops/corr/README.md): the Triton launchers vs spatial_correlation_ref, outputs and both gradients.

Runs the kernels on CPU tensors under TRITON_INTERPRET=1 (set by conftest when there is no GPU) or on CUDA.
"""

import os
from functools import partial

import pytest
import torch

from fxkernels.ops.corr.reference import spatial_correlation_ref
from fxkernels.testing import Run, assert_runs_close, run_with_grads
from tests.conftest import AVAILABLE

if not AVAILABLE["triton"]:
    pytest.skip("triton is not available", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

from fxkernels.ops.corr.triton import (  # noqa: E402
    MAX_PATCH,
    spatial_correlation_bwd_triton,
    spatial_correlation_fwd_triton,
)

# (B, C, H, W, patch, dilation, non-contiguous inputs)
SHAPES = [
    pytest.param(2, 3, 5, 7, 3, 1, False, id="2x3x5x7-P3-d1"),
    pytest.param(1, 4, 9, 9, 21, 2, False, id="1x4x9x9-P21-d2-reach>map"),
    pytest.param(2, 3, 4, 6, 1, 1, False, id="P1"),
    pytest.param(2, 3, 6, 5, 4, 2, False, id="P4-even-d2"),
    pytest.param(1, 37, 5, 4, 5, 1, False, id="C37-P5-cblocks"),
    pytest.param(2, 3, 6, 7, 5, 1, True, id="noncontig-P5"),
    pytest.param(1, 2, 3, 19, 3, 3, False, id="W19-two-wtiles"),
    pytest.param(0, 3, 5, 5, 3, 1, False, id="B0"),
]
DTYPES = [pytest.param(torch.float64, id="fp64"), pytest.param(torch.float32, id="fp32")]
HALF_DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


def make_inputs(B, C, H, W, P, dtype, noncontig=False):
    def r(*shape, perm=None):
        t = torch.randn(*shape, dtype=torch.float64).to(dtype=dtype, device=DEVICE)
        return t.permute(*perm) if perm is not None else t

    if noncontig:  # channels-last / transposed views: no unit stride along W
        f1 = r(B, H, W, C, perm=(0, 3, 1, 2))
        f2 = r(B, C, W, H, perm=(0, 1, 3, 2))
        dout = r(B, H, W, P * P, perm=(0, 3, 1, 2))
        assert not (f1.is_contiguous() or f2.is_contiguous() or dout.is_contiguous())
    else:
        f1, f2, dout = r(B, C, H, W), r(B, C, H, W), r(B, P * P, H, W)
    return f1, f2, dout


def check(f1, f2, dout, P, d, dtype):
    """The launchers' output and gradients under `dout` vs the float64 reference's autograd."""
    out = spatial_correlation_fwd_triton(f1, f2, P, d)
    df1, df2 = spatial_correlation_bwd_triton(dout, f1, f2, P, d)
    for name, t in (("out", out), ("df1", df1), ("df2", df2)):
        assert t.dtype == f1.dtype and t.is_contiguous(), name
    ref = partial(spatial_correlation_ref, patch_size=P, dilation=d)
    want = run_with_grads(ref, {"f1": f1.double(), "f2": f2.double()}, dout.double())
    assert_runs_close(Run((out,), {"f1": df1, "f2": df2}), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,H,W,P,d,noncontig", SHAPES)
def test_fwd_bwd(B, C, H, W, P, d, noncontig, dtype):
    f1, f2, dout = make_inputs(B, C, H, W, P, dtype, noncontig)
    check(f1, f2, dout, P, d, dtype)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize(
    "B,C,H,W,P,d",
    [pytest.param(1, 4, 9, 9, 21, 2, id="P21-d2"), pytest.param(2, 5, 4, 6, 4, 1, id="P4-even")],
)
def test_half(B, C, H, W, P, d, dtype):
    """fp16 / bf16 inputs (fp32 accumulation, one rounding) vs the float64 reference on the same values."""
    f1, f2, dout = make_inputs(B, C, H, W, P, dtype)
    check(f1, f2, dout, P, d, dtype)


def test_zero_outside_and_nonfinite_dout_outside():
    """Displacements leaving the map give exactly 0, and an inf dout there contributes nothing."""
    B, C, H, W, P, d = 1, 3, 4, 5, 5, 2
    f1, f2, dout = make_inputs(B, C, H, W, P, torch.float64)
    inside = spatial_correlation_ref(torch.ones_like(f1), torch.ones_like(f2), P, d) != 0
    out = spatial_correlation_fwd_triton(f1, f2, P, d)
    assert (out[~inside] == 0).all()
    df1, df2 = spatial_correlation_bwd_triton(dout, f1, f2, P, d)
    dout_inf = dout.masked_fill(~inside, float("inf"))
    g1, g2 = spatial_correlation_bwd_triton(dout_inf, f1, f2, P, d)
    assert torch.equal(g1, df1) and torch.equal(g2, df2)


def test_empty_channels():
    f1 = torch.randn(2, 0, 3, 4, device=DEVICE)
    out = spatial_correlation_fwd_triton(f1, f1.clone(), 3, 1)
    assert out.shape == (2, 9, 3, 4) and (out == 0).all()
    df1, df2 = spatial_correlation_bwd_triton(torch.randn(2, 9, 3, 4, device=DEVICE), f1, f1.clone(), 3, 1)
    assert df1.shape == df2.shape == (2, 0, 3, 4)


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
)
def test_deterministic(dtype):
    """Repeated calls are bitwise identical (fixed summation order, no atomics)."""
    f1, f2, dout = make_inputs(1, 5, 4, 5, 3, dtype)
    out = spatial_correlation_fwd_triton(f1, f2, 3, 1)
    df1, df2 = spatial_correlation_bwd_triton(dout, f1, f2, 3, 1)
    assert torch.equal(spatial_correlation_fwd_triton(f1, f2, 3, 1), out)
    g1, g2 = spatial_correlation_bwd_triton(dout, f1, f2, 3, 1)
    assert torch.equal(g1, df1) and torch.equal(g2, df2)


def test_bad_arguments():
    f = torch.randn(1, 2, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match="not supported"):
        spatial_correlation_fwd_triton(f, f, MAX_PATCH + 1, 1)
    with pytest.raises(ValueError, match="not supported"):
        spatial_correlation_bwd_triton(torch.zeros(1, 65 * 65, 3, 3, device=DEVICE), f, f, MAX_PATCH + 1, 1)
    for patch, dil in ((0, 1), (3, 0)):
        with pytest.raises(ValueError):
            spatial_correlation_fwd_triton(f, f, patch, dil)
    with pytest.raises(ValueError, match="f2"):
        spatial_correlation_fwd_triton(f, f.double(), 3, 1)
    with pytest.raises(ValueError, match="dout"):
        spatial_correlation_bwd_triton(torch.zeros(1, 8, 3, 3, device=DEVICE), f, f, 3, 1)

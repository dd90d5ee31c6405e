"""Spectral filter (fxkernels/ops/spectral/README.md): the Triton launchers vs spectral_filter_ref (torch.fft), output and both gradients.

Runs the kernels on CPU tensors under TRITON_INTERPRET=1 (set by conftest when there is no GPU) or on CUDA.
The per-column filter gradient of the launchers is compared with the autograd gradient of the reference for the
filter materialised at full size (B, C, M, H, W, 2), in float64.
"""

import os

import pytest
import torch

from fxkernels.ops.spectral.reference import spectral_filter_ref
from fxkernels.testing import assert_close, run_with_grads
from tests.conftest import AVAILABLE

if not AVAILABLE["triton"]:
    pytest.skip("triton is not available", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

from fxkernels._triton_utils import record_launches  # noqa: E402
from fxkernels.ops.spectral.triton import (  # noqa: E402
    MAX_T,
    spectral_filter_bwd_triton,
    spectral_filter_fwd_triton,
)

# filter kinds: "chan" (1, C, M, 1, 1, 2), "row" (B, C, M, 1, W, 2), "full" (B, C, M, H, W, 2) given as a
# permuted view of a (B, C, M, 2, H, W) tensor; all expanded to (B, C, M, H, W, 2) as the op layer does.
# (B, C, T, H, W, filter kind, residual, non-contiguous x / dy / residual)
SHAPES = [
    pytest.param(2, 3, 1, 3, 5, "full", True, False, id="T1"),
    pytest.param(2, 2, 2, 3, 5, "chan", False, False, id="T2-chan"),
    pytest.param(1, 2, 3, 3, 5, "row", True, False, id="T3-row-res"),
    pytest.param(2, 2, 4, 3, 5, "chan", True, True, id="T4-chan-noncontig"),
    pytest.param(2, 3, 7, 3, 5, "full", True, True, id="T7-noncontig"),
    pytest.param(1, 3, 8, 3, 5, "row", False, False, id="T8-row"),
    pytest.param(2, 2, 15, 3, 5, "chan", True, False, id="T15-chan-res"),
    pytest.param(2, 2, 16, 3, 5, "full", False, True, id="T16-noncontig"),
    pytest.param(1, 2, 17, 5, 17, "row", True, False, id="T17-HW85-two-pblocks"),
    pytest.param(2, 2, 30, 3, 5, "full", True, False, id="T30"),
    pytest.param(1, 2, 31, 3, 5, "row", False, True, id="T31-row-noncontig"),
    pytest.param(1, 2, 32, 3, 5, "full", True, False, id="T32"),
    pytest.param(1, 2, 33, 3, 5, "chan", False, True, id="T33-noncontig"),
    pytest.param(1, 2, 63, 3, 5, "row", True, False, id="T63-row"),
    pytest.param(1, 2, 64, 3, 5, "full", True, False, id="T64"),
    pytest.param(1, 1, 64, 10, 13, "full", True, True, id="T64-HW130-noncontig"),
    pytest.param(1, 1, 64, 1, 1, "chan", True, True, id="T64-HW1-noncontig"),
    pytest.param(0, 3, 8, 3, 5, "full", True, False, id="B0"),
]
DTYPES = [pytest.param(torch.float64, id="fp64"), pytest.param(torch.float32, id="fp32")]
HALF_DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


def _randn(*shape, dtype):
    return torch.randn(*shape, dtype=torch.float64).to(dtype=dtype, device=DEVICE)


def make_x(B, C, T, H, W, dtype, noncontig=False, kind=0):
    """(B, C, T, H, W); non-contiguous: channels-last with the time axis innermost, every other step (kind 0),
    or every other time step of a (B, C, 2T, W, H) tensor, H and W transposed (kind 1)."""
    if not noncontig:
        return _randn(B, C, T, H, W, dtype=dtype)
    if kind == 0:
        t = _randn(B, H, W, C, 2 * T, dtype=dtype)[..., ::2].permute(0, 3, 4, 1, 2)
    else:
        t = _randn(B, C, 2 * T, W, H, dtype=dtype)[:, :, ::2].transpose(3, 4)
    assert tuple(t.shape) == (B, C, T, H, W) and not t.is_contiguous()
    return t


def make_filt(B, C, T, H, W, kind, dtype):
    M = T // 2 + 1
    if kind == "chan":
        f = _randn(1, C, M, 1, 1, 2, dtype=dtype)
    elif kind == "row":
        f = _randn(B, C, M, 1, W, 2, dtype=dtype)
    else:
        f = _randn(B, C, M, 2, H, W, dtype=dtype).permute(0, 1, 2, 4, 5, 3)
        assert B == 0 or not f.is_contiguous()
    return f.expand(B, C, M, H, W, 2)


def make_inputs(B, C, T, H, W, kind, res, noncontig, dtype):
    x = make_x(B, C, T, H, W, dtype, noncontig, 0)
    dy = make_x(B, C, T, H, W, dtype, noncontig, 1)
    r = make_x(B, C, T, H, W, dtype, noncontig, 1) if res else None
    return x, make_filt(B, C, T, H, W, kind, dtype), r, dy


def reference(x, filt, residual, dy):
    """Output and the autograd gradients (dx, per-column dfilt) of the reference in float64."""
    if x.numel() == 0:  # (torch.fft on CPU / MKL rejects an empty batch)
        zero = torch.zeros_like(x, dtype=torch.float64)
        return zero, zero, torch.zeros_like(filt, dtype=torch.float64)
    inputs = {
        "x": x.double(),
        "filt": filt.double().contiguous(),  # full size: the per-column gradient
        "residual": residual.double() if residual is not None else None,
    }
    run = run_with_grads(spectral_filter_ref, inputs, dy.double(), no_grad=("residual",))
    return run.outputs[0], run.grads["x"], run.grads["filt"]


def check(x, filt, residual, dy, dtype, df_dtype=None):
    y = spectral_filter_fwd_triton(x, filt, residual)
    dx, dfilt = spectral_filter_bwd_triton(dy, x, filt, True, True)
    r_y, r_dx, r_df = reference(x, filt, residual, dy)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert y.dtype == x.dtype and y.is_contiguous() and y.shape == x.shape
    assert dx.dtype == x.dtype and dx.is_contiguous() and dx.shape == x.shape
    # filt's layout when filt is dense (autograd keeps it as filt.grad without a copy), else contiguous
    assert (
        dfilt.dtype == acc and dfilt.stride() == torch.empty_like(filt).stride() and dfilt.shape == filt.shape
    )
    assert_close(y, r_y, dtype, "y")
    assert_close(dx, r_dx, dtype, "dx")
    assert_close(dfilt, r_df, df_dtype or dtype, "dfilt")
    return y, dx, dfilt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,T,H,W,kind,res,noncontig", SHAPES)
def test_fwd_bwd(B, C, T, H, W, kind, res, noncontig, dtype):
    x, filt, r, dy = make_inputs(B, C, T, H, W, kind, res, noncontig, dtype)
    check(x, filt, r, dy, dtype)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize(
    "B,C,T,H,W,kind,res",
    [
        pytest.param(2, 2, 16, 3, 5, "full", True, id="T16-full-res"),
        pytest.param(1, 2, 33, 3, 5, "chan", False, id="T33"),
    ],
)
def test_half(B, C, T, H, W, kind, res, dtype):
    """fp16 / bf16 inputs (fp32 accumulation, one rounding) vs the float64 reference on the same values; the
    fp32 dfilt is held to the fp32 tolerances (no rounding to the half dtype in between)."""
    x, filt, r, dy = make_inputs(B, C, T, H, W, kind, res, False, dtype)
    y, dx, _ = check(x, filt, r, dy, dtype, df_dtype=torch.float32)
    # one rounding to nearest (even): all but the rare elements whose fp32 sums straddle a rounding boundary
    # equal the float64 reference rounded by torch (truncation would miss about half of them)
    r_y, r_dx, _ = reference(x, filt, r, dy)
    for name, a, e in (("y", y, r_y), ("dx", dx, r_dx)):
        same = (a == e.to(dtype)).double().mean().item()
        assert same >= 0.98, f"{name}: only {same:.1%} of the elements are the correctly rounded reference"


@pytest.mark.parametrize("T", [pytest.param(7, id="T7"), pytest.param(16, id="T16")])
def test_need_flags(T):
    """need_dx / need_dfilt select the outputs; each is bitwise the one of the full backward."""
    x, filt, _, dy = make_inputs(2, 2, T, 3, 5, "row", False, True, torch.float32)
    dx, dfilt = spectral_filter_bwd_triton(dy, x, filt, True, True)
    dx1, df1 = spectral_filter_bwd_triton(dy, x, filt, True, False)
    dx2, df2 = spectral_filter_bwd_triton(dy, x, filt, False, True)
    assert df1 is None and dx2 is None
    assert torch.equal(dx1, dx) and torch.equal(df2, dfilt)
    assert spectral_filter_bwd_triton(dy, x, filt, False, False) == (None, None)


def test_dc_nyquist_imag_grad_zero():
    """The imaginary filter parts at DC and Nyquist do not act: their gradient is exactly 0 (as torch.fft's)."""
    x, filt, _, dy = make_inputs(1, 2, 8, 3, 5, "full", False, False, torch.float64)
    _, dfilt = spectral_filter_bwd_triton(dy, x, filt, False, True)
    assert (dfilt[:, :, 0, ..., 1] == 0).all() and (dfilt[:, :, 4, ..., 1] == 0).all()
    y = spectral_filter_fwd_triton(x, filt, None)
    f2 = filt.clone()
    f2[:, :, 0, ..., 1] = 7.0
    f2[:, :, 4, ..., 1] = -3.0
    assert torch.equal(spectral_filter_fwd_triton(x, f2, None), y)


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
)
def test_deterministic(dtype):
    """Repeated calls are bitwise identical (each column owned by one program, no atomics)."""
    x, filt, r, dy = make_inputs(1, 2, 12, 3, 5, "full", True, False, dtype)
    y = spectral_filter_fwd_triton(x, filt, r)
    dx, dfilt = spectral_filter_bwd_triton(dy, x, filt, True, True)
    assert torch.equal(spectral_filter_fwd_triton(x, filt, r), y)
    dx2, df2 = spectral_filter_bwd_triton(dy, x, filt, True, True)
    assert torch.equal(dx2, dx) and torch.equal(df2, dfilt)


def test_empty():
    """Empty batch / channels / positions: right shapes and dtypes, nothing launched."""
    for shape in ((0, 3, 8, 3, 5), (2, 0, 8, 3, 5), (2, 3, 8, 0, 5)):
        x = torch.randn(*shape, device=DEVICE)
        B, C, T, H, W = shape
        filt = torch.randn(1, 1, T // 2 + 1, 1, 1, 2, device=DEVICE).expand(B, C, T // 2 + 1, H, W, 2)
        with record_launches() as rec:
            y = spectral_filter_fwd_triton(x, filt, None)
            dx, dfilt = spectral_filter_bwd_triton(x, x, filt, True, True)
        assert not rec
        assert y.shape == dx.shape == x.shape and dfilt.shape == filt.shape


def test_tf32_precision_follows_torch():
    """fp32 products run "tf32" only when PyTorch's fp32 matmul TF32 switch is on (launch recorded, not run)."""
    m = torch.backends.cuda.matmul
    has_new = isinstance(getattr(m, "fp32_precision", None), str)
    saved = m.fp32_precision if has_new else m.allow_tf32
    x = torch.zeros(1, 1, 8, 2, 2, device=DEVICE)
    filt = torch.zeros(1, 1, 5, 2, 2, 2, device=DEVICE)
    try:
        for tf32, want in ((False, "ieee"), (True, "tf32")):
            if has_new:
                m.fp32_precision = "tf32" if tf32 else "ieee"
            else:
                m.allow_tf32 = tf32
            with record_launches() as rec:
                spectral_filter_fwd_triton(x, filt, None)
                spectral_filter_bwd_triton(x, x, filt, True, True)
                spectral_filter_fwd_triton(x.double(), filt.double(), None)
            assert [meta["PREC"] for _, _, meta in rec] == [want, want, "ieee"]
    finally:
        if has_new:
            m.fp32_precision = saved
        else:
            m.allow_tf32 = saved


def test_bad_arguments():
    x = torch.randn(1, 2, 8, 3, 3, device=DEVICE)
    filt = torch.randn(1, 2, 5, 3, 3, 2, device=DEVICE)
    long_x = torch.randn(1, 2, MAX_T + 1, 3, 3, device=DEVICE)
    long_f = torch.randn(1, 2, (MAX_T + 1) // 2 + 1, 3, 3, 2, device=DEVICE)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): .*not supported"):
        spectral_filter_fwd_triton(long_x, long_f, None)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): .*not supported"):
        spectral_filter_bwd_triton(long_x, long_x, long_f, True, True)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): filt"):
        spectral_filter_fwd_triton(x, filt[:, :, :4], None)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): filt"):
        spectral_filter_fwd_triton(x, filt.double(), None)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): residual"):
        spectral_filter_fwd_triton(x, filt, x[:, :1])
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): dy"):
        spectral_filter_bwd_triton(x[..., :2], x, filt, True, True)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): x"):
        spectral_filter_fwd_triton(x[0], filt[0], None)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): x"):
        spectral_filter_fwd_triton(x.long(), filt, None)
    with pytest.raises(ValueError, match=r"^spectral_filter \(triton\): the time axis"):
        spectral_filter_fwd_triton(x[:, :, :0], filt[:, :, :1], None)

"""Spectral filter (fxkernels/ops/spectral/README.md): the C++ CPU ops torch.ops.fxkernels.spectral_fwd /
spectral_bwd called directly.

Values and the per-column filter gradient vs spectral_filter_ref (autograd in float64), both CPU ISA variants and
the CUDA kernels' per-column math (the emulation hook),
argument checks (TORCH_CHECK -> RuntimeError) on the canonical-layout contract of README.md.
"""

import pytest
import torch

import fxkernels
from fxkernels.ops.spectral.reference import spectral_filter_ref
from fxkernels.testing import assert_close
from tests.conftest import AVAILABLE


def _have_ops():
    if not AVAILABLE["cpu"]:
        return False
    try:
        torch.ops.fxkernels.spectral_fwd  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _have_ops(), reason="needs the compiled CPU kernels with spectral_fwd/bwd"
)
ops = torch.ops.fxkernels

# (B, C, T, H, W): every frequency class (M <= 4, 8, 16, 33), partial vector blocks (H*W not a multiple of 8 / 4)
SHAPES = [
    pytest.param(2, 3, 1, 3, 3, id="T1"),
    pytest.param(1, 2, 6, 1, 1, id="T6-1x1"),
    pytest.param(2, 2, 7, 3, 5, id="T7-M4"),
    pytest.param(2, 3, 14, 4, 4, id="T14-M8"),
    pytest.param(1, 2, 15, 5, 7, id="T15-M8"),
    pytest.param(1, 2, 31, 3, 3, id="T31-M16"),
    pytest.param(1, 2, 32, 2, 9, id="T32-M17"),
    pytest.param(1, 1, 64, 3, 6, id="T64-M33"),
]


def _case(B, C, T, H, W, dtype, noncontig=False):
    M = T // 2 + 1
    x = torch.randn(B, C, T, H, W, dtype=torch.float64)
    f = torch.randn(B, C, M, 2, H, W, dtype=torch.float64).permute(0, 1, 2, 4, 5, 3)  # strided (re, im)
    r = torch.randn(B, C, T, H, W, dtype=torch.float64)
    dy = torch.randn(B, C, T, H, W, dtype=torch.float64)
    if noncontig:
        x = torch.randn(B, H, W, C, T, dtype=torch.float64).permute(0, 3, 4, 1, 2)
        dy = dy.transpose(3, 4).contiguous().transpose(3, 4)
    return x.to(dtype), f.to(dtype), r.to(dtype), dy.to(dtype)


def _reference(x, f, r, dy):
    xs, fs = x.double().requires_grad_(True), f.double().requires_grad_(True)
    y = spectral_filter_ref(xs, fs, r.double())
    dx, df = torch.autograd.grad(y, (xs, fs), dy.double())
    return y.detach(), dx, df


@pytest.fixture(params=["generic", "avx2", "avx512", "cuda-math"])
def isa(request):
    """The CPU code path: the GEMM kernels of each ISA variant (the avx512 slot holds the AVX2 kernels), or
    ("cuda-math", the test hook _set_cpu_emulate_threads) the CUDA kernels' per-column math of spectral_math.h
    run on CPU vectors."""
    C = fxkernels._ext._C
    if request.param == "cuda-math":
        prev = C._set_cpu_emulate_threads(1)
        yield request.param
        C._set_cpu_emulate_threads(prev)
        return
    if request.param not in fxkernels._ext._INFO.get("cpu_isa_usable", []):
        pytest.skip(f"{request.param} variant not built / not supported by this CPU")
    prev = C._set_cpu_isa(request.param)
    yield request.param
    C._set_cpu_isa(prev)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,C,T,H,W", SHAPES)
def test_ops_match_reference(B, C, T, H, W, dtype, isa):
    x, f, r, dy = _case(B, C, T, H, W, dtype, noncontig=(T == 15))
    y = ops.spectral_fwd(x, f, r)
    dx, df = ops.spectral_bwd(dy, x, f, True, True)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert y.is_contiguous() and y.dtype == dtype and dx.dtype == dtype and df.dtype == acc
    # laid out like the (dense, permuted) filter, so autograd can keep it as filt.grad without a copy
    assert df.shape == (B, C, T // 2 + 1, H, W, 2) and df.stride() == f.stride()
    ry, rdx, rdf = _reference(x, f, r, dy)
    assert_close(y, ry, dtype, "y")
    assert_close(dx, rdx, dtype, "dx")
    assert_close(df, rdf, dtype, "dfilt")
    # the imaginary filter parts of DC and (even T) Nyquist get exactly no gradient, as in torch.fft
    assert (df[:, :, 0, ..., 1] == 0).all()
    if T % 2 == 0:
        assert (df[:, :, T // 2, ..., 1] == 0).all()


def test_broadcast_filter_and_flags(isa):
    # a 0-stride (expanded) filter; need_dx / need_dfilt give empty tensors for what was not asked
    x, _, r, dy = _case(2, 3, 9, 3, 4, torch.float64)
    f = torch.randn(1, 3, 5, 1, 1, 2, dtype=torch.float64)
    fe = f.expand(2, 3, 5, 3, 4, 2)
    assert_close(ops.spectral_fwd(x, fe, None), spectral_filter_ref(x, f))
    dx, df = ops.spectral_bwd(dy, x, fe, True, False)
    assert df.numel() == 0
    assert ops.spectral_bwd(dy, x, fe, False, True)[1].is_contiguous()  # a broadcast filter: contiguous
    _, rdx, rdf = _reference(x, fe, r, dy)
    assert_close(dx, rdx)
    dx, df = ops.spectral_bwd(dy, x, fe, False, True)
    assert dx.numel() == 0
    assert_close(df, rdf)


def test_half_dtypes(isa):
    for dtype in (torch.float16, torch.bfloat16):
        x, f, r, dy = _case(2, 2, 10, 3, 5, dtype)
        ry, rdx, rdf = _reference(x, f, r, dy)
        assert_close(ops.spectral_fwd(x, f, r), ry, dtype, "y")
        dx, df = ops.spectral_bwd(dy, x, f, True, True)
        assert_close(dx, rdx, dtype, "dx")
        assert_close(df, rdf, dtype, "dfilt")


def test_torch_checks():
    x, f, r, dy = _case(1, 2, 8, 2, 3, torch.float32)
    with pytest.raises(RuntimeError, match="x must be 5-D"):
        ops.spectral_fwd(x[0], f, None)
    with pytest.raises(RuntimeError, match=r"filt must have shape \(B, C, T//2\+1, H, W, 2\)"):
        ops.spectral_fwd(x, f[:, :, :4], None)
    with pytest.raises(RuntimeError, match="filt must have the same dtype as x"):
        ops.spectral_fwd(x, f.double(), None)
    with pytest.raises(RuntimeError, match="residual must have shape"):
        ops.spectral_fwd(x, f, r[:, :1])
    with pytest.raises(RuntimeError, match=r"time axis of x \(dim 2\) must have length in \[1, 64\]"):
        ops.spectral_fwd(torch.randn(1, 1, 65, 1, 1), torch.randn(1, 1, 33, 1, 1, 2), None)
    with pytest.raises(RuntimeError, match="dy must have shape"):
        ops.spectral_bwd(dy[:, :, :7], x, f, True, True)
    with pytest.raises(RuntimeError, match="float32, float64"):
        ops.spectral_fwd(x.long(), f.long(), None)

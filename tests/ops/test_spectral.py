"""Spectral filter (fxkernels/ops/spectral/README.md): every kernel backend vs the torch.fft reference, output and
all gradients."""

import math
from functools import partial

import pytest
import torch

import fxkernels
from fxkernels.ops.spectral.reference import spectral_filter_dft, spectral_filter_ref
from fxkernels.testing import assert_close, assert_deterministic, check_op, gradcheck
from tests.conftest import BACKEND_PARAMS

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
T_ALL = [1, 2, 7, 8, 15, 16, 30, 64]

# Filter layouts, as the shape of filt in the canonical (B, C, M, H, W, 2) order:
#   full     the data-dependent per-position filter, a permuted view of (B, C, M, 2, H, W) (as TemporalFilter)
#   channel  a static per-channel filter (1, C, M, 1, 1, 2)
#   bc       per sample and channel (B, C, M, 1, 1, 2);  row: (1, C, M, H, 1, 2);  col: (B, C, M, 1, W, 2)
FILT_KINDS = ("full", "channel", "bc", "row", "col")

# (B, C, T, H, W, filt kind, with residual, dim, non-contiguous x / residual)
SHAPES = [pytest.param(2, 3, T, 3, 5, "full", True, 2, False, id=f"T{T}-full-res") for T in T_ALL] + [
    pytest.param(2, 3, 7, 4, 3, "channel", False, 2, False, id="T7-channel"),
    pytest.param(2, 2, 8, 3, 3, "bc", True, 2, False, id="T8-bc-res"),
    pytest.param(1, 3, 15, 5, 2, "row", False, 2, False, id="T15-row"),
    pytest.param(2, 2, 16, 2, 5, "col", True, 2, False, id="T16-col-res"),
    pytest.param(2, 3, 9, 3, 5, "full", True, 2, True, id="T9-full-noncontig"),
    pytest.param(1, 4, 6, 3, 3, "channel", True, 2, True, id="T6-channel-noncontig"),
    pytest.param(2, 3, 5, 4, 3, "full", True, 4, False, id="T5-dim4-time-last"),
    pytest.param(2, 3, 8, 4, 3, "full", False, -4, False, id="T8-dim-4-time-at-1"),
    pytest.param(2, 3, 7, 4, 3, "channel", True, 0, False, id="T7-dim0"),
    pytest.param(1, 1, 1, 1, 1, "full", False, 2, False, id="T1-1x1"),
]


def filt_shape(B, C, M, H, W, kind):
    return {
        "full": (B, C, M, H, W),
        "channel": (1, C, M, 1, 1),
        "bc": (B, C, M, 1, 1),
        "row": (1, C, M, H, 1),
        "col": (B, C, M, 1, W),
    }[kind]


def make(B, C, T, H, W, kind, residual, dim, noncontig, dtype, device="cpu"):
    """(x, filt, residual) with the time axis at `dim` (the other axes in (B, C, H, W) order)."""
    M = T // 2 + 1
    canon = (B, C, T, H, W)

    def at_dim(t, extra=0):  # canonical axis 2 -> dim (filt keeps its trailing axis last)
        return t.movedim(2, dim % 5)

    def rnd(shape):
        if noncontig:  # channels-last storage, then a permuted view: no unit stride on the last axis
            t = torch.randn(*shape[:1], *shape[2:], shape[1], dtype=torch.float64)
            t = t.movedim(-1, 1)
        else:
            t = torch.randn(*shape, dtype=torch.float64)
        return t.to(dtype=dtype, device=device)

    x = at_dim(rnd(canon))
    fs = filt_shape(B, C, M, H, W, kind)
    if kind == "full":  # (B, C, M, 2, H, W) -> (B, C, M, H, W, 2) view, as a filter generator produces it
        f = (
            torch.randn(fs[0], fs[1], fs[2], 2, fs[3], fs[4], dtype=torch.float64)
            .to(dtype=dtype, device=device)
            .permute(0, 1, 2, 4, 5, 3)
        )
    else:
        f = torch.randn(*fs, 2, dtype=torch.float64).to(dtype=dtype, device=device)
    f = f.movedim(2, dim % 5)
    r = at_dim(rnd(canon)) if residual else None
    return x, f, r


def check(x, f, r, dim, backend, via=None, **kw):
    """Output and the gradients of x, filt and residual vs the float64 reference (kw: check_op's options)."""
    fn = via or partial(fxkernels.spectral_filter, dim=dim, backend=backend)
    return check_op(fn, partial(spectral_filter_ref, dim=dim), {"x": x, "filt": f, "residual": r}, **kw)


# ----------------------------------------------------------------------------------------------- reference
@pytest.mark.parametrize("T", [pytest.param(t, id=f"T{t}") for t in T_ALL + [65, 100]])
def test_reference_matches_dft_definition(T):
    x, f, r = make(2, 3, T, 2, 3, "full", True, 2, False, torch.float64)
    assert_close(spectral_filter_ref(x, f, r), spectral_filter_dft(x, f, r))
    for norm in ("backward", "forward", None):  # the pair of transforms always scales by 1/T
        assert_close(spectral_filter_ref(x, f, r, norm=norm), spectral_filter_ref(x, f, r, norm="ortho"))


def test_reference_gradients_match_dft_definition():
    # torch.fft's autograd vs the DFT-matrix form: the DC / Nyquist handling of the backward
    for T in (4, 5):
        x, f, _ = make(1, 2, T, 2, 2, "full", False, 2, False, torch.float64)
        got, _ = check_op(spectral_filter_ref, spectral_filter_dft, {"x": x, "filt": f}, ref_dtype=None)
        dfilt, M = got.grads["filt"], T // 2 + 1
        assert dfilt[:, :, 0, ..., 1].abs().max() == 0  # no gradient through the DC imaginary part
        if T % 2 == 0:
            assert dfilt[:, :, M - 1, ..., 1].abs().max() == 0  # nor the Nyquist one


def test_reference_hand_cases():
    x = torch.randn(1, 2, 7, 3, 2, dtype=torch.float64)
    M = 4
    ones = torch.zeros(1, 2, M, 1, 1, 2, dtype=torch.float64)
    ones[..., 0] = 1
    assert_close(spectral_filter_ref(x, ones), x)  # F = 1 is the identity
    # F[k] = exp(-2 pi i k / T) delays by one step (circularly) for odd T
    k = torch.arange(M, dtype=torch.float64)
    shift = torch.stack([torch.cos(2 * math.pi * k / 7), -torch.sin(2 * math.pi * k / 7)], -1).view(
        1, 1, M, 1, 1, 2
    )
    assert_close(spectral_filter_ref(x, shift), torch.roll(x, 1, dims=2))
    # T = 1: y = Re(F[0]) x + residual
    x1, f1 = (
        torch.randn(2, 3, 1, 2, 2, dtype=torch.float64),
        torch.randn(2, 3, 1, 2, 2, 2, dtype=torch.float64),
    )
    assert_close(spectral_filter_ref(x1, f1, x1), f1[..., 0] * x1 + x1)


# ------------------------------------------------------------------------------------------------ backends
@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,T,H,W,kind,res,dim,noncontig", SHAPES)
def test_matches_reference(B, C, T, H, W, kind, res, dim, noncontig, dtype, device, backend):
    x, f, r = make(B, C, T, H, W, kind, res, dim, noncontig, dtype, device)
    check(x, f, r, dim, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision(dtype, device, backend):
    for T, kind in ((8, "full"), (15, "channel")):
        x, f, r = make(2, 3, T, 3, 4, kind, True, 2, False, dtype, device)
        check(x, f, r, 2, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_mtstwn_like_shape_fp32(device, backend):
    # 15 time steps, a per-position filter, a map larger than one CPU block row (C, H, W reduced for the interpreter)
    C, H, W = (16, 14, 14) if backend != "triton" else (2, 5, 7)
    x, f, r = make(2, C, 15, H, W, "full", True, 2, False, torch.float32, device)
    check(x, f, r, 2, backend)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_partial_gradients(device, backend):
    # only some inputs require grad: the backward skips the unneeded outputs
    x, f, r = make(2, 2, 6, 3, 3, "full", True, 2, False, torch.float64, device)
    for need in ((True, False, False), (False, True, False), (False, False, True), (False, True, True)):
        frozen = [name for name, n in zip(("x", "filt", "residual"), need) if not n]
        got, _ = check(x, f, r, 2, backend, no_grad=frozen)
        assert sorted(got.grads) == sorted({"x", "filt", "residual"} - set(frozen))


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_gradcheck_fp64(device, backend):
    for T, kind in ((4, "full"), (5, "channel")):  # even T has a Nyquist term, odd T none
        x, f, r = make(1, 2, T, 2, 3, kind, True, 2, False, torch.float64, device)
        fn = partial(fxkernels.spectral_filter, backend=backend)
        assert gradcheck(fn, {"x": x, "filt": f, "residual": r}, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_registered_op_autograd_matches_reference(device, backend):
    # eager calls take a direct autograd.Function; this checks the registered op's autograd (torch.compile's path)
    x, f, r = make(2, 3, 7, 3, 2, "bc", True, 2, False, torch.float64, device)
    check(
        x,
        f,
        r,
        2,
        backend,
        via=lambda x, filt, residual: torch.ops.fxkernels.spectral_filter(x, filt, residual, backend),
    )


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_opcheck(device, backend):
    x, f, r = make(2, 3, 6, 3, 2, "full", True, 2, False, torch.float32, device)
    torch.library.opcheck(
        torch.ops.fxkernels.spectral_filter.default,
        (x.requires_grad_(True), f.requires_grad_(True), r.requires_grad_(True), backend),
    )
    x, f, _ = make(2, 3, 5, 2, 2, "channel", False, 2, False, torch.float32, device)
    torch.library.opcheck(
        torch.ops.fxkernels.spectral_filter.default, (x.requires_grad_(True), f, None, backend)
    )


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_backward_is_deterministic(device, backend):
    x, f, r = make(2, 4, 15, 5, 6, "channel", True, 2, False, torch.float32, device)
    assert_deterministic(
        partial(fxkernels.spectral_filter, backend=backend), {"x": x, "filt": f, "residual": r}
    )


@pytest.mark.parametrize(
    "device,backend", BACKEND_PARAMS + [pytest.param("cpu", "reference", id="cpu-reference")]
)
def test_empty(device, backend):
    for B, C, H in ((0, 3, 2), (2, 0, 2), (2, 3, 0)):
        x, f, r = make(B, C, 6, H, 3, "full", True, 2, False, torch.float32, device)
        args = [t.requires_grad_(True) for t in (x, f, r)]
        y = fxkernels.spectral_filter(*args, backend=backend)
        assert y.shape == x.shape
        y.sum().backward()
        assert args[0].grad.shape == x.shape and args[1].grad.shape == f.shape


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_long_time_axis(device, backend):
    # T > 64: "auto" falls back to the reference, an explicit fused backend raises
    x, f, _ = make(1, 2, 65, 2, 2, "channel", False, 2, False, torch.float32, device)
    with fxkernels.use_backend(backend):
        assert_close(fxkernels.spectral_filter(x, f), spectral_filter_ref(x, f))
    with pytest.raises(ValueError, match="T <= 64"):
        fxkernels.spectral_filter(x, f, backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_compile_fullgraph(backend):
    if backend == "cpu" and not fxkernels.backends()["cpu"]:
        pytest.skip("needs the compiled CPU kernels")
    x, f, r = make(2, 3, 7, 3, 4, "full", True, 2, False, torch.float32)

    def fn(x, filt, residual):
        return torch.nn.functional.gelu(fxkernels.spectral_filter(x, filt, residual, backend=backend))

    check_op(torch.compile(fn, fullgraph=True), fn, {"x": x, "filt": f, "residual": r}, ref_dtype=None)


def test_bad_input():
    sf = fxkernels.spectral_filter
    x, f, r = make(2, 3, 8, 3, 4, "full", True, 2, False, torch.float32)
    with pytest.raises(ValueError, match="x must be 5-D"):
        sf(x[0], f)
    with pytest.raises(ValueError, match="T//2\\+1 = 5 frequencies"):
        sf(x, f[:, :, :4])
    with pytest.raises(ValueError, match="last axis must be 2"):
        sf(x, torch.cat([f, f[..., :1]], -1))
    with pytest.raises(ValueError, match="does not broadcast"):
        sf(x, f[:, :2])
    with pytest.raises(ValueError, match="does not broadcast"):
        sf(x, torch.randn(2, 3, 5, 3, 2, 2))
    with pytest.raises(ValueError, match="filt must be 6-D"):
        sf(x, f[..., 0])
    with pytest.raises(ValueError, match="residual must have shape"):
        sf(x, f, r[:, :, :7])
    with pytest.raises(ValueError, match="dtype"):
        sf(x, f.double())
    with pytest.raises(ValueError, match="float32, float64"):
        sf(x.long(), f.long())
    with pytest.raises(ValueError, match="dim must name an axis"):
        sf(x, f, dim=5)
    with pytest.raises(TypeError, match="dim must be an int"):
        sf(x, f, dim=2.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        sf(x, f, norm="unitary")
    with pytest.raises(ValueError, match="backend"):
        sf(x, f, backend="gpu")
    with pytest.raises(ValueError, match="length >= 1"):
        sf(torch.randn(2, 3, 0, 2, 2), torch.randn(2, 3, 1, 2, 2, 2))


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_filter_grad_keeps_the_filter_layout(device, backend):
    # eager backward returns dfilt laid out like a dense filt (TemporalFilter's permuted view), so autograd stores
    # it as filt.grad without a copy; a broadcast filter gets a contiguous gradient of its own shape
    for kind in ("full", "channel"):
        x, f, r = make(2, 3, 8, 3, 4, kind, True, 2, False, torch.float32, device)
        f.requires_grad_(True)
        fxkernels.spectral_filter(x, f, r, backend=backend).sum().backward()
        assert f.grad.shape == f.shape and f.grad.stride() == torch.empty_like(f).stride()

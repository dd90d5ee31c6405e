"""FCC family (fxkernels/ops/fcc/README.md): every kernel backend vs the reference, outputs and all gradients."""

import os
import subprocess
import sys

import pytest
import torch

import fxkernels
from fxkernels.ops.fcc.reference import fcc2d_ref, fcc_ref
from fxkernels.testing import check_op, gradcheck, run_with_grads
from tests.conftest import AVAILABLE, BACKEND_PARAMS

# (B, C, H, W, non-contiguous x)
SHAPES = [
    pytest.param(2, 3, 7, 7, False, id="L7-C3"),
    pytest.param(1, 4, 16, 16, False, id="L16"),
    pytest.param(2, 3, 31, 31, False, id="L31-odd"),
    pytest.param(1, 2, 56, 56, False, id="L56"),
    pytest.param(3, 5, 7, 31, False, id="7x31-B3-C5"),
    pytest.param(1, 3, 5, 70, False, id="5x70-large-W"),
    pytest.param(2, 3, 16, 9, True, id="16x9-noncontig"),
]
MODES = ["V", "H", "VH", "HV"]
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
HALF_DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
MODE_INDEX = {"V": 0, "H": 1, "VH": 2, "HV": 3}  # the registered ops' `mode` argument


def make_inputs(B, C, H, W, mode, dtype, device, noncontig=False, with_pos=True, with_bias=True):
    if noncontig:  # a transposed view: x.stride(-1) != 1
        x = torch.randn(B, C, W, H, dtype=dtype, device=device).transpose(2, 3)
    else:
        x = torch.randn(B, C, H, W, dtype=dtype, device=device)
    L1 = H if mode in ("V", "VH") else W
    L2 = W if mode == "VH" else H

    def r(*s, scale=1.0):
        return (scale * torch.randn(*s, dtype=torch.float64)).to(dtype=dtype, device=device)

    two = mode in ("VH", "HV")
    return {
        "x": x,
        "w1": r(C, L1, scale=L1**-0.5),
        "w2": r(C, L2, scale=L2**-0.5) if two else None,
        "p1": r(C, L1) if with_pos else None,
        "p2": r(C, L2) if (two and with_pos) else None,
        "b1": r(C) if with_bias else None,
        "b2": r(C) if (two and with_bias) else None,
    }


def op(mode, backend="auto"):
    """The public op of `mode` as a function of make_inputs' names."""

    def f(x, w1, w2, p1, p2, b1, b2):
        if mode in ("V", "H"):
            return fxkernels.circular_conv(x, w1, -2 if mode == "V" else -1, p1, b1, backend=backend)
        return fxkernels.circular_conv2d(x, w1, w2, mode, p1, p2, b1, b2, backend=backend)

    return f


def registered_op(mode, backend):
    """The registered custom op (torch.compile's path) of `mode`."""
    mi = MODE_INDEX[mode]

    def f(x, w1, w2, p1, p2, b1, b2):
        if mode in ("V", "H"):
            return torch.ops.fxkernels.circular_conv(x, w1, p1, b1, mi, backend)
        return torch.ops.fxkernels.circular_conv2d(x, w1, w2, p1, p2, b1, b2, mi, backend)

    return f


def ref(mode):
    def f(x, w1, w2, p1, p2, b1, b2):
        if mode in ("V", "H"):
            return fcc_ref(x, w1, -2 if mode == "V" else -1, p1, b1)
        return fcc2d_ref(x, w1, w2, mode, p1, p2, b1, b2)

    return f


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B,C,H,W,noncontig", SHAPES)
def test_fcc_matches_reference(B, C, H, W, noncontig, mode, dtype, device, backend):
    inp = make_inputs(B, C, H, W, mode, dtype, device, noncontig)
    check_op(op(mode, backend), ref(mode), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "with_pos,with_bias",
    [
        pytest.param(False, False, id="no-pos-no-bias"),
        pytest.param(True, False, id="pos-only"),
        pytest.param(False, True, id="bias-only"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_fcc_optional_inputs(mode, with_pos, with_bias, device, backend):
    inp = make_inputs(2, 3, 9, 12, mode, torch.float32, device, with_pos=with_pos, with_bias=with_bias)
    check_op(op(mode, backend), ref(mode), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_fcc_half_precision(mode, dtype, device, backend):
    inp = make_inputs(2, 3, 16, 12, mode, dtype, device)
    check_op(op(mode, backend), ref(mode), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("mode", MODES)
def test_fcc_gradcheck_fp64(mode, device, backend):
    inp = make_inputs(1, 2, 5, 6, mode, torch.float64, device)
    assert gradcheck(op(mode, backend), inp, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_reference_gradcheck_fp64(mode):
    assert gradcheck(ref(mode), make_inputs(1, 2, 4, 5, mode, torch.float64, "cpu"))


def test_reference_is_circular_conv_definition():
    # the formula of fxkernels/ops/fcc/README.md ("Math"), written out with explicit loops, on a tiny case
    B, C, H, W = 1, 2, 4, 3
    x, U, P, b = (
        torch.randn(B, C, H, W, dtype=torch.float64),
        torch.randn(C, H),
        torch.randn(C, H),
        torch.randn(C),
    )
    U, P, b = U.double(), P.double(), b.double()
    y = fcc_ref(x, U, -2, P, b)
    for c in range(C):
        for i in range(H):
            for j in range(W):
                want = b[c] + sum(U[c, s] * (x[0, c, (i + s) % H, j] + P[c, (i + s) % H]) for s in range(H))
                assert abs(y[0, c, i, j].item() - want.item()) < 1e-12


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("mode", MODES)
def test_fcc_opcheck(mode, device, backend):
    inp = make_inputs(2, 3, 6, 5, mode, torch.float32, device)
    for v in inp.values():
        if v is not None:
            v.requires_grad_(True)
    mi = MODE_INDEX[mode]
    if mode in ("V", "H"):
        custom = torch.ops.fxkernels.circular_conv.default
        args = (inp["x"], inp["w1"], inp["p1"], inp["b1"], mi, backend)
    else:
        custom = torch.ops.fxkernels.circular_conv2d.default
        args = (inp["x"], inp["w1"], inp["w2"], inp["p1"], inp["p2"], inp["b1"], inp["b2"], mi, backend)
    torch.library.opcheck(custom, args)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
def test_fcc_batch_zero(device, backend):
    inp = make_inputs(0, 3, 6, 5, "VH", torch.float32, device)
    run = run_with_grads(op("VH", backend), inp, torch.randn(0, 3, 6, 5))
    assert run.outputs[0].shape == (0, 3, 6, 5)
    assert torch.count_nonzero(run.grads["w1"]) == 0 and run.grads["b2"].abs().sum() == 0
    check_op(op("VH", backend), ref("VH"), inp)


# ------------------------------------------------------------------------------------------- bad input
BAD = [
    pytest.param(lambda x, w: fxkernels.circular_conv(x[0], w), "x must be 4-D", id="rank"),
    pytest.param(
        lambda x, w: fxkernels.circular_conv(x, w[:, :5]), "weight must have shape", id="L-mismatch"
    ),
    pytest.param(lambda x, w: fxkernels.circular_conv(x, w[:2]), "weight must have shape", id="C-mismatch"),
    pytest.param(lambda x, w: fxkernels.circular_conv(x.int(), w), "x must be float", id="int-dtype"),
    pytest.param(lambda x, w: fxkernels.circular_conv(x, w.double()), "weight has dtype", id="mixed-dtype"),
    pytest.param(
        lambda x, w: fxkernels.circular_conv(x, w.to("meta")), "weight is on meta", id="mixed-device"
    ),
    pytest.param(lambda x, w: fxkernels.circular_conv(x, w, dim=1), "dim must be", id="dim"),
    pytest.param(
        lambda x, w: fxkernels.circular_conv(x, w, pos=w[:, :3]), "pos must have shape", id="pos-shape"
    ),
    pytest.param(lambda x, w: fxkernels.circular_conv(x, w, bias=w), "bias must be 1-D", id="bias-rank"),
    pytest.param(lambda x, w: fxkernels.circular_conv2d(x, w, w, "VV"), "order must be", id="order"),
    pytest.param(
        lambda x, w: fxkernels.circular_conv2d(x, w, w[:, :3], "VH"), "weight2 must have shape", id="w2"
    ),
    pytest.param(
        lambda x, w: fxkernels.circular_conv(x, w, backend="gpu"), "backend must be one of", id="backend"
    ),
]


@pytest.mark.parametrize("fn,msg", BAD)
def test_fcc_bad_input(fn, msg):
    x, w = torch.randn(2, 3, 8, 8), torch.randn(3, 8)
    with pytest.raises((ValueError, TypeError), match=msg):
        fn(x, w)


def test_fcc_error_messages_read_whole():
    # the whole message as a user reads it: the op, the argument, the expected and the actual shape
    x, w = torch.randn(2, 3, 8, 8), torch.randn(3, 8)
    want = (
        "fxkernels.circular_conv: weight must have shape (C, H) = (3, 8) for x of shape (B, C, H, W) = "
        "(2, 3, 8, 8), got (3, 5)"
    )
    with pytest.raises(ValueError) as e:
        fxkernels.circular_conv(x, w[:, :5])
    assert str(e.value) == want
    with pytest.raises(ValueError) as e:
        fxkernels.circular_conv2d(x, w, w[:, :3], "VH")
    assert str(e.value) == (
        "fxkernels.circular_conv2d: weight2 must have shape (C, W) = (3, 8) for x of shape (B, C, H, W) = "
        "(2, 3, 8, 8), got (3, 3)"
    )


def test_fcc_backend_device_mismatch():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(3, 8)
    with pytest.raises(RuntimeError, match="backend 'cuda'"):
        fxkernels.circular_conv(x, w, backend="cuda")


def test_triton_on_cpu_needs_interpreter():
    code = (
        "import torch, fxkernels\n"
        "try:\n"
        "    fxkernels.circular_conv(torch.randn(1, 2, 4, 4), torch.randn(2, 4), backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR" in out.stdout and "triton" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(not AVAILABLE["cpu"], reason="needs the compiled CPU kernels")
def test_cpp_op_checks():
    # the C++ ops validate on their own (TORCH_CHECK) when called directly
    x, w = torch.randn(2, 3, 8, 8), torch.randn(3, 8)
    with pytest.raises(RuntimeError, match="w1"):
        torch.ops.fxkernels.fcc_fwd(x, w[:, :4], None, None, None, None, None, 0)
    with pytest.raises(RuntimeError, match="mode"):
        torch.ops.fxkernels.fcc_fwd(x, w, None, None, None, None, None, 7)
    with pytest.raises(RuntimeError, match="dy"):
        torch.ops.fxkernels.fcc_bwd(x[:1], x, w, None, None, None, None, None, 0)


# ------------------------------------------------- the CUDA kernels' schedule, run by the CPU build
@pytest.fixture
def cpu_schedule(request):
    """Switch the CPU kernels to another code path for one test: ("emulate", T) runs the CUDA kernels'
    per-thread index math with T threads per plane; ("isa", name) forces the generic / AVX2 build."""
    C = fxkernels._ext._C
    kind, value = request.param
    if kind == "emulate":
        C._set_cpu_emulate_threads(value)
        yield
        C._set_cpu_emulate_threads(0)
    else:
        C._set_cpu_isa(value)
        yield
        C._set_cpu_isa("auto")


@pytest.mark.skipif(not AVAILABLE["cpu"], reason="needs the compiled CPU kernels")
@pytest.mark.parametrize(
    "cpu_schedule",
    [
        pytest.param(("emulate", 37), id="cuda-schedule-37threads"),
        pytest.param(("emulate", 256), id="cuda-schedule-256threads"),
        pytest.param(("isa", "generic"), id="generic-isa"),
    ],
    indirect=True,
)
@pytest.mark.parametrize("dtype", DTYPES + HALF_DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B,C,H,W,noncontig", [SHAPES[0], SHAPES[2], SHAPES[4], SHAPES[6]])
def test_fcc_cpu_alternate_schedules(B, C, H, W, noncontig, mode, dtype, cpu_schedule):
    inp = make_inputs(B, C, H, W, mode, dtype, "cpu", noncontig)
    check_op(op(mode, "cpu"), ref(mode), inp)


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("mode", MODES)
def test_fcc_registered_op_autograd_matches_reference(mode, device, backend):
    # eager public calls take a direct autograd.Function; this checks the registered ops' autograd (the path
    # torch.compile uses) on values, not only on registration as opcheck does
    check_op(registered_op(mode, backend), ref(mode), make_inputs(2, 3, 9, 7, mode, torch.float64, device))

"""FCC: the C++ CPU ops torch.ops.fxkernels.fcc_fwd / fcc_bwd called directly, under every CPU ISA variant.

Output and all seven gradients vs autograd through the fp64 reference (fxkernels/ops/fcc/README.md) under a
random upstream gradient. The ISA variants are those of common/cpu_isa.h: generic, avx2, avx512 (skipped where
the CPU lacks it) and the test hook avx512-emulated (the AVX-512 source compiled for AVX2), which runs the
AVX-512 build's tile and tail code on every AVX2 machine. Shapes are picked for those tails: rows 13 =
8 + 4 + 1 GEMM row blocks, widths 31 / 40 / 56 = every vector width of the 64-byte build plus a scalar rest.
"""

import pytest
import torch

import fxkernels
from fxkernels.ops.fcc.reference import fcc2d_ref, fcc_ref
from fxkernels.testing import assert_close
from tests.conftest import AVAILABLE, usable_cpu_isas

pytestmark = pytest.mark.skipif(not AVAILABLE["cpu"], reason="needs the compiled CPU kernels")

MODES = {"V": 0, "H": 1, "VH": 2, "HV": 3}
# (B, C, H, W, non-contiguous x)
SHAPES = [
    pytest.param(2, 3, 7, 7, False, id="7x7"),
    pytest.param(1, 2, 13, 31, False, id="13x31-row-and-column-tails"),
    pytest.param(2, 2, 16, 16, False, id="16x16-MOL-plane"),
    pytest.param(1, 2, 9, 56, False, id="9x56"),
    pytest.param(1, 2, 24, 40, False, id="24x40"),
    pytest.param(2, 3, 16, 9, True, id="16x9-noncontig"),
]
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
HALF_DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


@pytest.fixture
def cpu_isa(isa):
    """The shared `isa` fixture (tests/conftest.py) under this file's name."""
    return isa


def make_inputs(B, C, H, W, mode, dtype, noncontig):
    """x (B, C, H, W); w1, p1 (C, L1); w2, p2 (C, L2) for the two-pass modes (else None); b1, b2 (C,)."""
    if noncontig:
        x = torch.randn(B, C, W, H, dtype=torch.float64).transpose(2, 3)
    else:
        x = torch.randn(B, C, H, W, dtype=torch.float64)
    L1 = H if mode in ("V", "VH") else W
    L2 = W if mode == "VH" else H
    two = mode in ("VH", "HV")
    t = {
        "x": x,
        "w1": torch.randn(C, L1, dtype=torch.float64) * L1**-0.5,
        "w2": torch.randn(C, L2, dtype=torch.float64) * L2**-0.5 if two else None,
        "p1": torch.randn(C, L1, dtype=torch.float64),
        "p2": torch.randn(C, L2, dtype=torch.float64) if two else None,
        "b1": torch.randn(C, dtype=torch.float64),
        "b2": torch.randn(C, dtype=torch.float64) if two else None,
    }
    return {k: (v.to(dtype) if v is not None else None) for k, v in t.items()}


KEYS = ["x", "w1", "w2", "p1", "p2", "b1", "b2"]


def reference(t, mode, dy):
    """y and the gradients of every present input, autograd through the reference in fp64."""
    leaves = {k: (v.detach().double().requires_grad_(True) if v is not None else None) for k, v in t.items()}
    if mode in ("V", "H"):
        y = fcc_ref(leaves["x"], leaves["w1"], -2 if mode == "V" else -1, leaves["p1"], leaves["b1"])
    else:
        y = fcc2d_ref(leaves["x"], leaves["w1"], leaves["w2"], mode, leaves["p1"], leaves["p2"],
                      leaves["b1"], leaves["b2"])  # fmt: skip
    present = [k for k in KEYS if leaves[k] is not None]
    grads = torch.autograd.grad(y, [leaves[k] for k in present], dy.double())
    return y.detach(), dict(zip(present, grads))


def check(B, C, H, W, noncontig, mode, dtype):
    t = make_inputs(B, C, H, W, mode, dtype, noncontig)
    dy = torch.randn(B, C, H, W, dtype=torch.float64).to(dtype)
    args = [t[k] for k in KEYS]
    y = torch.ops.fxkernels.fcc_fwd(*args, MODES[mode])
    grads = torch.ops.fxkernels.fcc_bwd(dy, *args, MODES[mode])
    y_ref, g_ref = reference(t, mode, dy)
    assert y.dtype == dtype and y.is_contiguous()
    assert_close(y, y_ref, dtype, "y")
    assert len(grads) == len(KEYS)
    for k, g in zip(KEYS, grads):
        if t[k] is None:
            assert g.numel() == 0, f"d{k}: expected an empty tensor for an absent input, got {tuple(g.shape)}"
            continue
        assert g.dtype == dtype, f"d{k}: dtype {g.dtype}"
        assert_close(g, g_ref[k], dtype, f"d{k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("B,C,H,W,noncontig", SHAPES)
def test_fcc_cpu_isa_matches_reference(B, C, H, W, noncontig, mode, dtype, cpu_isa):
    check(B, C, H, W, noncontig, mode, dtype)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("B,C,H,W,noncontig", [SHAPES[1], SHAPES[5]])
def test_fcc_cpu_isa_half_matches_reference(B, C, H, W, noncontig, mode, dtype, cpu_isa):
    check(B, C, H, W, noncontig, mode, dtype)


def test_fcc_cpu_isa_variants_agree():
    # every usable variant computes the same sums in the same order per output element: they agree far below
    # the fp64 tolerance (FMA contraction is the only difference)
    t = make_inputs(2, 3, 13, 31, "VH", torch.float64, False)
    args = [t[k] for k in KEYS]
    C = fxkernels._ext._C
    outs = {}
    for isa in sorted(usable_cpu_isas()):
        prev = C._set_cpu_isa(isa)
        try:
            outs[isa] = torch.ops.fxkernels.fcc_fwd(*args, MODES["VH"])
        finally:
            C._set_cpu_isa(prev)
    assert "generic" in outs
    for isa, y in outs.items():
        torch.testing.assert_close(
            y, outs["generic"], rtol=1e-13, atol=1e-13, msg=lambda m, isa=isa: f"{isa}: {m}"
        )

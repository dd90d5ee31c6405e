"""fxkernels._C as a whole: build_info()["kernels"] is what was registered, and the extension-wide CPU ISA
selection (csrc/common/cpu_isa.h) behaves as documented."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fxkernels
from tests.conftest import AVAILABLE

pytestmark = pytest.mark.skipif(not AVAILABLE["cpu"], reason="needs the compiled extension fxkernels._C")

CSRC = Path(__file__).resolve().parent.parent / "csrc"
_DEF = re.compile(r'm\.def\(\s*"(\w+)\(')


def schema_ops(cuda_only: bool = False) -> set:
    """Names of the ops the families' schema fragments define (csrc/<family>/*_schema.cpp); with
    ``cuda_only``, those of the families that have CUDA sources (the attention family has none by design:
    its CUDA tensors go to torch SDPA or Triton)."""
    names = set()
    for path in CSRC.glob("*/*_schema.cpp"):
        if cuda_only and not any(path.parent.glob("*.cu")):
            continue
        names |= set(_DEF.findall(path.read_text()))
    return names


def dispatcher_kernels() -> list:
    """'op:cpu' / 'op:cuda' for every fxkernels op with a CPU / CUDA kernel, asked from the dispatcher now."""
    ops = sorted(
        n.split("::", 1)[1].split(".", 1)[0]
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("fxkernels::") and "." not in n.split("::", 1)[1]
    )
    out = []
    for key, suffix in (("CPU", "cpu"), ("CUDA", "cuda")):
        out += [
            f"{op}:{suffix}"
            for op in ops
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"fxkernels::{op}", key)
        ]
    return out


def test_build_info_kernels_are_the_registered_ones():
    kernels = fxkernels._ext.build_info()["kernels"]
    assert kernels == dispatcher_kernels()
    assert len(kernels) == len(set(kernels))
    ops = schema_ops()
    assert {"fcc_fwd", "fcc_bwd", "ccc_knn", "corr_fwd", "spectral_fwd"} <= ops, ops
    # every schema a family defines has its CPU kernel; CUDA ones exactly in a CUDA build
    assert {k.split(":")[0] for k in kernels if k.endswith(":cpu")} == ops
    cuda = {k.split(":")[0] for k in kernels if k.endswith(":cuda")}
    assert cuda == (schema_ops(cuda_only=True) if fxkernels._ext.build_info()["cuda"] else set())
    assert "attention_fwd" in ops and "attention_fwd" not in schema_ops(cuda_only=True)
    for op in ops:
        assert fxkernels._ext.has_kernel(op, "cpu"), op


def test_cpu_isa_selection():
    C = fxkernels._ext._C
    info = fxkernels._ext.build_info()
    variants, usable = info["cpu_isa_variants"], info["cpu_isa_usable"]
    assert variants[0] == "generic" and set(usable) <= set(variants)
    if "avx2" in variants:  # x86-64 GCC builds compile both wide variants
        assert "avx512" in variants
    prev = C._set_cpu_isa("generic")
    try:
        assert fxkernels._ext._C.build_info()["cpu_isa"] == "generic"
        assert C._set_cpu_isa("auto") == "generic"
        assert C.build_info()["cpu_isa"] == usable[-1]  # auto: the widest variant this CPU runs
        for isa in usable:
            C._set_cpu_isa(isa)
            assert C.build_info()["cpu_isa"] == isa
        with pytest.raises(
            RuntimeError, match="CPU ISA must be 'auto', 'generic', 'avx2' or 'avx512', got 'sse9'"
        ):
            C._set_cpu_isa("sse9")
        for isa in set(variants) - set(usable):
            with pytest.raises(RuntimeError, match=f"this CPU does not support the {isa} kernels"):
                C._set_cpu_isa(isa)
    finally:
        C._set_cpu_isa(prev)


@pytest.mark.parametrize(
    "env,expected",
    [
        pytest.param("generic", "generic", id="generic"),
        pytest.param("sse9", None, id="unknown-falls-back-to-auto"),
    ],
)
def test_cpu_isa_environment_variable(env, expected):
    code = (
        "import warnings, torch, fxkernels._C as C\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    print(C.build_info()['cpu_isa'], C.build_info()['cpu_isa_usable'][-1], len(w))\n"
    )
    env_vars = {"FXKERNELS_CPU_ISA": env, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env_vars, capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    isa, widest, _ = out.stdout.split()
    assert isa == (expected or widest)
    if expected is None:
        assert "ignoring FXKERNELS_CPU_ISA=sse9" in out.stderr + out.stdout


def test_every_family_runs_under_every_usable_isa():
    # the avx512 slot of a family without an AVX-512 build holds its AVX2 kernels: selecting it must work, and
    # every variant agrees with the baseline (the per-family *_cpp tests check each one against the reference)
    C = fxkernels._ext._C
    ops = torch.ops.fxkernels
    x, xs = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(1, 2, 4, 3, 3, dtype=torch.float64)
    w, f, r = (
        torch.randn(3, 8, dtype=torch.float64),
        torch.randn(1, 2, 3, 3, 3, 2, dtype=torch.float64),
        torch.randn(5, 4, dtype=torch.float64),
    )
    calls = {
        "fcc_fwd": lambda: ops.fcc_fwd(x, w, None, None, None, None, None, 0),
        "corr_fwd": lambda: ops.corr_fwd(x, x.flip(-1), 3, 1),
        "ccc_edge_max_fwd": lambda: ops.ccc_edge_max_fwd(
            x.reshape(2, 3, 64), torch.tensor([[[1], [2], [0]]] * 2)
        )[0],
        "ccc_knn": lambda: ops.ccc_knn(r.unsqueeze(0), 2),
        "spectral_fwd": lambda: ops.spectral_fwd(xs, f, None),
    }
    info = C.build_info()
    isas = list(info["cpu_isa_usable"])
    if "avx512" in info["cpu_isa_variants"] and "avx2" in isas:
        isas.append("avx512-emulated")  # test hook: the AVX-512 slots' tables on a CPU without AVX-512
    results = {}
    for isa in isas:
        prev = C._set_cpu_isa(isa)
        try:
            results[isa] = {name: fn() for name, fn in calls.items()}
        finally:
            C._set_cpu_isa(prev)
    for isa, outs in results.items():
        for name, y in outs.items():
            torch.testing.assert_close(
                y, results["generic"][name], rtol=1e-12, atol=1e-12, msg=f"{name} {isa}"
            )

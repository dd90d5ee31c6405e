"""Ahead-of-time compile check of every Triton kernel family (``python -m fxkernels.aot``).

Compiles every launch configuration of every registered family for sm_80 and sm_90 (no GPU needed),
runs the triton wheel's ``ptxas -v`` on the PTX, and fails on a compile error or any register spill;
one test id per (family, kernel, arch).  Also checks that the launches the launchers make (recorded on
small CPU tensors) are exactly the AOT-compiled variants.

The compile runs once per session in a subprocess without ``TRITON_INTERPRET`` (the interpreter
replaces ``@triton.jit`` kernels, which then cannot be compiled), started in the background when
collection finishes (tests/aot_background.py).  Cold: about 15 minutes of CPU on 2 cores; reruns hit the
triton cache.  Set ``FXKERNELS_SKIP_AOT=1`` to skip.
"""

import json
import os

import pytest

pytest.importorskip("triton")

from fxkernels import aot  # noqa: E402
from tests import aot_background  # noqa: E402

if os.environ.get("FXKERNELS_SKIP_AOT", "0") not in ("", "0"):
    pytest.skip("FXKERNELS_SKIP_AOT is set", allow_module_level=True)

_CASES = [
    (aot.family_short(fam), name, arch)
    for fam in aot.FAMILIES
    for name in aot.list_kernels([fam])
    for arch in aot.ARCHS
]


@pytest.fixture(scope="module")
def aot_report():
    # started in the background by conftest.py as soon as collection finished (tests/aot_background.py)
    report, text = aot_background.report()
    if report is None:
        pytest.fail(f"fxkernels.aot produced no report:\n{text[-8000:]}")
    report["stdout"] = text
    return report


@pytest.mark.parametrize("family,kernel,arch", _CASES, ids=[f"{f}-{k}-sm{a}" for f, k, a in _CASES])
def test_compiles_without_spills(aot_report, family, kernel, arch):
    rows = [
        r
        for r in aot_report["rows"]
        if r["family"] == family and r.get("kernel") == kernel and r["arch"] == arch
    ]
    assert rows, f"no AOT rows for {family}/{kernel}/sm_{arch}"
    errors = [f"{r.get('dtype')} {r.get('config')}: {r['error']}" for r in rows if r.get("error")]
    assert not errors, "compile errors:\n" + "\n".join(errors)
    spills = [
        f"{r['dtype']} {r['config']}: {r['regs']} regs, spill stores {r['spill_stores']} B, "
        f"spill loads {r['spill_loads']} B"
        for r in rows
        if r["spill_stores"] or r["spill_loads"]
    ]
    assert not spills, "register spills:\n" + "\n".join(spills)


def test_every_spec_compiled(aot_report):
    expected = sum(len(aot.load_specs(f)) for f in aot.FAMILIES) * len(aot.ARCHS)
    assert len(aot_report["rows"]) == expected
    s = aot_report["summary"]
    assert s["errors"] == 0 and s["spills"] == 0, aot_report["stdout"][-3000:]


def test_launches_are_aot_compiled(aot_report):
    launch = aot_report["launch"]
    assert launch is not None and launch["launches"] > 0
    assert not launch["unmatched"], "launches not in aot_specs():\n" + json.dumps(
        launch["unmatched"], indent=1
    )
    assert not launch["unused"], "aot_specs() never launched:\n" + "\n".join(launch["unused"])


def test_spec_keys_unique():
    for fam in aot.FAMILIES:
        keys = [s.key() for s in aot.load_specs(fam)]
        assert len(keys) == len(set(keys)), fam


def test_parse_ptxas():
    log = (
        "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
        "ptxas info    : Function properties for k\n"
        "    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n"
        "ptxas info    : Used 168 registers, used 1 barriers, 1024 bytes smem, 400 bytes cmem[0]\n"
    )
    info = aot.parse_ptxas(log)
    assert info == {"regs": 168, "spill_stores": 12, "spill_loads": 16, "stack": 8, "static_smem": 1024}

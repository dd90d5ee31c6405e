"""The CUDA kernels of fxkernels._C compile without register spills (ptxas -v lines of the last build).

`make install` writes the compiler log to build.log with `-Xptxas -v`; every kernel nvcc compiled in that build
(all of them in a fresh build, as in CI; only the recompiled files in an incremental one) must report
0 bytes of spill stores and loads on every arch.
"""

import re
from pathlib import Path

import pytest

LOG = Path(__file__).resolve().parent.parent / "build.log"
_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+a?)'")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_entries(text: str):
    """[(kernel, arch, spill_stores, spill_loads)] from a ptxas -v log."""
    out, cur = [], None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = m.groups()
            continue
        s = _SPILL.search(line)
        if s and cur is not None:
            out.append((*cur, int(s.group(1)), int(s.group(2))))
            cur = None
    return out


def test_parser():
    text = (
        "ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_80'\n"
        "ptxas info    : Function properties for _Z3fooPf\n"
        "    16 bytes stack frame, 68 bytes spill stores, 64 bytes spill loads\n"
        "ptxas info    : Compiling entry function '_Z3barPf' for 'sm_90'\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    )
    assert ptxas_entries(text) == [("_Z3fooPf", "sm_80", 68, 64), ("_Z3barPf", "sm_90", 0, 0)]


def test_cuda_kernels_do_not_spill():
    if not LOG.exists():
        pytest.skip("no build.log (the package was not built with `make install`)")
    entries = [e for e in ptxas_entries(LOG.read_text(errors="replace")) if "fxk" in e[0]]
    if not entries:
        pytest.skip("the last build compiled no CUDA kernels (CPU-only build, or nothing to recompile)")
    spills = [f"{k} ({a}): {s} B stores, {l} B loads" for k, a, s, l in entries if s or l]
    assert not spills, f"{len(spills)} of {len(entries)} CUDA kernels spill registers:\n" + "\n".join(spills)

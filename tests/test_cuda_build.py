"""The CUDA kernels of fxkernels._C compile without register spills (the ptxas -v figures of the build).

Every nvcc call of the build keeps its ptxas lines next to its object and setup.py merges them into the
compile record build/ptxas.json after each build (tools/fxk_build.py), so the record always holds the figures of
every CUDA object of the extension, also after a rebuild that recompiled nothing. Every kernel on every arch must
report 0 bytes of spill stores and loads.
"""

import pytest

import fxkernels
from tools import fxk_build


def ptxas_entries(text: str):
    """[(kernel, arch, spill_stores, spill_loads)] from a ptxas -v log."""
    return [
        (e["kernel"], e["arch"], e["spill_stores"], e["spill_loads"]) for e in fxk_build.parse_ptxas(text)
    ]


def test_parser():
    text = (
        "ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_80'\n"
        "ptxas info    : Function properties for _Z3fooPf\n"
        "    16 bytes stack frame, 68 bytes spill stores, 64 bytes spill loads\n"
        "ptxas info    : Compiling entry function '_Z3barPf' for 'sm_90'\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    )
    assert ptxas_entries(text) == [("_Z3fooPf", "sm_80", 68, 64), ("_Z3barPf", "sm_90", 0, 0)]


def test_parser_registers_smem_and_device_functions():
    # as nvcc prints it: a non-entry function's properties must not be taken for the entry's
    text = (
        "ptxas info    : 28 bytes gmem, 224 bytes cmem[4]\n"
        "ptxas info    : Function properties for _Z6helperv\n"
        "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Compiling entry function '_ZN3fxk3ccc6kernelIfEEvPT_' for 'sm_80'\n"
        "ptxas info    : Function properties for _Z6helperv\n"
        "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Function properties for _ZN3fxk3ccc6kernelIfEEvPT_\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 114 registers, used 1 barriers, 8320 bytes smem, 424 bytes cmem[0]\n"
        "ptxas info    : Compile time = 85.474 ms\n"
    )
    (e,) = fxk_build.parse_ptxas(text)
    assert (e["kernel"], e["arch"], e["registers"], e["smem"]) == (
        "_ZN3fxk3ccc6kernelIfEEvPT_",
        "sm_80",
        114,
        8320,
    )
    assert (e["spill_stores"], e["spill_loads"]) == (0, 0)


@pytest.mark.parametrize(
    "demangled,expected",
    [
        pytest.param(
            "void fxk::corr::(anonymous namespace)::corr_fwd_kernel<c10::BFloat16, float>"
            "(c10::BFloat16 const*, long, int)",
            ("corr::corr_fwd_kernel", "bf16"),
            id="dtype-and-acc",
        ),
        pytest.param(
            "void fxk::spectral::(anonymous namespace)::fwd_kernel<double, double, 8>(fxk::Params<double>)",
            ("spectral::fwd_kernel<8>", "fp64"),
            id="non-type-argument-kept",
        ),
        pytest.param("foo_kernel", ("foo_kernel", "-"), id="not-demangled"),
    ],
)
def test_short_name(demangled, expected):
    assert fxk_build.short_name(demangled) == expected


def test_table_of_an_empty_record():
    assert fxk_build.table_lines(None) == ["  (no CUDA kernels built)"]
    assert fxk_build.table_lines({"cuda": False, "objects": {}}) == ["  (no CUDA kernels built)"]


def test_cuda_kernels_do_not_spill():
    info = fxkernels._ext.build_info()
    if not info.get("cuda"):
        pytest.skip("the extension was built without CUDA kernels (CPU-only build)")
    record = fxk_build.load_record()
    assert record is not None and record.get("cuda"), (
        f"fxkernels._C has CUDA kernels but {fxk_build.RECORD} holds no CUDA compile record: rebuild "
        "(`make reinstall`, or `pip install -e . --no-build-isolation` after removing build/)"
    )
    missing = [src for src, ents in record["objects"].items() if not ents]
    assert record["objects"] and not missing, f"no ptxas figures for {missing or 'any CUDA source'}: rebuild"
    entries = [e for ents in record["objects"].values() for e in ents if "fxk" in e["kernel"]]
    archs = {"sm_" + a.split("+")[0].replace(".", "") for a in info["cuda_archs"].split(";") if a}
    assert archs <= {e["arch"] for e in entries}, f"the record lacks archs {archs} of the build"
    spills = [
        f"{e['kernel']} ({e['arch']}): {e['spill_stores']} B stores, {e['spill_loads']} B loads"
        for e in entries
        if e["spill_stores"] or e["spill_loads"]
    ]
    assert not spills, f"{len(spills)} of {len(entries)} CUDA kernels spill registers:\n" + "\n".join(spills)

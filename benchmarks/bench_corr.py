"""Spatial-correlation benchmarks at MOL's FlowNetC shape: every fxkernels backend vs the reference
(Gram GEMM + gather), torch.compile(reference) and `loop` (one shifted product per displacement).

Shape: B = 56 frame pairs (8 clips x 7 pairs), C = 256, 16x16 maps, patch 21, dilation 2.
Run: `make bench` (or `pytest -o python_files='bench_*.py' benchmarks/bench_corr.py`).
"""

import pytest
import torch

import fxkernels
from fxkernels.ops.corr.reference import spatial_correlation_loop, spatial_correlation_ref

from .conftest import DEVICE, MEMORY, RESULTS, make_step, peak_extra_bytes, providers, run_benchmark

B, C, H, W, P, D = 56, 256, 16, 16, 21, 2
CASE = f"{B}x{C}x{H}x{W}-P{P}-d{D}"
PASSES = ["fwd", "fwd+bwd"]
_compiled = []


def make(provider):
    torch.manual_seed(0)
    t = [torch.randn(B, C, H, W, device=DEVICE) for _ in range(2)]
    if provider == "reference":
        fn = lambda a, b: spatial_correlation_ref(a, b, P, D)  # noqa: E731
    elif provider == "compile":
        if not _compiled:
            _compiled.append(torch.compile(lambda a, b: spatial_correlation_ref(a, b, P, D), dynamic=False))
        fn = _compiled[0]
    elif provider == "loop":
        fn = lambda a, b: spatial_correlation_loop(a, b, P, D)  # noqa: E731
    else:
        fn = lambda a, b: fxkernels.spatial_correlation(a, b, P, D, backend=provider)  # noqa: E731
    return fn, t


def step_fn(fn, t, pass_):
    return make_step(fn, t, pass_, (B, P * P, H, W))


CASES = [(p, pass_) for p in providers() + ["loop"] for pass_ in PASSES]


@pytest.mark.parametrize("provider,pass_", CASES)
def test_corr(benchmark, provider, pass_):
    fn, t = make(provider)
    run_benchmark(benchmark, ("corr", "spatial_correlation", CASE, pass_), provider, step_fn(fn, t, pass_))


@pytest.mark.parametrize("provider", [p for p in providers() if p != "compile" or DEVICE == "cuda"])
def test_corr_peak_memory(provider):
    """Extra peak memory of one forward+backward above the inputs (torch.compile: GPU only)."""
    fn, t = make(provider)
    step = step_fn(fn, t, "fwd+bwd")
    step()
    MEMORY[("corr", "spatial_correlation", CASE, "fwd+bwd")][provider] = peak_extra_bytes(step)


def test_report():
    """The speed-ups of this run. The issue sets no target for this op; ours: the cpu kernels at least 2x the
    reference forward and 1.5x forward+backward (measured: 4.1x and 2.1x on a loaded 2-core machine)."""
    rows = {k[-1]: v for k, v in RESULTS.items() if k[0] == "corr"}
    if DEVICE != "cpu" or "cpu" not in rows.get("fwd", {}):
        pytest.skip("the cpu backend was not benchmarked in this run")
    ratios = {f"{p} {pass_}": row["reference"] / row[p] for pass_, row in rows.items() for p in row}
    print("\ncorrelation speed-ups vs reference:", {k: round(v, 2) for k, v in ratios.items()})
    assert ratios["cpu fwd"] >= 2.0 and ratios["cpu fwd+bwd"] >= 1.5, ratios

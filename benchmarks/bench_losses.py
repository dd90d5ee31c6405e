"""Loss benchmarks: the compact softmax cross-entropy (fxkernels/ops/compact_softmax_ce/README.md), "mean"
reduction, beta = 0.2, fp32, at a small classifier head (32, 7) and a large one (4096, 1000); every fxkernels
backend vs the reference (plain PyTorch: two log-softmaxes and masked sums) and torch.compile(reference),
forward and forward+backward.

Run: `make bench` (or `pytest -o python_files='bench_*.py' benchmarks/bench_losses.py`).
No speed target is set for these cases: the run only reports the times and the speed-ups vs the reference.
"""

import pytest
import torch

import fxkernels
from fxkernels.ops.compact_softmax_ce.reference import compact_softmax_ce_ref

from .conftest import DEVICE, RESULTS, make_step, providers, run_benchmark

SHAPES = [(32, 7), (4096, 1000)]
BETA = 0.2
PASSES = ["fwd", "fwd+bwd"]
_compiled: dict = {}
_inputs: dict = {}


def inputs(N, C):
    if (N, C) not in _inputs:
        g = torch.Generator().manual_seed(0)
        z = torch.randn(N, C, generator=g).to(DEVICE)
        y = torch.randint(0, C, (N,), generator=g).to(DEVICE)
        _inputs[(N, C)] = (z, y)
    return _inputs[(N, C)]


def make(provider, y):
    if provider == "reference":
        return lambda z: compact_softmax_ce_ref(z, y, BETA, "mean")
    if provider == "compile":
        key = tuple(y.shape)
        if key not in _compiled:
            _compiled[key] = torch.compile(
                lambda z, t: compact_softmax_ce_ref(z, t, BETA, "mean"), dynamic=False
            )
        fn = _compiled[key]
        return lambda z: fn(z, y)
    return lambda z: fxkernels.compact_softmax_ce(z, y, BETA, "mean", backend=provider)


CASES = [(shape, p, pass_) for shape in SHAPES for p in providers() for pass_ in PASSES]


def case_name(shape) -> str:
    return "x".join(map(str, shape))


@pytest.mark.parametrize("shape,provider,pass_", CASES, ids=[f"{case_name(s)}-{p}-{q}" for s, p, q in CASES])
def test_compact_softmax_ce(benchmark, shape, provider, pass_):
    key = ("losses", "compact_softmax_ce", case_name(shape), pass_)
    z, y = inputs(*shape)
    step = make_step(make(provider, y), (z,), pass_, ())
    run_benchmark(benchmark, key, provider, step)


def test_report():
    """Print this run's times and speed-ups vs the reference (no target is set for these cases)."""
    rows = {k: v for k, v in RESULTS.items() if k[:2] == ("losses", "compact_softmax_ce")}
    if not rows:
        pytest.skip("no compact_softmax_ce case was benchmarked in this run")
    for key, row in rows.items():
        ref = row.get("reference")
        cells = {p: f"{t * 1e3:.3f} ms" + (f" ({ref / t:.2f}x)" if ref else "") for p, t in row.items()}
        print(f"\ncompact_softmax_ce {key[2]} {key[3]}:", cells)

"""Shared benchmark plumbing: providers, timing results of one run, and a ratio table at the end."""

from __future__ import annotations

import os
from collections import defaultdict

import pytest
import torch

import fxkernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# medians (s) of this run: RESULTS[(bench, case, pass)][provider]
RESULTS: dict = defaultdict(dict)


def providers():
    """Every fxkernels backend usable on DEVICE, plus the reference and torch.compile of it."""
    avail = fxkernels.backends()
    out = ["reference", "compile"]
    if DEVICE == "cpu":
        out += ["cpu"] if avail["cpu"] else []
    else:
        out += [b for b in ("triton", "cuda") if avail[b]]
    return out


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def run_benchmark(benchmark, key, provider, fn):
    """Time fn with pytest-benchmark, record the median and the speed-up against this run's reference."""
    benchmark.group = " / ".join(key)

    def timed():
        fn()
        sync()

    benchmark.pedantic(
        timed, rounds=int(os.environ.get("FXK_BENCH_ROUNDS", 20)), warmup_rounds=3, iterations=1
    )
    med = benchmark.stats.stats.median
    RESULTS[key][provider] = med
    ref = RESULTS[key].get("reference")
    benchmark.extra_info.update({"provider": provider, "device": DEVICE, "median_ms": med * 1e3})
    if ref is not None:
        benchmark.extra_info["speedup_vs_reference"] = ref / med


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section(f"fxkernels speed-ups vs reference (median, same run, {DEVICE})")
    for key, row in RESULTS.items():
        ref = row.get("reference")
        cells = [f"{p}={t * 1e3:.2f}ms" + (f" ({ref / t:.2f}x)" if ref else "") for p, t in row.items()]
        tr.write_line(f"{' / '.join(key)}: " + ", ".join(cells))


@pytest.fixture(scope="session")
def device():
    return DEVICE

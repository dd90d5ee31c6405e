"""Dynamic-image benchmarks at MTSTWN's shape: its RGB clip (8, 3, 30, 224, 224) fp32 with dim=2, every fxkernels
backend vs the reference (x * alpha summed over time) and torch.compile(reference), forward and forward+backward.

The op is memory-bound (one multiply-add per element read), so the same run also times `copy` (Tensor.copy_ of
a same-size buffer into a preallocated one: the machine's copy bandwidth, bytes read + written per second) and
reports the cpu kernel's achieved bandwidth (bytes of x read + y written, per second).

Run: `make bench` (or `pytest -o python_files='bench_*.py' benchmarks/bench_dynamic_image.py`).
Targets (this CPU, one run): the cpu kernel's forward reaches >= 60% of the copy bandwidth and >= 3x the
reference's speed.
"""

import pytest
import torch

import fxkernels
from fxkernels.ops.dynamic_image.reference import dynamic_image_ref

from .conftest import DEVICE, RESULTS, make_step, providers, run_benchmark

SHAPE, DIM = (8, 3, 30, 224, 224), 2  # MTSTWN: B = 8 clips of 30 RGB frames
CASE = "x".join(map(str, SHAPE)) + f"-dim{DIM}"
PASSES = ["fwd", "fwd+bwd"]
TARGET_COPY_FRACTION = 0.6
TARGET_VS_REFERENCE = 3.0
_compiled: dict = {}
_inputs: dict = {}


def clip() -> torch.Tensor:
    if "x" not in _inputs:  # one 144 MB clip shared by every case
        torch.manual_seed(0)
        _inputs["x"] = torch.randn(SHAPE, device=DEVICE)
    return _inputs["x"]


def out_shape():
    return [n for a, n in enumerate(SHAPE) if a != DIM]


def make(provider):
    if provider == "reference":
        return lambda x: dynamic_image_ref(x, DIM)
    if provider == "compile":
        if "fn" not in _compiled:
            _compiled["fn"] = torch.compile(lambda x: dynamic_image_ref(x, DIM), dynamic=False)
        return _compiled["fn"]
    return lambda x: fxkernels.dynamic_image(x, DIM, backend=provider)


CASES = [(p, pass_) for p in providers() for pass_ in PASSES]


@pytest.mark.parametrize("provider,pass_", CASES, ids=[f"{CASE}-{p}-{q}" for p, q in CASES])
def test_dynamic_image(benchmark, provider, pass_):
    key = ("dynamic_image", "dynamic_image", CASE, pass_)
    step = make_step(make(provider), (clip(),), pass_, out_shape())
    run_benchmark(benchmark, key, provider, step, rounds=10)


def test_copy_bandwidth(benchmark):
    """The machine's copy bandwidth in this run: x copied into a preallocated buffer of its size."""
    x = clip()
    dst = torch.empty_like(x)
    run_benchmark(
        benchmark, ("dynamic_image", "dynamic_image", CASE, "fwd"), "copy", lambda: dst.copy_(x), rounds=10
    )


def test_targets():
    """The cpu kernel's forward, this run: achieved bandwidth (x read + y written) >= 60% of the copy bandwidth
    (read + written) and time <= 1/3 of the reference's."""
    row = RESULTS.get(("dynamic_image", "dynamic_image", CASE, "fwd"), {})
    if DEVICE != "cpu" or not {"cpu", "reference", "copy"} <= set(row):
        pytest.skip("the targets need the cpu backend, the reference and copy benchmarked in this run")
    x_bytes = clip().nbytes
    y_bytes = x_bytes // SHAPE[DIM]
    copy_gbs = 2 * x_bytes / row["copy"] / 1e9
    cpu_gbs = (x_bytes + y_bytes) / row["cpu"] / 1e9
    got = {
        "copy GB/s": copy_gbs,
        "cpu GB/s": cpu_gbs,
        "cpu / copy bandwidth": cpu_gbs / copy_gbs,
        "cpu speed-up vs reference": row["reference"] / row["cpu"],
    }
    if "compile" in row:
        got["cpu speed-up vs compile"] = row["compile"] / row["cpu"]
    print("\ndynamic_image cpu forward:", {k: round(v, 2) for k, v in got.items()})
    assert got["cpu / copy bandwidth"] >= TARGET_COPY_FRACTION, got
    assert got["cpu speed-up vs reference"] >= TARGET_VS_REFERENCE, got

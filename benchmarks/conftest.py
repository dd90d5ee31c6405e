"""Shared benchmark plumbing: providers, timing results of one run, and a ratio table at the end."""

from __future__ import annotations

import os
import weakref
from collections import defaultdict

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import fxkernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# medians (s) of this run: RESULTS[(bench, case, pass)][provider]
RESULTS: dict = defaultdict(dict)
# extra peak memory (bytes) of this run: MEMORY[(bench, case, pass)][provider]
MEMORY: dict = defaultdict(dict)


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


def run_benchmark(benchmark, key, provider, fn, rounds=None, warmup_rounds=3):
    """Time fn with pytest-benchmark, record the median and the speed-up against this run's reference."""
    benchmark.group = " / ".join(key)

    def timed():
        fn()
        sync()

    rounds = rounds or int(os.environ.get("FXK_BENCH_ROUNDS", 20))
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    med = benchmark.stats.stats.median
    RESULTS[key][provider] = med
    ref = RESULTS[key].get("reference")
    benchmark.extra_info.update({"provider": provider, "device": DEVICE, "median_ms": med * 1e3})
    if ref is not None:
        benchmark.extra_info["speedup_vs_reference"] = ref / med


def run_interleaved(key, steps: dict, rounds: int, warmup_rounds: int = 1) -> dict:
    """Time several providers' steps (provider -> fn) round by round, A B A B ..., after warm-up, and record
    each provider's median in RESULTS[key]: for steps of seconds, where a change of machine load between one
    provider's rounds and the next's would decide the ratio. Returns provider -> the round times (s)."""
    import statistics
    import time

    for _ in range(warmup_rounds):
        for fn in steps.values():
            fn()
            sync()
    times: dict = {p: [] for p in steps}
    for _ in range(rounds):
        for p, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[p].append(time.perf_counter() - t0)
    for p, ts in times.items():
        RESULTS[key][p] = statistics.median(ts)
    return times


def make_step(fn, inputs, pass_: str, grad_shape):
    """One timed step: fn(*inputs) under no_grad ("fwd"), or a forward + backward of one fixed random upstream
    gradient of grad_shape, the inputs' .grad reset each time ("fwd+bwd")."""
    if pass_ == "fwd":

        def step():
            with torch.no_grad():
                fn(*inputs)

        return step
    leaves = [a.detach().requires_grad_(True) for a in inputs]
    g = torch.randn(grad_shape, device=DEVICE)

    def step():
        for a in leaves:
            a.grad = None
        fn(*leaves).backward(g)

    return step


class _TensorBytes(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created by dispatcher ops (every aten op and every
    fxkernels op's outputs) while active. Temporaries inside one C++ op and memory that bypasses the
    dispatcher (torch.compile's generated code) are not seen: CPU only, a "tracemalloc" for tensors."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.ptrs: set = set()

    def _free(self, ptr, n):
        self.ptrs.discard(ptr)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # views of the inputs (permute, expand, detach, ...) and meta tensors allocate nothing
        ins = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                if st.data_ptr() in ins:
                    continue
                ptr, n = st.data_ptr(), st.nbytes()
                if n and ptr not in self.ptrs:
                    self.ptrs.add(ptr)
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(st, self._free, ptr, n)
        return out


def peak_extra_bytes(fn) -> int:
    """Peak memory fn allocates above what exists when it starts: max_memory_allocated on GPU, the tensor
    bytes of dispatcher ops on CPU (see _TensorBytes)."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    mode = _TensorBytes()
    with mode:
        fn()
    return mode.peak


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if MEMORY:
        tr.section(f"fxkernels extra peak memory (same run, {DEVICE})")
        for key, row in MEMORY.items():
            ref = row.get("reference")
            cells = [
                f"{p}={b / 2**20:.1f}MiB" + (f" ({b / ref:.2f} of reference)" if ref else "")
                for p, b in row.items()
            ]
            tr.write_line(f"{' / '.join(key)}: " + ", ".join(cells))
    if not RESULTS:
        return
    tr.section(f"fxkernels speed-ups vs reference (median, same run, {DEVICE})")
    for key, row in RESULTS.items():
        ref = row.get("reference")
        cells = [f"{p}={t * 1e3:.2f}ms" + (f" ({ref / t:.2f}x)" if ref else "") for p, t in row.items()]
        tr.write_line(f"{' / '.join(key)}: " + ", ".join(cells))


@pytest.fixture(scope="session")
def device():
    return DEVICE

"""`python -m fxkernels`: versions, build configuration and per-op backends.
`python -m fxkernels demo`: runs every op on every available backend at its model's shape, checks outputs and
gradients against the reference and prints a speed table (medians of interleaved rounds, after warm-up)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

from . import _backend, _ext
from ._families import FAMILIES
from .ops import OP_FAMILIES
from .ops.opkit import DemoCase
from .testing import errors

MIN_SAMPLE_MS = 1.0  # calls shorter than this are repeated within one timed sample
NOISY_IQR = 0.25  # above this spread of a backend's rounds the demo says the times are noisy


def info() -> None:
    try:
        import triton

        triton_version = triton.__version__
    except Exception as e:  # noqa: BLE001
        triton_version = f"not importable ({type(e).__name__})"
    b = _ext.build_info()
    print(f"fxkernels {importlib.import_module('fxkernels').__version__}  python {platform.python_version()}")
    print(
        f"torch     {torch.__version__} (CUDA build: {torch.version.cuda}, "
        f"GPU visible: {torch.cuda.is_available()})"
    )
    print(f"triton    {triton_version}  (TRITON_INTERPRET={_backend.triton_interpret()})")
    if b.get("loaded"):
        print(f"_C        compiler {b.get('compiler')}, OpenMP {b.get('openmp')}")
        print(
            f"          CUDA kernels compiled: {b.get('cuda')} "
            f"(CUDA {b.get('cuda_version')}, archs {b.get('cuda_archs')})"
        )
        print(f"          kernels: {', '.join(b.get('kernels', []))}")
    else:
        print(f"_C        not available: {b.get('error')}")
    print(f"backends  {_backend.backends()}  default: {_backend.default_backend()}")
    print("per op (backends usable in this process):")
    for op, mod in OP_FAMILIES.items():
        kernels = importlib.import_module(mod).KERNELS
        avail = [n for n in _backend.BACKENDS[1:] if _backend.backend_available(n, op, kernels)]
        print(f"  {op:<20} {', '.join(avail)}")


# ------------------------------------------------------------------------------------------------ timing
def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, n: int, clock, sync) -> float:
    sync()
    t0 = clock()
    for _ in range(n):
        fn()
    sync()
    return (clock() - t0) * 1e3


def measure(
    fns: dict,
    rounds: int,
    warmup: int = 1,
    min_ms: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
    sync=_sync,
) -> dict:
    """Wall time in ms per call of every callable in `fns`, `rounds` samples each.

    All callables run `warmup` untimed rounds first. Then each round calls every callable once, the order
    rotated by one each round, so a change of machine load or clock speed hits every provider alike instead
    of whichever ran last. With `min_ms > 0`, a callable whose last warm-up call took less than that runs
    back to back enough times per sample to last about `min_ms` (launch-bound GPU kernels), and its sample
    is the mean over those calls. Returns {key: [ms per call, one per round]}.
    """
    keys = list(fns)
    inner = dict.fromkeys(keys, 1)
    for w in range(warmup):
        for k in keys:
            t = _timed(fns[k], 1, clock, sync)
            if w == warmup - 1 and min_ms > 0:
                inner[k] = 1000 if t <= 0 else max(1, min(1000, math.ceil(min_ms / t)))
    samples = {k: [] for k in keys}
    for r in range(rounds):
        s = r % len(keys) if keys else 0
        for k in keys[s:] + keys[:s]:
            samples[k].append(_timed(fns[k], inner[k], clock, sync) / inner[k])
    return samples


def spread(ms: list) -> float:
    """Interquartile range relative to the median (0.1 = 10 %): how much one provider's rounds disagree."""
    if len(ms) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(ms)


# ------------------------------------------------------------------------------------------------- cases
# Each family's `fxkernels/ops/<family>/demo.py` defines demo_cases(device, tiny) -> [DemoCase] (op kit).
Case = DemoCase


def cases(device, tiny: bool = False) -> list:
    """One list of DemoCases per family of fxkernels/_families.py that has a demo module."""
    out = []
    for fam in FAMILIES:
        name = f"{__package__}.ops.{fam}.demo"
        if importlib.util.find_spec(name) is not None:
            out.append(importlib.import_module(name).demo_cases(device, tiny))
    return out


# -------------------------------------------------------------------------------------------------- demo
def _providers(case: Case, device: str) -> list:
    kinds = [
        n
        for n in ("reference", "cpu", "triton", "cuda")
        if _backend.backend_available(n, case.name, case.kernels)
    ]
    if device == "cpu" and "triton" in kinds:
        kinds.remove("triton")  # the interpreter is for correctness tests, not a speed table
    return kinds


def _check(case: Case, kinds: list, g: torch.Tensor) -> dict:
    """One forward + backward per provider (also its first warm-up); max relative RMS error vs the reference
    over the output and every input gradient."""
    base, err = None, {}
    for be in kinds:
        leaves = [t.detach().clone().requires_grad_(True) for t in case.inputs]
        y = case.fn(be, leaves)
        y.backward(g)
        res = [y.detach()] + [t.grad for t in leaves]
        if base is None:  # kinds[0] is the reference
            base, err[be] = res, 0.0
            continue
        err[be] = max(errors(a, b)[1] for a, b in zip(res, base) if b is not None)  # unused inputs: None
    return err


def _timed_fns(case: Case, kinds: list, g: torch.Tensor) -> dict:
    fns = {}
    for be in kinds:
        leaves = [t.detach().clone().requires_grad_(True) for t in case.inputs]

        def fwd(be=be, leaves=leaves):
            with torch.no_grad():
                case.fn(be, leaves)

        def fwd_bwd(be=be, leaves=leaves):
            for t in leaves:
                t.grad = None
            case.fn(be, leaves).backward(g)

        fns[(be, "fwd")], fns[(be, "fwd+bwd")] = fwd, fwd_bwd
    return fns


def _load() -> str:
    """The machine's 1-minute load average against its CPU count, e.g. "load 5.6 on 2 CPUs"."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    try:
        return f"load {os.getloadavg()[0]:.1f} on {cpus} CPUs"
    except (AttributeError, OSError):
        return f"{cpus} CPUs"


def demo(rounds: int = 7, warmup: int = 1, tiny: bool = False) -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    what = "tiny shapes (--tiny)" if tiny else "its model's shape (MOL, MTSTWN)"
    print(
        f"fxkernels demo on {device} ({torch.get_num_threads()} threads, {_load()}): every op at {what}, "
        "float32, random data"
    )
    all_cases = [c for group in cases(device, tiny) for c in group]
    # phase 1: correctness of every provider and warm-up of every case (first calls pay for library loading,
    # thread-pool start, kernel compilation, first-touch page faults)
    plans, ok = [], True
    for case in all_cases:
        kinds = _providers(case, device)
        with torch.no_grad():
            y = case.fn("reference", case.inputs)
        g = torch.randn_like(y)  # one upstream gradient for every provider
        err = _check(case, kinds, g)
        ok &= all(e < 1e-4 for e in err.values())
        fns = _timed_fns(case, kinds, g)
        for _ in range(warmup):
            for f in fns.values():
                f()
        plans.append((case, kinds, err, fns))
    # phase 2: timing, providers interleaved round by round (one more untimed round right before)
    rows = []
    for case, kinds, err, fns in plans:
        rows += table_rows(case, kinds, err, measure(fns, rounds, warmup=1, min_ms=MIN_SAMPLE_MS))
    _print_table(rows, rounds)
    worst = max(r[7] for r in rows)
    if worst > NOISY_IQR:
        print(
            f"note: a backend's rounds disagree by up to {100 * worst:.0f}% (IQR/median; {_load()} now): "
            "the machine is busy, so the times are noisy; rerun on a quiet machine or with more --rounds"
        )
    print("all backends match the reference" if ok else "MISMATCH against the reference")
    return 0 if ok else 1


def table_rows(case: Case, kinds: list, err: dict, samples: dict) -> list:
    """One row per provider: medians of its rounds, speed-ups = reference median / provider median."""
    med = {k: statistics.median(v) for k, v in samples.items()}
    rf, rfb = med[("reference", "fwd")], med[("reference", "fwd+bwd")]
    rows = []
    for be in kinds:
        tf, tfb = med[(be, "fwd")], med[(be, "fwd+bwd")]
        iqr = max(spread(samples[(be, "fwd")]), spread(samples[(be, "fwd+bwd")]))
        rows.append((case.name, case.shape, be, tf, tfb, rf / tf, rfb / tfb, iqr, err[be]))
    return rows


def _print_table(rows: list, rounds: int) -> None:
    wn = max(len("op"), *(len(r[0]) for r in rows))
    ws = max(len("shape"), *(len(r[1]) for r in rows))
    print(
        f"ms per call: median of {rounds} rounds after warm-up; each round runs every backend once, in "
        f"rotating order (calls under {MIN_SAMPLE_MS:g} ms repeated within the round)"
    )
    print(
        "x: reference median / backend median; IQR: the backend's interquartile range / median "
        "(the larger of fwd, fwd+bwd)"
    )
    print(
        f"{'op':<{wn}}  {'shape':<{ws}}  {'backend':<9} {'fwd ms':>8} {'fwd+bwd ms':>11} "
        f"{'fwd x':>7} {'f+b x':>7} {'IQR':>5} {'max rel RMS err':>16}"
    )
    for name, shape, be, tf, tfb, xf, xfb, iqr, err in rows:
        print(
            f"{name:<{wn}}  {shape:<{ws}}  {be:<9} {tf:8.3f} {tfb:11.3f} {xf:7.2f} {xfb:7.2f} "
            f"{100 * iqr:4.0f}% {err:16.2e}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fxkernels",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="info", choices=["info", "demo"], help="what to run")
    parser.add_argument(
        "--rounds", type=int, default=7, help="demo: timed rounds per op (the table shows medians)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="demo: untimed calls of every op and backend after its correctness check "
        "(plus one untimed round right before the timed ones)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="demo: tiny shapes (a quick self-check, not a benchmark)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    info()
    if args.command == "demo":
        print()
        return demo(args.rounds, args.warmup, args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())

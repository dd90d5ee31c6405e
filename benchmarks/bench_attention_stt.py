"""STT's divided space-time attention at B = 32 (16 frames of 7x7 patches, 8 heads of 64), fp32:

- `attention` at the two shapes of every block, forward and forward+backward (gradients for q, k, v):
  spatial (B*16, 8, 49, 49, 64) per frame, temporal (B*49, 8, 17, 17, 64) per patch; providers reference
  (plain PyTorch: matmul, softmax, matmul), compile (torch.compile of it), sdpa (torch SDPA, its flash CPU
  kernel), cpu (the packed short-sequence path; triton on GPU);
- one `fxkernels.nn.DividedSpaceTimeBlock` (d 512) forward+backward at B = 32: the fused block (backend "cpu"
  / "triton") vs its reference-backend twin, torch.compile of the twin, and gemm-floor: the block's Linear
  layers alone (qkv and proj of both attentions, the MLP's two layers) on token matrices of the same sizes,
  forward+backward: the time no implementation built on these GEMMs can beat.

Run: `make bench` or `pytest -o python_files='bench_*.py' benchmarks/bench_attention_stt.py`; FXK_BENCH_QUICK=1
runs the spatial shape only and skips the block.
Targets (test_targets, this CPU, one run): the packed attention at least 1.5x the faster of SDPA and the
reference, forward+backward, at both shapes; the fused block at least 1.5x its reference twin and faster than
torch.compile of it. A block target that gemm-floor shows out of reach is reported as xfail with the numbers.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels.nn import DividedSpaceTimeBlock
from fxkernels.ops.attention.reference import attention_ref

from .conftest import DEVICE, RESULTS, make_step, providers, run_interleaved

QUICK = os.environ.get("FXK_BENCH_QUICK", "0") == "1"
B, FRAMES, PATCHES, DIM, HEADS = 32, 16, 49, 512, 8
HD = DIM // HEADS
# name: (sequences, length)
SHAPES = {"stt-spatial": (B * FRAMES, PATCHES), "stt-temporal": (B * PATCHES, FRAMES + 1)}
if QUICK:
    SHAPES = {"stt-spatial": SHAPES["stt-spatial"]}
PASSES = ["fwd", "fwd+bwd"]
TARGET_ATT, TARGET_BLOCK = 1.5, 1.5
_compiled: dict = {}


def attention_providers():
    fused = [p for p in providers() if p not in ("reference", "compile")]
    return ["reference", "compile", "sdpa"] + fused


def make_attention(provider, case):
    torch.manual_seed(0)
    S, L = SHAPES[case]
    q, k, v = (torch.randn(S, HEADS, L, HD, device=DEVICE) for _ in range(3))
    if provider == "reference":
        fn = attention_ref
    elif provider == "compile":
        fn = _compiled.setdefault(case, torch.compile(attention_ref, dynamic=False))
    elif provider == "sdpa":
        fn = F.scaled_dot_product_attention
    else:
        fn = lambda q, k, v: fxkernels.attention(q, k, v, backend=provider)  # noqa: E731
    return fn, (q, k, v)


ATT_CASES = [(c, s) for c in SHAPES for s in PASSES]
ATT_ROUNDS = 9


@pytest.mark.parametrize("case,pass_", ATT_CASES, ids=[f"{c}-{s}" for c, s in ATT_CASES])
def test_stt_attention(case, pass_):
    """Every provider at one shape and pass, round by round (A B C D A B ...) after a warm-up: calls of 50 to
    250 ms on a shared 2-core machine, where timing one provider after the other let load changes decide."""
    S, L = SHAPES[case]
    key = ("attention", "stt attention", f"{case} ({S}, {HEADS}, {L}, {L}, {HD})", pass_)
    steps = {}
    for p in attention_providers():
        fn, t = make_attention(p, case)
        steps[p] = make_step(fn, t, pass_, t[0].shape)
    times = run_interleaved(key, steps, ATT_ROUNDS)
    print(f"\n{' / '.join(key)} (ms, {ATT_ROUNDS} interleaved rounds):",
          {p: round(1e3 * min(ts), 1) for p, ts in times.items()}, "(best)")  # fmt: skip


# ---------------------------------------------------------------------------------------------- block
BLOCK_KEY = ("attention", "DividedSpaceTimeBlock", f"B{B} F{FRAMES} N{PATCHES} d{DIM}", "fwd+bwd")


def _block_step(provider):
    torch.manual_seed(0)
    backend = "reference" if provider in ("reference", "compile") else provider
    block = DividedSpaceTimeBlock(DIM, HEADS, backend=backend).to(DEVICE).train()
    fwd = torch.compile(block, dynamic=False) if provider == "compile" else block
    x = torch.randn(B, 1 + FRAMES * PATCHES, DIM, device=DEVICE, requires_grad=True)
    g = torch.randn_like(x)

    def step():
        block.zero_grad(set_to_none=True)
        x.grad = None
        fwd(x, FRAMES).backward(g)

    return step


def _gemm_floor_step():
    """The block's GEMMs alone: each Linear's forward and backward on a token matrix of its size."""
    torch.manual_seed(0)
    space, time_ = B * FRAMES * PATCHES, B * PATCHES * (FRAMES + 1)
    tokens = 1 + FRAMES * PATCHES
    layers = [  # (rows, in, out)
        (space, DIM, 3 * DIM), (space, DIM, DIM), (time_, DIM, 3 * DIM), (time_, DIM, DIM),
        (B * tokens, DIM, 4 * DIM), (B * tokens, 4 * DIM, DIM),
    ]  # fmt: skip
    args = []
    for rows, i, o in layers:
        x = torch.randn(rows, i, device=DEVICE, requires_grad=True)
        w = torch.nn.Parameter(0.02 * torch.randn(o, i, device=DEVICE))
        b = torch.nn.Parameter(torch.zeros(o, device=DEVICE))
        args.append((x, w, b, torch.randn(rows, o, device=DEVICE)))

    def step():
        for x, w, b, g in args:
            x.grad = w.grad = b.grad = None
            F.linear(x, w, b).backward(g)

    return step


BLOCK_ROUNDS = 3


@pytest.mark.skipif(QUICK, reason="FXK_BENCH_QUICK=1")
def test_divided_block():
    """DividedSpaceTimeBlock fwd+bwd at B = 32: the providers alternate round by round (steps of seconds)."""
    fused = [p for p in providers() if p not in ("reference", "compile")]
    steps = {p: _block_step(p) for p in ["reference", "compile", *fused]}
    steps["gemm-floor"] = _gemm_floor_step()
    times = run_interleaved(BLOCK_KEY, steps, BLOCK_ROUNDS)
    print(f"\nDividedSpaceTimeBlock fwd+bwd (s, {BLOCK_ROUNDS} interleaved rounds):",
          {p: [round(t, 3) for t in ts] for p, ts in times.items()})  # fmt: skip


def test_divided_block_profile():
    """The fused block's top ops (printed; the closing note quotes it)."""
    fused = [p for p in providers() if p not in ("reference", "compile")]
    if QUICK or not fused:
        pytest.skip("needs a fused backend and the full run")
    step = _block_step(fused[0])
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print("\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


# --------------------------------------------------------------------------------------------- targets
def _sgemm_rate() -> float:
    """FLOP/s of a 1024^3 fp32 torch.mm on this machine now (the best GEMM rate, for the FLOP floor)."""
    a, b = torch.randn(1024, 1024, device=DEVICE), torch.randn(1024, 1024, device=DEVICE)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best


def test_targets():
    """The STT issue's targets on this run (CPU)."""
    fused = "cpu" if DEVICE == "cpu" else "triton"
    rows = {c: RESULTS.get(k, {}) for c, k in _att_keys().items()}
    if not any(fused in r for r in rows.values()):
        pytest.skip(f"the {fused} backend was not benchmarked in this run")
    rate = _sgemm_rate()
    failures, report, unreachable = [], {}, []
    for case, row in rows.items():
        if fused not in row or "sdpa" not in row or "reference" not in row:
            continue
        S, L = SHAPES[case]
        # useful FLOPs of fwd+bwd: 2 GEMMs forward, 5 backward, each 2 S L L HD per head
        floor = 7 * 2 * S * HEADS * L * L * HD / rate
        best_peer = min(row["sdpa"], row["reference"])
        r = best_peer / row[fused]
        report[f"{case} best peer/{fused}"] = r
        report[f"{case} best peer/FLOP floor"] = best_peer / floor
        if r < TARGET_ATT:
            failures.append(f"{case}: {fused} fwd+bwd {r:.2f}x the faster of SDPA and the reference "
                            f"(target {TARGET_ATT}; FLOPs at the sgemm rate allow {best_peer / floor:.1f}x)")  # fmt: skip
    blk = RESULTS.get(BLOCK_KEY, {})
    if fused in blk and "reference" in blk:
        r = blk["reference"] / blk[fused]
        report[f"block reference/{fused}"] = r
        if "gemm-floor" in blk:
            best = blk["reference"] / blk["gemm-floor"]
            report["block reference/gemm-floor (best possible)"] = best
            if r < TARGET_BLOCK and best < TARGET_BLOCK:
                unreachable.append(
                    f"block {TARGET_BLOCK}x its reference twin: the GEMMs alone allow {best:.2f}x"
                )
        if r < TARGET_BLOCK and not unreachable:
            failures.append(f"block: {fused} {r:.2f}x its reference twin (target {TARGET_BLOCK})")
        if "compile" in blk:
            rc = blk["compile"] / blk[fused]
            report[f"block compile/{fused}"] = rc
            if rc < 1.0:
                failures.append(f"block: {fused} {rc:.2f}x torch.compile of the twin (target > 1)")
    print("\nSTT targets:", {k: round(v, 2) for k, v in report.items()})
    assert not failures, "; ".join(failures)
    if unreachable:
        pytest.xfail("out of reach on this machine: " + "; ".join(unreachable))


def _att_keys() -> dict:
    return {
        c: ("attention", "stt attention", f"{c} ({S}, {HEADS}, {L}, {L}, {HD})", "fwd+bwd")
        for c, (S, L) in SHAPES.items()
    }

"""`python -m fxkernels demo` (README's first command ends in it): it runs, finds every backend matching the
reference, prints the shapes it times, and its speed-ups are ratios of medians of interleaved rounds."""

import os
import re
import subprocess
import sys

import pytest

from fxkernels.__main__ import Case, cases, measure, table_rows

# every family's demo cases (fxkernels/ops/<family>/demo.py), by name, with the shape each prints under --tiny
TINY_SHAPES = {c.name: c.shape for group in cases("cpu", tiny=True) for c in group}
CASES = tuple(TINY_SHAPES)
ROW = re.compile(
    r"^(?P<op>.+?)\s{2,}(?P<shape>.+?)\s{2,}(?P<be>reference|cpu|triton|cuda)\s+(?P<tf>[\d.]+)\s+(?P<tfb>[\d.]+)"
    r"\s+(?P<xf>[\d.]+)\s+(?P<xfb>[\d.]+)\s+(?P<iqr>\d+)%\s+(?P<err>\S+)$"
)


def _run(*args, timeout, **env):
    out = subprocess.run(
        [sys.executable, "-m", "fxkernels", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_measure_warms_up_then_interleaves_rounds():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("a", "b", "c")}
    samples = measure(fns, rounds=4, warmup=2, sync=lambda: None)
    assert calls[:6] == ["a", "b", "c"] * 2  # every provider warmed up before the first timed call
    timed = calls[6:]
    assert [timed[i : i + 3] for i in range(0, 12, 3)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}


def test_measure_times_each_call_with_the_clock():
    # a fake clock that a call of "slow" advances by 5 ms and one of "fast" by 1 ms
    now = [0.0]
    cost = {"slow": 5e-3, "fast": 1e-3}
    fns = {k: (lambda k=k: now.__setitem__(0, now[0] + cost[k])) for k in cost}
    samples = measure(fns, rounds=3, warmup=1, clock=lambda: now[0], sync=lambda: None)
    assert samples["slow"] == pytest.approx([5.0] * 3) and samples["fast"] == pytest.approx([1.0] * 3)


def test_measure_repeats_short_calls_and_reports_per_call_time():
    now, calls = [0.0], {"short": 0, "long": 0}
    cost = {"short": 0.25e-3, "long": 4e-3}

    def call(k):
        calls[k] += 1
        now[0] += cost[k]

    fns = {k: (lambda k=k: call(k)) for k in cost}
    samples = measure(fns, rounds=2, warmup=1, min_ms=1.0, clock=lambda: now[0], sync=lambda: None)
    assert calls == {"short": 1 + 2 * 4, "long": 1 + 2 * 1}  # 0.25 ms calls: 4 per sample of >= 1 ms
    assert samples["short"] == pytest.approx([0.25] * 2) and samples["long"] == pytest.approx([4.0] * 2)


def test_speedups_are_ratios_of_medians():
    # the reference has one outlier round (a loaded machine): the median ratio is 10 / 2 = 5, while the
    # ratio of means would be about 145 and the ratio of minima 4.5
    samples = {
        ("reference", "fwd"): [9.0, 1000.0, 10.0],
        ("reference", "fwd+bwd"): [30.0, 20.0, 25.0],
        ("cpu", "fwd"): [2.0, 3.0, 2.0],
        ("cpu", "fwd+bwd"): [4.0, 5.0, 100.0],
    }
    case = Case("op", "x 1x2", (), None, {})
    rows = table_rows(case, ["reference", "cpu"], {"reference": 0.0, "cpu": 1e-7}, samples)
    ref, cpu = rows
    assert ref[:5] == ("op", "x 1x2", "reference", 10.0, 25.0) and ref[5:7] == (1.0, 1.0)
    assert cpu[:5] == ("op", "x 1x2", "cpu", 2.0, 5.0)
    assert cpu[5] == pytest.approx(5.0) and cpu[6] == pytest.approx(5.0)
    assert cpu[8] == 1e-7


def test_demo_rejects_bad_rounds():
    out = subprocess.run(
        [sys.executable, "-m", "fxkernels", "demo", "--rounds", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--rounds must be >= 1" in out.stderr


def test_demo_tiny_prints_shapes_and_median_ratios():
    # one thread: the format is under test, not the speed (two threads on a busy machine wait for each other)
    stdout = _run("--tiny", "--rounds", "3", "--warmup", "1", timeout=300, OMP_NUM_THREADS="1")
    assert "all backends match the reference" in stdout
    assert "median of 3 rounds" in stdout
    rows = [m.groupdict() for m in map(ROW.match, stdout.splitlines()) if m]
    assert {r["op"] for r in rows} == set(CASES), stdout
    assert {"circular_conv (V)", "spectral_filter", "attention", "attention_pool"} <= set(CASES)
    for r in rows:
        assert r["shape"] == TINY_SHAPES[r["op"]], r
        ref = next(q for q in rows if q["op"] == r["op"] and q["be"] == "reference")
        for t, x in (("tf", "xf"), ("tfb", "xfb")):
            # the printed speed-up is reference median / backend median, up to the printed rounding
            a, b, h = float(ref[t]), float(r[t]), 0.0005
            lo, hi = (a - h) / (b + h) - 0.005, (a + h) / max(b - h, 1e-9) + 0.005
            assert lo <= float(r[x]) <= hi, (r, ref)


@pytest.mark.slow
def test_demo_runs_and_matches():
    stdout = _run(timeout=900)
    assert "all backends match the reference" in stdout
    for case in CASES:
        assert case in stdout, stdout
    assert "x 32x128x16x16" in stdout and "f1,f2 56x256x16x16, P=21 d=2" in stdout

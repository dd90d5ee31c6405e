"""Comparison helpers shared by the tests, the demo and the benchmarks."""

from __future__ import annotations

import torch

# One tolerance row per dtype: a backend's output vs the reference evaluated in float64 on the same inputs.
#   rms:  bound on the relative RMS error ||a - b|| / ||b||
#   atol/rtol: elementwise bound |a - b| <= atol + rtol * max|b| (catches a few wrong elements that RMS hides)
TOLERANCES = {
    torch.float64: {"rms": 1e-12, "atol": 1e-12, "rtol": 1e-10},
    torch.float32: {"rms": 1e-5, "atol": 1e-5, "rtol": 1e-4},
    torch.float16: {"rms": 2e-3, "atol": 1e-3, "rtol": 1e-2},
    torch.bfloat16: {"rms": 1.5e-2, "atol": 1e-2, "rtol": 6e-2},
}


def errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max-abs error, relative RMS error) of `actual` against `expected`, computed in float64."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    diff = a - e
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    denom = e.norm().item()
    rel_rms = diff.norm().item() / denom if denom > 0 else diff.norm().item()
    return max_abs, rel_rms


def assert_close(actual, expected, dtype=None, name: str = "output", scale: float = 1.0):
    """Assert `actual` matches `expected` within the tolerance row of `dtype` (default: actual's dtype).

    Reports max-abs and relative RMS error; NaN/inf must appear at exactly the same places.
    `scale` loosens the row (e.g. for long reductions).
    """
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{name}: one of actual/expected is None"
        return
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    )
    tol = TOLERANCES[dtype or actual.dtype]
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad_a, bad_e = ~torch.isfinite(a), ~torch.isfinite(e)
    if bad_a.any() or bad_e.any():
        assert torch.equal(bad_a, bad_e), (
            f"{name}: non-finite values differ ({int(bad_a.sum())} in actual, {int(bad_e.sum())} expected)"
        )
        assert (
            torch.equal(a[bad_a], e[bad_e]) or torch.isnan(a[bad_a]).all() == torch.isnan(e[bad_e]).all()
        ), f"{name}: NaN/inf kinds differ"
        a, e = a[~bad_a], e[~bad_e]
    max_abs, rel_rms = errors(a, e)
    ref_max = e.abs().max().item() if e.numel() else 0.0
    bound = scale * (tol["atol"] + tol["rtol"] * ref_max)
    ok = rel_rms <= scale * tol["rms"] and max_abs <= bound
    assert ok, (
        f"{name}: max-abs error {max_abs:.3e} (bound {bound:.3e}), relative RMS error {rel_rms:.3e} "
        f"(bound {scale * tol['rms']:.3e}), dtype {dtype or actual.dtype}, shape {tuple(actual.shape)}"
    )

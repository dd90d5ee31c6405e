"""README's first command ends in `python -m fxkernels demo`: it must run and find every backend matching."""

import os
import subprocess
import sys


def test_demo_runs_and_matches():
    out = subprocess.run(
        [sys.executable, "-m", "fxkernels", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "all backends match the reference" in out.stdout
    for case in (
        "circular_conv2d (VH)",
        "CCC channel (knn+conv)",
        "CCC spatial (knn+conv)",
        "spectral_filter",
    ):
        assert case in out.stdout, out.stdout

"""The README's quickstart code runs as written."""

import re
from pathlib import Path

import pytest

import fxkernels


def test_readme_quickstart_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python block"
    if not fxkernels.backends()["cpu"]:
        pytest.skip("the quickstart asks for backend='cpu'")
    ns = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)
    assert ns["y"].shape == ns["y_ref"].shape == (2, 64, 16, 16)
    assert (ns["y"] - ns["y_ref"]).abs().max().item() < 1e-3
    want = fxkernels.spectral_filter_ref(ns["v"], ns["filt"], ns["v"])
    assert (ns["v_out"] - want).abs().max().item() < 1e-4
    assert ns["z"].shape == (2, 48, 15, 14, 14)

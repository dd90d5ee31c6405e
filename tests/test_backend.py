"""Backend selection, the extension loader and the `python -m fxkernels` command."""

import os
import subprocess
import sys

import pytest
import torch

import fxkernels
from fxkernels._backend import resolve
from fxkernels.ops.fcc import KERNELS


def run_py(code, **env_over):
    env = dict(os.environ)
    env.update(env_over)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_backends_dict():
    b = fxkernels.backends()
    assert set(b) == {"reference", "triton", "cuda", "cpu"} and b["reference"] is True
    assert all(isinstance(v, bool) for v in b.values())
    if not torch.cuda.is_available():
        assert b["cuda"] is False


def test_use_backend_nests_and_restores():
    assert fxkernels.default_backend() == "auto"
    with fxkernels.use_backend("reference"):
        assert fxkernels.default_backend() == "reference"
        assert resolve("auto", torch.device("cpu"), "circular_conv", KERNELS) == "reference"
        with fxkernels.use_backend("auto"):
            assert fxkernels.default_backend() == "auto"
        assert fxkernels.default_backend() == "reference"
    assert fxkernels.default_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        with fxkernels.use_backend("fast"):
            pass


def test_auto_on_cpu_picks_cpu_kernels_when_built():
    want = "cpu" if fxkernels.backends()["cpu"] else "reference"
    assert resolve("auto", torch.device("cpu"), "circular_conv", KERNELS) == want


def test_explicit_backend_is_used():
    # an explicit backend overrides a use_backend default
    with fxkernels.use_backend("reference"):
        assert resolve("reference", torch.device("cpu"), "circular_conv", KERNELS) == "reference"
        if fxkernels.backends()["cpu"]:
            assert resolve("cpu", torch.device("cpu"), "circular_conv", KERNELS) == "cpu"


def test_env_default_backend():
    out = run_py("import fxkernels; print(fxkernels.default_backend())", FXKERNELS_BACKEND="reference")
    assert out.stdout.strip().endswith("reference"), out.stderr
    bad = run_py("import fxkernels", FXKERNELS_BACKEND="gpu")
    assert bad.returncode != 0 and "FXKERNELS_BACKEND must be one of" in bad.stderr


def test_import_without_extension_warns_once_and_falls_back():
    code = (
        "import sys, warnings\n"
        "sys.modules['fxkernels._C'] = None  # makes `import fxkernels._C` fail\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, fxkernels\n"
        "    import fxkernels.ops.fcc\n"
        "msgs = [str(x.message) for x in w if 'fxkernels._C' in str(x.message)]\n"
        "print(len(msgs), fxkernels.backends()['cpu'])\n"
        "y = fxkernels.circular_conv(torch.randn(1, 2, 4, 4), torch.randn(2, 4))\n"
        "print(tuple(y.shape))\n"
        "try:\n"
        "    fxkernels.circular_conv(torch.randn(1, 2, 4, 4), torch.randn(2, 4), backend='cpu')\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
    )
    out = run_py(code)
    lines = out.stdout.splitlines()
    assert lines[0] == "1 False", out.stdout + out.stderr
    assert lines[1] == "(1, 2, 4, 4)"
    assert lines[2].startswith("ERR") and "available: reference" in lines[2]


def test_cli_info():
    out = subprocess.run([sys.executable, "-m", "fxkernels"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for needle in ("torch", "triton", "backends", "circular_conv2d"):
        assert needle in out.stdout

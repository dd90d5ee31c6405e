"""What a developer meets around the code: the build's progress lines (tools/fxk_build.py progress), the
Makefile's rebuild-only-when-something-changed rules, and the per-file progress of xdist test runs."""

import os
import shutil
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import pytest

from tools import fxk_build

ROOT = Path(__file__).resolve().parents[1]


def _progress(lines, heartbeat_s=60.0, pause_s=0.0):
    """Feed `lines` to fxk_build.progress through a pipe (after pause_s), return what it printed."""
    r, w = os.pipe()

    def feed():
        time.sleep(pause_s)
        with os.fdopen(w, "w") as f:
            f.write("\n".join(lines) + "\n")

    t = threading.Thread(target=feed)
    t.start()
    out = StringIO()
    with os.fdopen(r) as stream:
        fxk_build.progress(stream, out, heartbeat_s=heartbeat_s)
    t.join()
    return out.getvalue().splitlines()


def test_build_progress_prints_one_line_per_ninja_edge():
    src = ROOT / "csrc" / "fcc" / "fcc_cpu.cpp"
    lines = [
        "running build_ext",
        f"[1/3] c++ -MMD -c {src} -o fcc_cpu.o -O3",
        "ptxas info    : Used 40 registers",  # raw compiler chatter stays in build.log only
        "[2/3] /usr/local/cuda/bin/nvcc -c csrc/fcc/fcc_cuda.cu -o fcc_cuda.o",
        "fxkernels setup: CUDA kernels for sm_80, sm_90",
        "[3/3] c++ fcc_cpu.o fcc_cuda.o -shared -o /x/fxkernels/_C.so",
        "csrc/x.cpp:3:1: error: expected ';'",
    ]
    out = _progress(lines)
    assert len(out) == 5, out
    assert out[0].startswith("  [1/3]") and out[0].endswith("csrc/fcc/fcc_cpu.cpp")
    assert out[1].endswith("csrc/fcc/fcc_cuda.cu")
    assert out[2] == "  fxkernels setup: CUDA kernels for sm_80, sm_90"
    assert out[3].endswith("link _C.so")
    assert out[4] == "  csrc/x.cpp:3:1: error: expected ';'"
    assert not any("ptxas" in line or "running build_ext" in line for line in out)


def test_build_progress_heartbeat_while_nothing_finishes():
    out = _progress(["[1/2] c++ -c a.cpp -o a.o"], heartbeat_s=0.05, pause_s=0.3)
    beats = [line for line in out if "still building" in line]
    assert beats and "no file finished yet" in beats[0], out
    assert out[-1].startswith("  [1/2]") and out[-1].endswith("a.cpp")


FAKE_PYTHON = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/../calls.log"
case "$*" in *"fxk_build.py progress"*) cat > /dev/null ;; esac
exit 0
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_install_rebuilds_only_when_something_changed(tmp_path):
    # the real Makefile on a stand-in project whose venv python only logs how it is called
    for name in ("Makefile", "setup.py", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "a.cpp").write_text("int a;\n")
    (tmp_path / "fxkernels").mkdir()
    so = tmp_path / "fxkernels" / "_C.so"
    so.write_text("")
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text(FAKE_PYTHON)
    (bin_ / "python").chmod(0o755)
    log = tmp_path / ".venv" / "calls.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}

    def make(*extra):
        log.write_text("")
        r = subprocess.run(["make", "-s", "install", "PY=false", *extra], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        calls = log.read_text().splitlines()
        return {
            "deps": any(c.startswith("-m pip install -q torch") for c in calls),
            "build": any(c.startswith("-m pip install -v -e") for c in calls),
        }

    assert make() == {"deps": True, "build": True}  # first install
    assert make() == {"deps": False, "build": False}  # nothing changed: no pip at all
    time.sleep(0.05)
    (tmp_path / "csrc" / "a.cpp").touch()
    assert make() == {"deps": False, "build": True}  # a source changed: rebuild only
    assert make() == {"deps": False, "build": False}
    assert make("TORCH_SPEC=torch==2.14.0") == {"deps": True, "build": True}  # the requirements changed
    assert make("TORCH_SPEC=torch==2.14.0", "FXKERNELS_SKIP_CUDA_BUILD=1") == {"deps": False, "build": True}
    so.unlink()  # the extension is gone (e.g. `git clean`): rebuild
    assert make("TORCH_SPEC=torch==2.14.0", "FXKERNELS_SKIP_CUDA_BUILD=1") == {"deps": False, "build": True}


def test_xdist_runs_print_a_line_per_finished_file(tmp_path):
    pytest.importorskip("xdist")
    (tmp_path / "test_a.py").write_text("def test_1():\n    pass\n\ndef test_2():\n    assert False\n")
    (tmp_path / "test_b.py").write_text("import pytest\n\n@pytest.mark.skip\ndef test_3():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.file_progress", "-n", "2", "--dist", "loadfile", "-q",
         "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in r.stdout.splitlines() if " files]" in line]
    assert sorted(line.split(" in ")[0] for line in lines) == [
        "test_a.py: 1 failed, 1 passed",
        "test_b.py: 1 skipped",
    ]
    assert {line.rsplit("[", 1)[1] for line in lines} == {"1/2 files]", "2/2 files]"}, r.stdout

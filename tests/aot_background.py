"""The AOT compile of tests/test_aot.py, started in the background as soon as collection has finished.

Compiling every Triton launch variant takes about 15 minutes of CPU on a 2-core machine while most other
tests keep one core busy with Python, so conftest.py starts ``python -m fxkernels.aot`` (niced, all cores)
when test_aot.py is among the collected tests and test_aot.py waits for its report. Without conftest (or
with ``FXKERNELS_AOT_FOREGROUND=1``) the fixture runs it in the foreground as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_STATE: dict = {}


def _command(out: Path) -> tuple[list, dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return [sys.executable, "-m", "fxkernels.aot", "--json", str(out), "-q"], env


def start() -> None:
    """Start the compile once (no-op if started or if FXKERNELS_AOT_FOREGROUND is set)."""
    if _STATE or os.environ.get("FXKERNELS_AOT_FOREGROUND", "0") not in ("", "0"):
        return
    tmp = Path(tempfile.mkdtemp(prefix="fxk_aot_"))
    cmd, env = _command(tmp / "aot.json")
    log = open(tmp / "aot.log", "w")  # a file, not a pipe: a full pipe would block the child
    nice = (lambda: os.nice(10)) if hasattr(os, "nice") else None
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT, preexec_fn=nice
    )
    _STATE.update(proc=proc, dir=tmp, log=log)


def report(timeout: float = 3600) -> tuple[dict | None, str]:
    """(the JSON report or None, the tail of the tool's output); runs the compile now if not started."""
    if not _STATE:
        tmp = Path(tempfile.mkdtemp(prefix="fxk_aot_"))
        cmd, env = _command(tmp / "aot.json")
        proc = subprocess.run(
            cmd, env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout
        )
        text = proc.stdout + proc.stderr
    else:
        tmp = _STATE["dir"]
        try:
            _STATE["proc"].wait(timeout=timeout)
        finally:
            _STATE["log"].close()
        text = (tmp / "aot.log").read_text()
    out = tmp / "aot.json"
    return (json.loads(out.read_text()) if out.exists() else None), text

"""The AOT compile of tests/test_aot.py, started in the background as soon as collection has finished.

Compiling every Triton launch variant takes about 15 minutes of CPU on a 2-core machine while most other
tests keep the cores busy with Python, so conftest.py starts ``python -m fxkernels.aot`` (niced, all cores)
when test_aot.py is among the collected tests and test_aot.py waits for its report. Under pytest-xdist every
worker collects, and the compile must run once: the controller names one directory for the session
(``FXKERNELS_AOT_DIR``, inherited by the workers), the first process to create ``claim`` in it starts the
compile, and whichever worker runs test_aot.py waits for the ``rc`` file the compile leaves there. Without
conftest (or with ``FXKERNELS_AOT_FOREGROUND=1``) the fixture runs it in the foreground.

    python -m tests.aot_background DIR    (what start() runs: the compile, its log, then DIR/rc)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = "FXKERNELS_AOT_DIR"


def _command(out: Path) -> tuple[list, dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return [sys.executable, "-m", "fxkernels.aot", "--json", str(out), "-q"], env


def session_dir() -> Path:
    """The session's directory (created, and exported to child processes, on first use)."""
    d = os.environ.get(ENV_DIR)
    if not d:
        d = tempfile.mkdtemp(prefix="fxk_aot_")
        os.environ[ENV_DIR] = d
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


def start() -> None:
    """Start the compile once per session (no-op if another process claimed it or FXKERNELS_AOT_FOREGROUND)."""
    if os.environ.get("FXKERNELS_AOT_FOREGROUND", "0") not in ("", "0"):
        return
    d = session_dir()
    try:
        (d / "claim").mkdir()
    except FileExistsError:
        return
    cmd, env = _command(d / "aot.json")
    nice = (lambda: os.nice(10)) if hasattr(os, "nice") else None
    subprocess.Popen(
        [sys.executable, "-m", "tests.aot_background", str(d)],
        env=env,
        cwd=str(REPO_ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=nice,
        start_new_session=True,  # outlives the worker that started it if that worker finishes first
    )


def report(timeout: float = 3600) -> tuple[dict | None, str]:
    """(the JSON report or None, the tail of the tool's output); runs the compile now if nobody started it."""
    d = Path(os.environ[ENV_DIR]) if os.environ.get(ENV_DIR) else None
    if d is None or not (d / "claim").exists():
        tmp = Path(tempfile.mkdtemp(prefix="fxk_aot_"))
        cmd, env = _command(tmp / "aot.json")
        proc = subprocess.run(
            cmd, env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout
        )
        out = tmp / "aot.json"
        return (json.loads(out.read_text()) if out.exists() else None), proc.stdout + proc.stderr
    end = time.monotonic() + timeout
    while not (d / "rc").exists():
        if time.monotonic() > end:
            return None, f"the background AOT compile in {d} did not finish within {timeout:.0f} s"
        time.sleep(2)
    text = (d / "aot.log").read_text() if (d / "aot.log").exists() else ""
    out = d / "aot.json"
    return (json.loads(out.read_text()) if out.exists() else None), text


def _main(d: str) -> int:
    d = Path(d)
    cmd, env = _command(d / "aot.json")
    with open(d / "aot.log", "w") as log:  # a file, not a pipe: a full pipe would block the child
        rc = subprocess.call(cmd, env=env, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT)
    (d / "rc.tmp").write_text(str(rc))
    os.replace(d / "rc.tmp", d / "rc")  # atomic: a waiter never sees a half-written rc
    return rc


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))

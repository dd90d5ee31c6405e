"""Per-file progress for xdist runs: pytest-xdist prints one row of dots and no file names, so the controller
prints a line when the last test of a file has finished ("tests/ops/test_fcc.py: 96 passed in 41 s
[12/40 files]"). A plain (one-process) run already names each file and gets nothing extra.

Registered by tests/conftest.py; `-p tests.file_progress` turns it on for any other test folder."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest


class FileProgress:
    def __init__(self, config):
        self.config = config
        self.left: Counter = Counter()  # file -> tests whose teardown has not been reported yet
        self.outcomes: dict = defaultdict(Counter)
        self.started: dict = {}
        self.files_done = 0

    @pytest.hookimpl
    def pytest_xdist_node_collection_finished(self, node, ids):
        if not self.left:  # every worker collects the same ids
            self.left.update(nodeid.split("::", 1)[0] for nodeid in ids)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report):
        path = report.nodeid.split("::", 1)[0]
        self.started.setdefault(path, time.monotonic())
        if report.when == "call" or (report.when == "setup" and not report.passed):
            xfailed = hasattr(report, "wasxfail") and report.skipped
            self.outcomes[path]["xfailed" if xfailed else report.outcome] += 1
        elif report.when == "teardown" and not report.passed:
            self.outcomes[path]["error"] += 1
        if report.when != "teardown" or path not in self.left:
            return
        self.left[path] -= 1
        if self.left[path] > 0:
            return
        self.files_done += 1
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes[path].items()))
        took = time.monotonic() - self.started[path]
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            if getattr(tr._tw, "width_of_current_line", 0):  # after the row of dots xdist is printing
                tr._tw.line()
            tr.write_line(f"{path}: {counts} in {took:.0f} s [{self.files_done}/{len(self.left)} files]")


def pytest_configure(config):
    """Register on the xdist controller only (workers report to it; a plain run names its files itself)."""
    on_controller = getattr(config, "workerinput", None) is None
    distributed = getattr(config.option, "dist", "no") != "no" and not config.option.collectonly
    if not (on_controller and distributed):
        return
    if not config.pluginmanager.hasplugin("fxk-file-progress"):
        config.pluginmanager.register(FileProgress(config), "fxk-file-progress")

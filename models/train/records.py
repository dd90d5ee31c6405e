"""What a training run leaves besides the checkpoint: the per-fold metrics table, `<out>/metrics.csv` (one row
per epoch) and `<out>/curves.png` (loss and accuracy per epoch, matplotlib)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
BASE_FIELDS = ("fold", "fold_name", "epoch", "loss", "train_acc", "steps", "steps_per_s")


def metrics_table(rows: list[tuple[str, dict, int]], columns) -> str:
    """rows: (fold name, metrics, number of test clips) -> the printed table, one column per metric."""
    width = max(8, *(len(c) + 2 for c in columns))
    head = f"{'fold':<14}{'n':>5}" + "".join(f"{c:>{width}}" for c in columns)
    lines = [head, "-" * len(head)]
    for name, m, n in rows:
        lines.append(f"{name:<14}{n:>5}" + "".join(f"{m[k]:>{width}.3f}" for k in columns))
    return "\n".join(lines)


class EpochLog:
    """`<out>/metrics.csv`: every epoch's row (fold, epoch, mean loss and its parts, training accuracy, speed),
    written when the epoch ends; a resumed run keeps the rows of the epochs its checkpoint holds and drops
    the rest (an epoch that ran after the last checkpoint is run again)."""

    def __init__(self, out: Path, parts: list[str], resume_at: tuple[int, int] | None, enabled: bool = True):
        self.path = Path(out) / METRICS_CSV
        self.fields = list(BASE_FIELDS) + [f"loss_{p}" for p in parts]
        self.enabled = enabled
        self.rows: list[dict] = []
        if not enabled:
            return
        if resume_at is not None and self.path.exists():
            fold, epoch = resume_at  # the first epoch that is not in the checkpoint
            with open(self.path, newline="") as f:
                for r in csv.DictReader(f):
                    if (int(r["fold"]), int(r["epoch"])) < (fold, epoch):
                        self.rows.append(r)
        self._write()

    def add(self, row: dict) -> None:
        self.rows.append({k: row.get(k, "") for k in self.fields})
        if self.enabled:
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.path)


_MISSING_MATPLOTLIB_SAID: list[str] = []  # say it once per process, not once per epoch


def plot_curves(rows: list[dict], path: Path, title: str, tests: dict[int, float] | None = None,
                chance: float | None = None) -> Path | None:  # fmt: skip
    """Training loss and accuracy per epoch, one line per fold; held-out accuracy of each finished fold as a
    marker at its last epoch (`tests`: fold -> accuracy). None when matplotlib is missing or there is nothing
    to draw."""
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _MISSING_MATPLOTLIB_SAID:
            _MISSING_MATPLOTLIB_SAID.append(path.name)
            print(f"models.train: {path.name} not drawn: matplotlib is not installed "
                  "(pip install 'fxkernels[models]')", file=sys.stderr)  # fmt: skip
        return None
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    folds: dict[int, list[dict]] = {}
    for r in rows:
        folds.setdefault(int(r["fold"]), []).append(r)
    for fi, rs in folds.items():
        ep = [int(r["epoch"]) + 1 for r in rs]
        label = rs[0].get("fold_name") or f"fold {fi}"
        (line,) = ax_l.plot(ep, [float(r["loss"]) for r in rs], marker="o", ms=3, label=label)
        ax_a.plot(ep, [float(r["train_acc"]) for r in rs], marker="o", ms=3, color=line.get_color())
        if tests and fi in tests:
            ax_a.plot([ep[-1]], [tests[fi]], marker="*", ms=11, color=line.get_color(), linestyle="none")
    if chance is not None:
        ax_a.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax_l.set(xlabel="epoch", ylabel="training loss", title=f"{title}: loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="train (lines), held-out (stars)")
    if len(folds) <= 8:
        ax_l.legend(fontsize=7)
    if chance is not None:
        ax_a.legend(fontsize=7, loc="lower right")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""The command line of `python -m models.train MODEL ...`: the options every model shares plus the task's own
(`Task.add_arguments`), with the task's defaults; `python -m models.train MODEL --help` lists them."""

from __future__ import annotations

import argparse
import importlib.util

import fxkernels

from .tasks import TASKS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help (not for flags, nor where the default is None: "unset")
    and keeps the examples' line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _int_at_least(lo: int):
    """argparse type: an int >= lo (a clear message instead of a run that silently does nothing)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


positive_int = _int_at_least(1)
count = _int_at_least(0)


def model_of(argv) -> str:
    """The model an argument list trains: its first word if that names one, else the first that does, else
    "mol" (so that `--help` alone shows MOL's options)."""
    argv = list(argv or [])
    if argv and argv[0] in TASKS:
        return argv[0]
    return next((a for a in argv if a in TASKS), "mol")


def build_parser(model: str = "mol") -> argparse.ArgumentParser:
    from . import __doc__ as doc

    task = TASKS[model]
    intro, rest = doc.split("\n\n", 1)
    p = argparse.ArgumentParser(
        prog="python -m models.train",
        description=intro,
        epilog="examples:\n" + rest.split("\n\n", 1)[0] + f"\n\nOptions shown for {model}; "
        "`python -m models.train MODEL --help` shows another model's.\n"
        f"User guide: {task.doc}",
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", choices=list(TASKS), help="which reference model to train")
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", default="synthetic", help="'synthetic' or the root folder of a frame-folder data set"
    )
    g.add_argument("--csv", default="labels.csv", help="label CSV inside --data (real data sets)")
    task.add_arguments(p)
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--protocol",
        choices=["loso", "split"],
        default="split",
        help="loso: one fold per held-out subject; split: one stratified train/test split",
    )
    g.add_argument("--test-fraction", type=float, default=0.25, help="split: share of each class held out")
    g.add_argument(
        "--max-folds", type=positive_int, default=None, help="loso: stop after this many folds (unset: all)"
    )
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--backend",
        choices=list(fxkernels.BACKENDS),
        default="auto",
        help="fxkernels backend of every fused layer (reference: plain PyTorch)",
    )
    g.add_argument("--epochs", type=int, help="epochs per fold")
    g.add_argument("--batch-size", type=int, help="global batch size (split over processes)")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--weight-decay", type=float, help="weight decay")
    g.add_argument(
        "--max-steps", type=positive_int, default=None, help="cap on optimiser steps per epoch (unset: all)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the initialisation")
    g.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads per process (unset: torch's)"
    )
    g = p.add_argument_group("output and control")
    g.add_argument("--out", help="folder of the checkpoint, summary.json, metrics.csv and curves.png")
    g.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt (it must exist)")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if <out> holds a checkpoint (without it such a run is refused)",
    )
    g.add_argument(
        "--stop-after",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N epochs of this run, checkpoint written (time-limited jobs; continue "
        "with --resume)",
    )
    g.add_argument(
        "--compare-backends",
        type=count,
        default=0,
        metavar="N",
        help="first time N training steps with fxkernels and with the reference backend (0: skip)",
    )
    g.add_argument(
        "--save-figures",
        action="store_true",
        help="also save the model's own figures of the trained model into <out> (see the user guide)",
    )
    g.add_argument("--no-progress", action="store_true", help="no per-step progress bar")
    p.set_defaults(**task.defaults)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(model_of(argv)).parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(
                f"models.train: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
            )
    if args.save_figures and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("models.train: --save-figures needs matplotlib (pip install 'fxkernels[models]')")
    TASKS[args.model].check_args(args)
    return args

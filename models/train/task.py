"""What the training loop needs to know about one model: a `Task`. A new model adds one module that
subclasses it and one entry in `TASKS` (models/train/__init__.py); the loop, checkpoints, protocols,
metrics files and figures are shared."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn


class Task(ABC):
    """One model's definition for `python -m models.train <name>`.

    Class attributes:
        name: the CLI's model argument.
        title: the model's name in log lines.
        doc: the user guide (shown in --help).
        defaults: parser defaults of the shared options (epochs, batch_size, lr, weight_decay, out) from the
            model's paper.
        resume_keys: the task's own options that define the data, folds or model: a checkpoint only resumes a
            run with the same values.
        metric_columns: the keys of `metrics()` shown in the per-fold table (the first one is the accuracy
            that is compared with chance).
    """

    name = ""
    title = ""
    doc = ""
    defaults: dict[str, Any] = {}
    resume_keys: tuple[str, ...] = ()
    metric_columns: tuple[str, ...] = ("acc",)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:  # noqa: B027 (optional hook)
        """The task's own option groups (data set, model and loss)."""

    def check_args(self, args: argparse.Namespace) -> None:  # noqa: B027 (optional hook)
        """SystemExit with a message naming the option for values the task cannot use."""

    @abstractmethod
    def build_dataset(self, args: argparse.Namespace):
        """The data set: items are dicts with "video" and "label" (an int64 class index), plus attributes
        `labels`, `subjects` (per item) and `num_classes`."""

    def num_classes(self, ds) -> int:
        """The number of classes "label" indexes (chance = 1 / it)."""
        return ds.num_classes

    def describe(self, args: argparse.Namespace, ds) -> str:
        """The first log line's description of the model and the data."""
        return f"{self.title} on {args.data}: {len(ds)} clips, {ds.num_classes} classes"

    def folds(self, ds, args: argparse.Namespace):
        """The data set's own folds `[(name, train_idx, test_idx), ...]`, or None for `--protocol`'s (LOSO or
        a stratified split); e.g. DFEW's fixed train / test lists."""
        return None

    @abstractmethod
    def build_model(self, args: argparse.Namespace, ds) -> nn.Module:
        """A new model with every fused layer on backend "auto" (the loop switches it with use_backend)."""

    def optimizer(self, args: argparse.Namespace, params) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)

    def scheduler(self, args: argparse.Namespace, opt: torch.optim.Optimizer):
        """The learning-rate schedule, stepped once per epoch (its state goes into the checkpoint), or None."""
        return None

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict, args: argparse.Namespace, train: bool):
        """Forward and loss of one batch -> (loss tensor, {part name: float tensor}, predicted labels (B,))."""

    @abstractmethod
    def predict(self, model: nn.Module, batch: dict, args: argparse.Namespace) -> torch.Tensor:
        """Predicted labels (B,) in eval mode, no gradient."""

    @abstractmethod
    def metrics(self, labels: list[int], preds: list[int], ds) -> dict[str, float]:
        """Test metrics of concatenated predictions (keys include `metric_columns`)."""

    def figures(self, model: nn.Module, ds, idx: list[int], args: argparse.Namespace, out, device) -> list:
        """`--save-figures`: the task's own figures of a trained model (paths written); none by default."""
        return []

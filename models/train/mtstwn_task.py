"""`python -m models.train mtstwn`: MTSTWN (masked facial expressions: the experienced and the required
expression of each clip, 36 joint classes) on synthetic clips or MFED frame folders. User guide:
docs/models/mtstwn.md."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .inputs import add_input_arguments, model_input
from .task import Task


def _ints(text: str) -> tuple:
    try:
        v = tuple(int(a) for a in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
    if len(v) != 3 or min(v) < 1:
        raise ValueError(f"expected 3 positive integers (one per stage), got {text!r}")
    return v


def _stage_ints(text: str) -> tuple:
    import argparse

    try:
        return _ints(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rotate_clips(video: torch.Tensor, max_degrees: float) -> torch.Tensor:
    """Training augmentation: each clip (B, C, T, S, S) rotated about its centre by its own angle drawn
    uniformly from [-max_degrees, max_degrees] (torch's global RNG, so a resumed run draws the same), the
    same angle for every frame; bilinear, zeros outside."""
    if max_degrees <= 0:
        return video
    B, C, T, H, W = video.shape
    a = (torch.rand(B) * 2 - 1) * math.radians(max_degrees)
    cos, sin = a.cos(), a.sin()
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta = theta.to(video)
    frames = video.transpose(1, 2).reshape(B, T * C, H, W)  # one grid per clip serves all its frames
    grid = F.affine_grid(theta, (B, T * C, H, W), align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(B, T, C, H, W).transpose(1, 2)


class MTSTWNTask(Task):
    name = "mtstwn"
    title = "MTSTWN"
    doc = "docs/models/mtstwn.md"
    # the paper's training: SGD lr 1e-4, momentum 0.9, weight decay 5e-4, batch 8, 50 epochs
    defaults = {"epochs": 50, "batch_size": 8, "lr": 1e-4, "weight_decay": 5e-4, "out": "runs/mtstwn"}
    resume_keys = ("classes", "subjects", "clips", "frames", "size", "amplitude", "noise", "jitter", "mvit",
                   "asam", "stfm", "mtl", "mask_act", "input_norm", "input_scale", "embed_dim", "depths", "heads",
                   "branch_heads")  # fmt: skip
    metric_columns = ("acc", "f1", "recall", "acc_6E", "f1_6E", "acc_6R", "f1_6R")

    def add_arguments(self, p):
        g = p.add_argument_group("mtstwn: data")
        g.add_argument(
            "--classes", type=int, default=6, help="synthetic: classes per task (joint classes: its square)"
        )
        g.add_argument("--subjects", type=int, default=4, help="synthetic: number of subjects")
        g.add_argument(
            "--clips",
            type=int,
            default=1,
            help="synthetic: clips of each (experienced, required) pair per subject",
        )
        g.add_argument("--frames", type=int, default=30, help="frames per clip (sampled onset..offset)")
        g.add_argument("--size", type=int, default=224, help="frame side in pixels (a multiple of 32)")
        g.add_argument(
            "--amplitude",
            type=float,
            default=None,
            help="synthetic: peak required motion (unset: the data set's)",
        )
        g.add_argument(
            "--noise", type=float, default=None, help="synthetic: sensor-noise std (unset: the data set's)"
        )
        g.add_argument(
            "--jitter",
            type=float,
            default=None,
            help="synthetic: camera shake in pixels (unset: the data set's)",
        )
        add_input_arguments(g, "none", "the paper's raw RGB; temporal leaves the stem only the motion")
        g.add_argument(
            "--rotation", type=float, default=10.0, help="training augmentation: random rotation in +-degrees"
        )
        g = p.add_argument_group("mtstwn: model and loss")
        g.add_argument(
            "--mvit", choices=["v2", "v1"], default="v2", help="encoder form (v1: the paper's eq. 9)"
        )
        for flag, what in (
            ("asam", "the ASAM mask"),
            ("stfm", "the STFM blocks"),
            ("mtl", "the two branches"),
        ):
            g.add_argument(f"--no-{flag}", dest=flag, action="store_false", help=f"ablation: without {what}")
        g.add_argument("--mask-act", choices=["none", "sigmoid"], default="none", help="ASAM mask activation")
        g.add_argument("--embed-dim", type=int, default=96, help="stage-1 width (the encoder ends at 8x)")
        g.add_argument("--depths", type=_stage_ints, default=(4, 4, 4), help="blocks per stage, e.g. 4,4,4")
        g.add_argument("--heads", type=_stage_ints, default=(2, 4, 8), help="attention heads per stage")
        g.add_argument(
            "--branch-heads", type=int, default=8, help="heads of each task branch's encoder layer"
        )
        g.add_argument("--drop-path", type=float, default=0.2, help="stochastic depth of the last block")
        g.add_argument(
            "--task",
            choices=["36", "6E", "6R"],
            default="36",
            help="loss weights (beta, alpha) of CE_ex and CE_re: 36 (1, 1), 6E (1, 0.1), 6R (0.1, 1)",
        )
        g.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd", help="sgd: the paper's")
        g.add_argument("--momentum", type=float, default=0.9, help="sgd momentum")

    def check_args(self, args):
        for name in ("classes", "subjects", "clips", "frames", "embed_dim", "branch_heads"):
            if getattr(args, name) < 1:
                raise SystemExit(
                    f"models.train: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
                )
        if args.classes > 6:
            raise SystemExit(
                f"models.train: --classes must be at most 6 (MFED's classes), got {args.classes}"
            )
        if args.size < 32 or args.size % 32:
            raise SystemExit(f"models.train: --size must be a multiple of 32 (>= 32), got {args.size}")

    def build_dataset(self, args):
        from ..data.mfed import MFEDFolderDataset, SyntheticMFED

        if args.data == "synthetic":
            kw = {
                k: getattr(args, k) for k in ("amplitude", "noise", "jitter") if getattr(args, k) is not None
            }
            ds = SyntheticMFED(
                args.subjects, args.clips, t=args.frames, size=args.size, seed=args.seed,
                num_classes=args.classes, **kw,
            )  # fmt: skip
        elif not os.path.isdir(args.data):
            raise SystemExit(f"models.train: --data {args.data!r} is neither 'synthetic' nor a folder")
        else:
            ds = MFEDFolderDataset(args.data, csv=args.csv, t=args.frames, size=args.size)
        return ds

    def num_classes(self, ds) -> int:
        return ds.num_classes**2  # the joint (experienced, required) classes that "label" indexes

    def describe(self, args, ds):
        parts = [f"mvit {args.mvit}"] + [k for k in ("asam", "stfm", "mtl") if getattr(args, k)]
        return (
            f"MTSTWN ({', '.join(parts)}; task {args.task}) on {args.data}: {len(ds)} clips, "
            f"{self.num_classes(ds)} joint classes, {args.frames}x{args.size}x{args.size}"
        )

    def _per_task(self, ds) -> int:
        return ds.num_classes

    def build_model(self, args, ds):
        from ..mtstwn import MTSTWN

        n = self._per_task(ds)
        return MTSTWN(
            n, n, args.mvit, args.asam, args.stfm, args.mtl, frames=args.frames, size=args.size,
            embed_dim=args.embed_dim, depths=args.depths, num_heads=args.heads, drop_path=args.drop_path,
            branch_heads=args.branch_heads, mask_act=args.mask_act, backend="auto",
        )  # fmt: skip

    def optimizer(self, args, params):
        if args.optimizer == "sgd":
            return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)

    def loss(self, model, batch, args, train):
        from ..mtstwn import mtstwn_loss, mtstwn_predictions

        video = rotate_clips(batch["video"], args.rotation) if train else batch["video"]
        out = model(model_input(video, args))
        n = math.isqrt(out["joint"].shape[1])
        loss, parts = mtstwn_loss(out, batch["experienced"], batch["required"], args.task, num_re=n)
        return loss, parts, mtstwn_predictions(out, num_re=n)["joint"]

    def predict(self, model, batch, args):
        from ..mtstwn import mtstwn_predictions

        out = model(model_input(batch["video"], args))
        return mtstwn_predictions(out, num_re=math.isqrt(out["joint"].shape[1]))["joint"]

    def metrics(self, labels, preds, ds):
        from ..mtstwn import mtstwn_metrics

        n = self._per_task(ds)
        y, p = torch.as_tensor(labels), torch.as_tensor(preds)
        m = mtstwn_metrics({"ex": p // n, "re": p % n, "joint": p}, y // n, y % n, n, n)
        flat = {"acc": m["36"]["acc"], "f1": m["36"]["f1"], "recall": m["36"]["recall"]}
        for k in ("6E", "6R"):
            flat.update({f"{name}_{k}": v for name, v in m[k].items()})
        return flat

    def figures(self, model, ds, idx, args, out, device):
        from .mtstwn_figures import asam_figure

        if not args.asam:
            return []
        prepare = lambda v: model_input(v, args)  # noqa: E731
        return [asam_figure(model, ds, idx[:4], Path(out) / "asam_masks.png", device, prepare)]

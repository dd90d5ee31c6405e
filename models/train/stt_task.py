"""`python -m models.train stt`: STT (dynamic facial expressions in the wild, 7 classes) on synthetic clips or
DFEW / AFEW frame folders. User guide: docs/models/stt.md."""

from __future__ import annotations

import os

import torch

from .inputs import add_input_arguments, model_input
from .task import Task


class _FoldData(torch.utils.data.ConcatDataset):
    """A real data set's fixed train and test lists as one data set (train items first), with the attributes
    the loop reads."""

    def __init__(self, train, test):
        super().__init__([train, test])
        self.n_train = len(train)
        self.labels = list(train.labels) + list(test.labels)
        self.subjects = [-1] * len(self.labels)
        self.num_classes, self.classes = train.num_classes, train.classes


class STTTask(Task):
    name = "stt"
    title = "STT"
    doc = "docs/models/stt.md"
    # the paper's (Former-DFER's) training: SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 32, 100 epochs,
    # StepLR(40, 0.1)
    # --csv unset: DFEW's fold lists (set_{k}_{split}.txt); a CSV is DFEW's own set_{k}.csv format
    defaults = {
        "epochs": 100,
        "batch_size": 32,
        "lr": 0.01,
        "weight_decay": 1e-4,
        "out": "runs/stt",
        "csv": None,
    }
    resume_keys = ("classes", "subjects", "clips", "size", "fold", "list_format", "amplitude", "noise", "drift",
                   "input_norm", "input_scale", "backbone_stage", "dim", "heads", "depth", "beta", "lr_step",
                   "lr_gamma")  # fmt: skip
    metric_columns = ("acc", "uar")  # acc is the WAR (weighted average recall = accuracy)

    def add_arguments(self, p):
        g = p.add_argument_group("stt: data")
        g.add_argument("--classes", type=int, default=7, help="synthetic: number of classes (DFEW's 7)")
        g.add_argument("--subjects", type=int, default=4, help="synthetic: number of subjects")
        g.add_argument("--clips", type=int, default=2, help="synthetic: clips per class and subject")
        g.add_argument("--size", type=int, default=112, help="frame side in pixels (a multiple of 16)")
        g.add_argument("--amplitude", type=float, default=None, help="synthetic: expression motion in pixels")
        g.add_argument("--noise", type=float, default=None, help="synthetic: sensor-noise std")
        g.add_argument("--drift", type=float, default=None, help="synthetic: head drift in pixels")
        g.add_argument("--fold", type=int, default=1, help="DFEW: fold 1..5 (its fixed train/test lists)")
        g.add_argument(
            "--list-format",
            choices=["dfew", "afew"],
            default="dfew",
            help="real data: DFEW folds (list files or CSVs) or AFEW's train/test lists",
        )
        add_input_arguments(g, "none", "the paper's raw RGB frames")
        g = p.add_argument_group("stt: model and loss")
        g.add_argument(
            "--backbone-stage", choices=["layer3", "layer4"], default="layer3", help="resnet18 cut"
        )
        g.add_argument("--dim", type=int, default=512, help="transformer width")
        g.add_argument("--heads", type=int, default=8, help="attention heads")
        g.add_argument("--depth", type=int, default=4, help="divided space-time blocks")
        g.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth of the last block")
        g.add_argument("--beta", type=float, default=0.2, help="compact softmax CE weight (0: plain CE)")
        g.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd", help="sgd: the paper's")
        g.add_argument("--momentum", type=float, default=0.9, help="sgd momentum")
        g.add_argument(
            "--lr-step",
            type=int,
            default=40,
            help="the paper's StepLR: the learning rate times --lr-gamma every this many epochs (0: off)",
        )
        g.add_argument("--lr-gamma", type=float, default=0.1, help="StepLR factor")  # fmt: skip

    def check_args(self, args):
        for name in ("classes", "subjects", "clips", "dim", "heads", "depth"):
            if getattr(args, name) < 1:
                raise SystemExit(
                    f"models.train: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
                )
        if not 2 <= args.classes <= 7:
            raise SystemExit(f"models.train: --classes must be in 2..7 (DFEW's classes), got {args.classes}")
        if args.size < 16 or args.size % 16:
            raise SystemExit(f"models.train: --size must be a multiple of 16 (>= 16), got {args.size}")
        if args.dim % args.heads:
            raise SystemExit(f"models.train: --dim ({args.dim}) must be divisible by --heads ({args.heads})")
        if args.lr_step < 0 or not 0.0 < args.lr_gamma <= 1.0:
            raise SystemExit(
                f"models.train: --lr-step must be >= 0 and --lr-gamma in (0, 1], got {args.lr_step}, {args.lr_gamma}"
            )
        if not 1 <= args.fold <= 5:
            raise SystemExit(f"models.train: --fold must be in 1..5, got {args.fold}")

    def build_dataset(self, args):
        from ..data import AFEWDataset, DFEWDataset, SyntheticDFER

        if args.data == "synthetic":
            kw = {
                k: getattr(args, k) for k in ("amplitude", "noise", "drift") if getattr(args, k) is not None
            }
            return SyntheticDFER(args.subjects, args.clips, size=args.size, seed=args.seed,
                                 num_classes=args.classes, **kw)  # fmt: skip
        if not os.path.isdir(args.data):
            raise SystemExit(f"models.train: --data {args.data!r} is neither 'synthetic' nor a folder")
        if args.list_format == "afew":
            parts = [AFEWDataset(args.data, csv=args.csv, split=s, size=args.size) for s in ("train", "test")]
        else:
            parts = [DFEWDataset(args.data, csv=args.csv, fold=args.fold, split=s, size=args.size, seed=args.seed)
                     for s in ("train", "test")]  # fmt: skip
        return _FoldData(*parts)

    def folds(self, ds, args):
        if isinstance(ds, _FoldData):  # the data set's own train / test lists, not the --protocol
            n = len(ds)
            return [(f"fold {args.fold}" if args.list_format == "dfew" else "test", list(range(ds.n_train)),
                     list(range(ds.n_train, n)))]  # fmt: skip
        return None

    def describe(self, args, ds):
        return (
            f"STT ({args.backbone_stage}, {args.depth} blocks of {args.dim}) on {args.data}: {len(ds)} clips, "
            f"{ds.num_classes} classes, 16x{args.size}x{args.size}"
        )

    def build_model(self, args, ds):
        from ..stt import STT

        return STT(ds.num_classes, args.backbone_stage, dim=args.dim, num_heads=args.heads, depth=args.depth,
                   drop_path=args.drop_path, size=args.size, backend="auto")  # fmt: skip

    def optimizer(self, args, params):
        if args.optimizer == "sgd":
            return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)

    def scheduler(self, args, opt):
        if args.lr_step == 0:
            return None
        return torch.optim.lr_scheduler.StepLR(opt, step_size=args.lr_step, gamma=args.lr_gamma)

    def loss(self, model, batch, args, train):
        from ..stt import stt_loss

        logits = model(model_input(batch["frames"], args, time_dim=1))
        loss = stt_loss(logits, batch["label"], beta=args.beta)
        return loss, {}, logits.argmax(1)

    def predict(self, model, batch, args):
        return model(model_input(batch["frames"], args, time_dim=1)).argmax(1)

    def metrics(self, labels, preds, ds):
        from ..stt import stt_metrics

        m = stt_metrics(labels, preds, ds.num_classes)
        return {"acc": m["war"], "uar": m["uar"]}

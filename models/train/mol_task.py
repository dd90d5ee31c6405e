"""`python -m models.train mol`: MOL (micro-expressions, optical flow and landmarks) on synthetic clips or a
frame-folder data set (CASME II / SAMM / SMIC style). User guide: docs/models/mol.md."""

from __future__ import annotations

import os

from ..data import FrameFolderDataset, SyntheticMicroExpressions
from ..metrics import all_metrics
from ..mol import MOL, mol_loss
from .inputs import add_input_arguments, model_input
from .task import Task


class MOLTask(Task):
    name = "mol"
    title = "MOL"
    doc = "docs/models/mol.md"
    defaults = {"epochs": 3, "batch_size": 4, "lr": 2e-4, "weight_decay": 1e-4, "out": "runs/mol"}
    resume_keys = ("semantics", "classes", "subjects", "clips", "amplitude", "noise", "jitter", "t",
                   "input_norm", "input_scale")  # fmt: skip
    metric_columns = ("acc", "wf1", "uf1", "uar")

    def add_arguments(self, p):
        g = p.add_argument_group("mol: data")
        g.add_argument(
            "--classes",
            type=int,
            default=5,
            help="synthetic: number of classes (real data: from the CSV labels)",
        )
        g.add_argument("--subjects", type=int, default=6, help="synthetic: number of subjects")
        g.add_argument("--clips", type=int, default=10, help="synthetic: clips per subject")
        g.add_argument(
            "--amplitude",
            type=float,
            default=None,
            help="synthetic: peak motion in pixels, at most 6 (unset: the data set's 3.0)",
        )
        g.add_argument(
            "--noise",
            type=float,
            default=None,
            help="synthetic: sensor-noise std per frame (unset: the data set's 0.01)",
        )
        g.add_argument(
            "--jitter",
            type=float,
            default=None,
            help="synthetic: camera-shake std in pixels per frame (unset: the data set's 0.25)",
        )
        g.add_argument("--t", type=int, default=8, help="frames per clip (the model needs t >= 4)")
        # why "clip": at the official initialisation the ParC blocks' random biases and position encodings
        # (std 1) follow a linear conv stack that shrinks its input, so raw [0, 1] frames leave the
        # clip-dependent part of the features at a few percent of the total
        add_input_arguments(g, "clip", "the official code's ParC stack needs input of unit scale")
        g = p.add_argument_group("mol: model and loss")
        g.add_argument(
            "--semantics",
            choices=["official", "paper"],
            default="official",
            help="official: the published code's layout (loads its checkpoints); paper: the paper's F5C blocks",
        )
        g.add_argument(
            "--flow-weight",
            type=float,
            default=0.1,
            help="weight of the optical-flow MSE term (the paper's lambda_f)",
        )
        g.add_argument(
            "--landmark-weight",
            type=float,
            default=68.0,
            help="weight of the inter-ocular-normalised landmark L1 term (the paper's lambda_m)",
        )

    def check_args(self, args):
        for name in ("classes", "subjects", "clips"):
            if getattr(args, name) < 1:
                raise SystemExit(f"models.train: --{name} must be >= 1, got {getattr(args, name)}")
        if args.t < 4:  # MOL's 3-D conv spans 5 of the 2(t-1) pair steps
            raise SystemExit(f"models.train: --t must be >= 4 for MOL, got {args.t}")

    def build_dataset(self, args):
        if args.data == "synthetic":
            kw = {
                k: getattr(args, k) for k in ("amplitude", "noise", "jitter") if getattr(args, k) is not None
            }
            return SyntheticMicroExpressions(
                args.classes, args.subjects, args.clips, t=args.t, seed=args.seed, **kw
            )
        if not os.path.isdir(args.data):
            raise SystemExit(f"models.train: --data {args.data!r} is neither 'synthetic' nor a folder")
        return FrameFolderDataset(args.data, csv=args.csv, t=args.t)

    def describe(self, args, ds):
        return f"MOL ({args.semantics}) on {args.data}: {len(ds)} clips, {ds.num_classes} classes, t={args.t}"

    def build_model(self, args, ds):
        return MOL(ds.num_classes, semantics=args.semantics, backend="auto", t=args.t)

    def loss(self, model, batch, args, train):
        outputs = model(model_input(batch["video"], args))
        loss, parts = mol_loss(outputs, batch, args.flow_weight, args.landmark_weight)
        return loss, parts, outputs[0].detach().argmax(1)

    def predict(self, model, batch, args):
        return model(model_input(batch["video"], args))[0].argmax(1)

    def metrics(self, labels, preds, ds):
        return all_metrics(labels, preds, ds.num_classes)

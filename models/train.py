"""Train and evaluate the reference models: `python -m models.train mol --data synthetic ...`.

    python -m models.train mol --data synthetic --protocol split --epochs 3
    python -m models.train mol --data /path/CASME2 --protocol loso --epochs 40 --classes 5
    torchrun --nproc_per_node 2 -m models.train mol --data synthetic ...     (DistributedDataParallel)

Protocols: "loso" (leave one subject out: one fold per subject, metrics over the concatenated predictions of
all folds, as MER papers report) or "split" (one stratified train/test split). Every epoch writes a checkpoint
(`<out>/checkpoint.pt`: model, optimiser, fold, epoch, RNG state and the finished folds' predictions);
`--resume` continues from it. Under torchrun each process trains on its shard of every batch (gloo on CPU,
nccl on GPU); rank 0 prints and writes the checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

import fxkernels

from .data import FrameFolderDataset, SyntheticMicroExpressions, loso_folds, split_indices
from .metrics import all_metrics
from .mol import MOL, mol_loss

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    tqdm = None


# ------------------------------------------------------------------------------------------ arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=["mol"], help="which reference model to train")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a dataset folder with labels.csv")
    p.add_argument("--csv", default="labels.csv", help="CSV file name inside --data (real datasets)")
    p.add_argument("--protocol", choices=["loso", "split"], default="split")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backend", choices=list(fxkernels.BACKENDS), default="auto")
    p.add_argument("--semantics", choices=["official", "paper"], default="official")
    p.add_argument("--classes", type=int, default=5, help="number of classes")
    p.add_argument("--subjects", type=int, default=6, help="synthetic: number of subjects")
    p.add_argument("--clips", type=int, default=10, help="synthetic: clips per subject")
    p.add_argument("--amplitude", type=float, default=None, help="synthetic: motion amplitude in pixels")
    p.add_argument("--noise", type=float, default=None, help="synthetic: sensor noise std")
    p.add_argument("--jitter", type=float, default=None, help="synthetic: per-frame camera shake in pixels")
    p.add_argument("--input-norm", choices=["clip", "temporal", "none"], default="clip",
                   help="clip: standardise each clip; temporal: subtract each pixel's temporal mean, then "
                   "standardise; none: raw [0, 1] frames")  # fmt: skip
    p.add_argument("--input-scale", type=float, default=1.0, help="multiplies the normalised input")
    p.add_argument("--t", type=int, default=8, help="frames per clip")
    p.add_argument("--batch-size", type=int, default=4, help="global batch size (split over processes)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--flow-weight", type=float, default=0.1)
    p.add_argument("--landmark-weight", type=float, default=68.0)
    p.add_argument("--max-folds", type=int, default=None, help="LOSO: stop after this many folds")
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimiser steps per epoch")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/mol", help="checkpoint and summary folder")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N epochs of this run, checkpoint written (time-limited jobs; continue with --resume)")  # fmt: skip
    p.add_argument("--compare-backends", type=int, default=0, metavar="N",
                   help="first time N training steps with fxkernels and with the reference backend")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "classes", "subjects", "clips"):
        if getattr(args, name) < 1:
            raise SystemExit(f"models.train: --{name.replace('_', '-')} must be >= 1")
    return args


# ------------------------------------------------------------------------------------------- helpers
class Dist:
    """Process-group bookkeeping: a no-op single process unless launched by torchrun."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device("cpu")
        if self.world > 1:
            if torch.cuda.is_available():
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
                dist.init_process_group("nccl")
            else:
                dist.init_process_group("gloo")
        elif torch.cuda.is_available():
            self.device = torch.device("cuda")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


def build_dataset(args):
    if args.data == "synthetic":
        kw = {k: getattr(args, k) for k in ("amplitude", "noise", "jitter") if getattr(args, k) is not None}
        return SyntheticMicroExpressions(
            args.classes, args.subjects, args.clips, t=args.t, seed=args.seed, **kw
        )
    return FrameFolderDataset(args.data, csv=args.csv, t=args.t)


def make_folds(ds, args):
    if args.protocol == "loso":
        folds = [(f"subject {s}", tr, te) for s, tr, te in loso_folds(ds.subjects)]
        return folds[: args.max_folds] if args.max_folds else folds
    tr, te = split_indices(len(ds), args.test_fraction, seed=args.seed, labels=ds.labels)
    if not tr or not te:
        raise SystemExit(
            f"models.train: a {args.test_fraction:.2f} test split of {len(ds)} clips leaves an empty "
            "train or test set; use more clips or another --test-fraction"
        )
    return [("split", tr, te)]


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def new_model(args, num_classes: int, device):
    torch.manual_seed(args.seed)
    model = MOL(num_classes, semantics=args.semantics, backend="auto", t=args.t).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return model, opt


def backend_ctx(backend: str):
    # the model is built with backend="auto": use_backend picks what every fused layer runs
    return fxkernels.use_backend(backend) if backend != "auto" else contextlib.nullcontext()


def model_input(video: torch.Tensor, args) -> torch.Tensor:
    """(B, 1, t, S, S) clips -> model input (--input-norm, --input-scale). Why: at the official initialisation
    the ParC blocks' random biases and position encodings (std 1) follow a linear conv stack that shrinks its
    input, so raw [0, 1] frames leave the clip-dependent part of the features at a few percent of the total."""
    if args.input_norm == "none":
        return video * args.input_scale
    if args.input_norm == "temporal":  # only what changes over time is left: the motion
        video = video - video.mean(2, keepdim=True)
    dims = tuple(range(1, video.dim()))
    video = (video - video.mean(dims, keepdim=True)) / video.std(dims, keepdim=True).clamp_min(1e-6)
    return video * args.input_scale


def train_step(model, opt, batch, args) -> tuple[float, dict, torch.Tensor]:
    opt.zero_grad(set_to_none=True)
    outputs = model(model_input(batch["video"], args))
    loss, parts = mol_loss(outputs, batch, args.flow_weight, args.landmark_weight)
    loss.backward()
    opt.step()
    return loss.item(), parts, outputs[0].detach().argmax(1)


@torch.no_grad()
def predict(model, ds, idx, args, device) -> list[int]:
    model.eval()
    preds = []
    loader = DataLoader(Subset(ds, idx), batch_size=max(1, args.batch_size), shuffle=False)
    for batch in loader:
        preds += model(model_input(batch["video"].to(device), args))[0].argmax(1).tolist()
    model.train()
    return preds


def compare_backends(args, ds, idx, device, log) -> dict:
    """Steps/s of the same training step with the fxkernels backend and with plain PyTorch: one warm-up step
    each, then the two alternate step by step (so drifting machine load hits both alike); medians."""
    loader = DataLoader(Subset(ds, idx), batch_size=args.batch_size, shuffle=False)
    batch = to_device(next(iter(loader)), device)
    runs = {}
    for key, name in (
        ("fxkernels", args.backend if args.backend != "reference" else "auto"),
        ("reference", "reference"),
    ):
        model, opt = new_model(args, ds.num_classes, device)
        with backend_ctx(name):
            train_step(model, opt, batch, args)  # warm-up (first-call allocations, lazy imports)
        runs[key] = (model, opt, name, [])
    for _ in range(args.compare_backends):
        for model, opt, name, times in runs.values():
            with backend_ctx(name):
                t0 = time.perf_counter()
                train_step(model, opt, batch, args)
                times.append(time.perf_counter() - t0)
    res = {key: 1.0 / statistics.median(r[3]) for key, r in runs.items()}
    log(
        f"training steps/s (batch {args.batch_size}, t={args.t}, median of {args.compare_backends}): "
        f"fxkernels {res['fxkernels']:.3f}, reference {res['reference']:.3f} -> "
        f"{res['fxkernels'] / res['reference']:.2f}x"
    )
    return res


def save_checkpoint(path: Path, state: dict):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken checkpoint


def metrics_table(rows: list[tuple[str, dict, int]]) -> str:
    head = f"{'fold':<14}{'n':>5}{'acc':>8}{'wf1':>8}{'uf1':>8}{'uar':>8}"
    lines = [head, "-" * len(head)]
    for name, m, n in rows:
        lines.append(f"{name:<14}{n:>5}" + "".join(f"{m[k]:>8.3f}" for k in ("acc", "wf1", "uf1", "uar")))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
# what defines the folds, the data and the model: a checkpoint only resumes a run with the same values
RESUME_KEYS = ("model", "data", "csv", "protocol", "semantics", "classes", "subjects", "clips", "amplitude",
               "noise", "jitter", "t", "seed", "test_fraction", "max_folds", "input_norm", "input_scale")  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dd = Dist()
    log = (lambda *a: print(*a, flush=True)) if dd.main else (lambda *a: None)
    out = Path(args.out)
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
    if args.batch_size % dd.world:
        raise SystemExit(
            f"models.train: --batch-size {args.batch_size} must be divisible by {dd.world} processes"
        )
    ds = build_dataset(args)
    folds = make_folds(ds, args)
    chance = 1.0 / ds.num_classes
    be_name = fxkernels.default_backend() if args.backend == "auto" else args.backend
    log(
        f"MOL ({args.semantics}) on {args.data}: {len(ds)} clips, {ds.num_classes} classes, t={args.t}, "
        f"{len(folds)} fold(s) [{args.protocol}], backend={be_name}, {dd.world} process(es), "
        f"{torch.get_num_threads()} thread(s) each, device {dd.device}"
    )
    summary = {"args": vars(args)}
    if args.compare_backends and dd.main and not args.resume:
        summary["steps_per_s"] = compare_backends(args, ds, folds[0][1], dd.device, log)
    dd.barrier()

    ckpt_path = out / "checkpoint.pt"
    done: list[dict] = []  # finished folds: name, indices, predictions
    start_fold, start_epoch, resume_state = 0, 0, None
    if args.resume and ckpt_path.exists():
        resume_state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = resume_state.get("args", {})
        changed = [k for k in RESUME_KEYS if k in saved and saved[k] != getattr(args, k)]
        if changed:
            raise SystemExit(
                f"models.train: --resume with a checkpoint of another run ({ckpt_path}): "
                + ", ".join(
                    f"--{k.replace('_', '-')} was {saved[k]!r}, now {getattr(args, k)!r}" for k in changed
                )
            )
        done = resume_state["done"]
        start_fold, start_epoch = resume_state["fold"], resume_state["epoch"] + 1
        log(f"resumed from {ckpt_path}: fold {start_fold + 1}, epoch {start_epoch + 1}")
    elif args.resume:
        log(f"--resume: no checkpoint at {ckpt_path}, starting fresh")

    per_batch = args.batch_size // dd.world
    step_times = []
    epoch_log = []  # (fold, epoch, mean training loss, training accuracy) of this run
    model = None
    stopped = False
    with backend_ctx(args.backend):
        for fi in range(start_fold, len(folds)):
            name, tr_idx, te_idx = folds[fi]
            model, opt = new_model(args, ds.num_classes, dd.device)
            epoch0 = 0
            if resume_state is not None and fi == start_fold and start_epoch > 0:
                model.load_state_dict(resume_state["model"])
                opt.load_state_dict(resume_state["optimizer"])
                torch.set_rng_state(resume_state["rng"])
                epoch0 = start_epoch
            net = model
            if dd.world > 1:
                net = torch.nn.parallel.DistributedDataParallel(model)
            sampler = DistributedSampler(Subset(ds, tr_idx), dd.world, dd.rank, shuffle=True, seed=args.seed)
            loader = DataLoader(Subset(ds, tr_idx), batch_size=per_batch, sampler=sampler, drop_last=True)
            for epoch in range(epoch0, args.epochs):
                sampler.set_epoch(epoch)
                stats = torch.zeros(5, dtype=torch.float64)  # loss sum, correct, samples, steps, CE sum
                epoch_time = 0.0
                bar = loader
                if tqdm is not None and dd.main and not args.no_progress:
                    bar = tqdm(
                        loader, desc=f"{name} epoch {epoch + 1}/{args.epochs}", leave=False, file=sys.stdout
                    )
                for step, batch in enumerate(bar):
                    if args.max_steps is not None and step >= args.max_steps:
                        break
                    batch = to_device(batch, dd.device)
                    t0 = time.perf_counter()
                    loss, parts, pred = train_step(net, opt, batch, args)
                    step_times.append(time.perf_counter() - t0)
                    epoch_time += step_times[-1]
                    correct = (pred == batch["label"]).sum().item()
                    stats += torch.tensor(
                        [loss * len(pred), correct, len(pred), 1, parts["ce"].item() * len(pred)],
                        dtype=torch.float64,
                    )
                    if bar is not loader:
                        bar.set_postfix(loss=f"{loss:.3f}", ce=f"{parts['ce'].item():.3f}")
                steps = int(stats[3])
                stats = dd.all_sum(stats)
                epoch_log.append(
                    (fi, epoch, float(stats[0] / max(stats[2], 1)), float(stats[1] / max(stats[2], 1)))
                )
                log(
                    f"{name} epoch {epoch + 1}/{args.epochs}: loss {stats[0] / max(stats[2], 1):.4f} "
                    f"(CE {stats[4] / max(stats[2], 1):.4f}), "
                    f"train acc {stats[1] / max(stats[2], 1):.3f}, {steps} steps, "
                    f"{steps / max(epoch_time, 1e-9):.3f} steps/s"
                )
                if dd.main:
                    save_checkpoint(
                        ckpt_path,
                        {"model": model.state_dict(), "optimizer": opt.state_dict(), "fold": fi, "epoch": epoch,
                         "rng": torch.get_rng_state(), "done": done, "args": vars(args)},
                    )  # fmt: skip
                dd.barrier()
                if args.stop_after is not None and len(epoch_log) >= args.stop_after:
                    stopped = True
                    break
            if stopped:
                log(f"stopped after {len(epoch_log)} epoch(s) (--stop-after); continue with --resume")
                break
            preds = predict(model, ds, te_idx, args, dd.device)
            labels = [ds.labels[i] for i in te_idx]
            done.append({"name": name, "test_idx": list(te_idx), "pred": preds, "label": labels})
            m = all_metrics(labels, preds, ds.num_classes)
            log(f"{name}: test acc {m['acc']:.3f} (chance {chance:.3f}), wf1 {m['wf1']:.3f}, n={len(labels)}")
            if dd.main:  # the next fold starts at epoch 0
                save_checkpoint(
                    ckpt_path,
                    {"model": model.state_dict(), "optimizer": opt.state_dict(), "fold": fi + 1, "epoch": -1,
                     "rng": torch.get_rng_state(), "done": done, "args": vars(args)},
                )  # fmt: skip
            dd.barrier()

    if stopped:
        summary.update(
            stopped=True,
            epochs=[{"fold": f, "epoch": e, "loss": lo, "train_acc": a} for f, e, lo, a in epoch_log],
        )
        dd.close()
        return summary
    rows = [(f["name"], all_metrics(f["label"], f["pred"], ds.num_classes), len(f["label"])) for f in done]
    all_labels = [y for f in done for y in f["label"]]
    all_preds = [y for f in done for y in f["pred"]]
    overall = all_metrics(all_labels, all_preds, ds.num_classes)
    rows.append(("overall", overall, len(all_labels)))
    log(metrics_table(rows))
    log(f"overall accuracy {overall['acc']:.3f} vs chance {chance:.3f}")
    summary.update(
        {
            "folds": [{"name": n, "n": k, **m} for n, m, k in rows[:-1]],
            "epochs": [{"fold": f, "epoch": e, "loss": lo, "train_acc": a} for f, e, lo, a in epoch_log],
            "overall": overall,
            "chance": chance,
            "train_steps_per_s": len(step_times) / sum(step_times) if step_times else None,
            "param_checksum": float(sum(p.detach().double().sum() for p in model.parameters()))
            if model is not None
            else None,
        }
    )
    with open(out / f"summary_rank{dd.rank}.json" if dd.world > 1 else out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    dd.close()
    return summary


if __name__ == "__main__":
    main()

"""Train and evaluate the reference models: `python -m models.train mol --data synthetic ...`.

    python -m models.train mol --data synthetic --protocol split --epochs 3
    python -m models.train mol --data /path/CASME2 --protocol loso --epochs 40
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
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

import fxkernels

from .data import FrameFolderDataset, SyntheticMicroExpressions, loso_folds, split_indices
from .dist import Dist
from .metrics import all_metrics
from .mol import MOL, mol_loss

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    tqdm = None


# ------------------------------------------------------------------------------------------ arguments
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help (not for flags, nor where the default is None: "unset")
    and keeps the examples' line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (a clear message instead of a run that silently does nothing)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def count(text: str) -> int:
    """argparse type: an int >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    intro, rest = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(
        prog="python -m models.train",
        description=intro,
        epilog="examples:\n" + rest.split("\n\n", 1)[0] + "\n\nUser guide: docs/models/mol.md",
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", choices=["mol"], help="which reference model to train")
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", default="synthetic", help="'synthetic' or the root folder of a frame-folder data set"
    )
    g.add_argument("--csv", default="labels.csv", help="label CSV inside --data (real data sets)")
    g.add_argument(
        "--classes", type=int, default=5, help="synthetic: number of classes (real data: from the CSV labels)"
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
    g.add_argument(
        "--input-norm",
        choices=["clip", "temporal", "none"],
        default="clip",
        help="clip: standardise each clip; temporal: subtract each pixel's temporal mean, then "
        "standardise; none: raw [0, 1] frames",
    )
    g.add_argument("--input-scale", type=float, default=1.0, help="factor applied to the normalised input")
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
    g = p.add_argument_group("model and loss")
    g.add_argument(
        "--semantics",
        choices=["official", "paper"],
        default="official",
        help="official: the published code's layout (loads its checkpoints); paper: the paper's F5C blocks",
    )
    g.add_argument(
        "--backend",
        choices=list(fxkernels.BACKENDS),
        default="auto",
        help="fxkernels backend of every fused layer (reference: plain PyTorch)",
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
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=3, help="epochs per fold")
    g.add_argument("--batch-size", type=int, default=4, help="global batch size (split over processes)")
    g.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    g.add_argument(
        "--max-steps", type=positive_int, default=None, help="cap on optimiser steps per epoch (unset: all)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the initialisation")
    g.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads per process (unset: torch's)"
    )
    g = p.add_argument_group("output and control")
    g.add_argument("--out", default="runs/mol", help="folder of the checkpoint and summary.json")
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
    g.add_argument("--no-progress", action="store_true", help="no per-step progress bar")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name in ("epochs", "batch_size", "classes", "subjects", "clips"):
        if getattr(args, name) < 1:
            raise SystemExit(
                f"models.train: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
            )
    if args.t < 4:  # MOL's 3-D conv spans 5 of the 2(t-1) pair steps
        raise SystemExit(f"models.train: --t must be >= 4 for MOL, got {args.t}")
    return args


# ------------------------------------------------------------------------------------------- helpers
def build_dataset(args):
    if args.data == "synthetic":
        kw = {k: getattr(args, k) for k in ("amplitude", "noise", "jitter") if getattr(args, k) is not None}
        return SyntheticMicroExpressions(
            args.classes, args.subjects, args.clips, t=args.t, seed=args.seed, **kw
        )
    if not os.path.isdir(args.data):
        raise SystemExit(f"models.train: --data {args.data!r} is neither 'synthetic' nor a folder")
    return FrameFolderDataset(args.data, csv=args.csv, t=args.t)


def make_folds(ds, args):
    if args.protocol == "loso":
        folds = [(f"subject {s}", tr, te) for s, tr, te in loso_folds(ds.subjects)]
        if len(folds) < 2:
            raise SystemExit(
                f"models.train: --protocol loso needs clips of at least 2 subjects (each fold trains on the "
                f"others), got {len(folds)} subject(s); use --protocol split"
            )
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


def describe_backend(backend: str, device: torch.device) -> str:
    """The backend for the log line: for "auto", the fused kernels it picks on `device` (an op without them
    runs the reference)."""
    if backend == "auto":
        backend = fxkernels.default_backend()  # a use_backend / FXKERNELS_BACKEND default
    if backend != "auto":
        return backend
    avail = fxkernels.backends()
    fused = [b for b in (("triton", "cuda") if device.type == "cuda" else ("cpu",)) if avail[b]]
    return f"auto -> {'/'.join(fused) or 'reference'}"


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


def checkpoint_state(model, opt, fold: int, epoch: int, done: list, args) -> dict:
    """What `--resume` needs: weights, optimiser (None: left out), position (the last finished epoch of
    `fold`; -1: none yet), RNG state, the finished folds' predictions and the arguments (to refuse another
    run's checkpoint)."""
    state = {"model": model.state_dict(), "fold": fold, "epoch": epoch, "rng": torch.get_rng_state(),
             "done": done, "args": vars(args)}  # fmt: skip
    if opt is not None:
        state["optimizer"] = opt.state_dict()
    return state


CHECKPOINT_KEYS = ("model", "fold", "epoch", "rng", "done", "args")


def load_checkpoint(path: Path) -> dict:
    """The state `checkpoint_state` wrote at `path`; SystemExit naming the file and the reason when it is
    empty, not a torch checkpoint, or not one of this CLI's."""
    if path.stat().st_size == 0:
        raise SystemExit(f"models.train: cannot resume: the checkpoint {path} is empty (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises EOFError, UnpicklingError, RuntimeError, ... for a broken file
        raise SystemExit(
            f"models.train: cannot resume: {path} is not a readable torch checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(state, dict):
        raise SystemExit(
            f"models.train: cannot resume: {path} holds a {type(state).__name__}, not a models.train checkpoint"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise SystemExit(
            f"models.train: cannot resume: {path} is not a models.train checkpoint (missing {', '.join(missing)})"
        )
    return state


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
    ckpt_path = out / "checkpoint.pt"
    # before any work: never replace an earlier run's checkpoint, never silently start afresh on --resume
    if args.resume and args.overwrite:
        raise SystemExit("models.train: --resume and --overwrite contradict each other; pass one")
    if args.resume and not ckpt_path.exists():
        raise SystemExit(
            f"models.train: --resume: no checkpoint at {ckpt_path} (run without --resume to start)"
        )
    if not args.resume and ckpt_path.exists() and not args.overwrite:
        raise SystemExit(
            f"models.train: {ckpt_path} holds a checkpoint of an earlier run; pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
    if args.batch_size % dd.world:
        raise SystemExit(
            f"models.train: --batch-size {args.batch_size} must be a multiple of the number of processes "
            f"({dd.world}): each process trains on an equal share of every batch"
        )
    ds = build_dataset(args)
    folds = make_folds(ds, args)
    chance = 1.0 / ds.num_classes
    be_name = describe_backend(args.backend, dd.device)
    log(
        f"MOL ({args.semantics}) on {args.data}: {len(ds)} clips, {ds.num_classes} classes, t={args.t}, "
        f"{len(folds)} fold(s) [{args.protocol}], backend={be_name}, {dd.world} process(es), "
        f"{torch.get_num_threads()} thread(s) each, device {dd.device}"
    )
    summary = {"args": vars(args)}
    if args.compare_backends and dd.main and not args.resume:
        summary["steps_per_s"] = compare_backends(args, ds, folds[0][1], dd.device, log)
    dd.barrier()

    done: list[dict] = []  # finished folds: name, indices, predictions
    start_fold, start_epoch, resume_state = 0, 0, None
    if args.resume:
        resume_state = load_checkpoint(ckpt_path)
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

    per_batch = args.batch_size // dd.world
    step_times = []
    epoch_log: list[dict] = []  # fold, epoch, mean training loss and training accuracy of this run's epochs
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
                mean_loss, acc, mean_ce = (float(stats[i] / max(stats[2], 1)) for i in (0, 1, 4))
                epoch_log.append({"fold": fi, "epoch": epoch, "loss": mean_loss, "train_acc": acc})
                log(
                    f"{name} epoch {epoch + 1}/{args.epochs}: loss {mean_loss:.4f} (CE {mean_ce:.4f}), "
                    f"train acc {acc:.3f}, {steps} steps, {steps / max(epoch_time, 1e-9):.3f} steps/s"
                )
                if dd.main:
                    save_checkpoint(ckpt_path, checkpoint_state(model, opt, fi, epoch, done, args))
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
            if dd.main:  # the next fold starts at epoch 0 from a fresh model and optimiser
                # so no resume reads this optimiser state (AdamW's moments: 2/3 of the file); the trained
                # weights stay for the user
                save_checkpoint(ckpt_path, checkpoint_state(model, None, fi + 1, -1, done, args))
            dd.barrier()

    if stopped:
        summary.update(stopped=True, epochs=epoch_log)
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
            "epochs": epoch_log,
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

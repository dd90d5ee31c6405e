"""The training loop shared by every model (`python -m models.train MODEL ...`): folds, epochs, checkpoints and
`--resume`, the backend comparison, metrics, and what a run leaves in `<out>`. What is model-specific comes from
its `Task` (models/train/task.py)."""

from __future__ import annotations

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

from ..data import loso_folds, split_indices
from ..dist import Dist
from .cli import parse_args
from .records import CURVES_PNG, EpochLog, metrics_table, plot_curves
from .tasks import TASKS

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    tqdm = None


# ------------------------------------------------------------------------------------------- helpers
def build_dataset(args):
    return TASKS[args.model].build_dataset(args)


def make_folds(ds, args):
    own = TASKS[args.model].folds(ds, args)
    if own is not None:
        return own
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


def new_model(args, ds, device):
    task = TASKS[args.model]
    torch.manual_seed(args.seed)
    model = task.build_model(args, ds).to(device)
    return model, task.optimizer(args, model.parameters())


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


def train_step(model, opt, batch, args) -> tuple[float, dict, torch.Tensor]:
    opt.zero_grad(set_to_none=True)
    loss, parts, pred = TASKS[args.model].loss(model, batch, args, train=True)
    loss.backward()
    opt.step()
    return loss.item(), parts, pred


@torch.no_grad()
def predict(model, ds, idx, args, device) -> list[int]:
    model.eval()
    preds = []
    loader = DataLoader(Subset(ds, idx), batch_size=max(1, args.batch_size), shuffle=False)
    for batch in loader:
        preds += TASKS[args.model].predict(model, to_device(batch, device), args).tolist()
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
        model, opt = new_model(args, ds, device)
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
        f"training steps/s (batch {args.batch_size}, median of {args.compare_backends}): "
        f"fxkernels {res['fxkernels']:.3f}, reference {res['reference']:.3f} -> "
        f"{res['fxkernels'] / res['reference']:.2f}x"
    )
    return res


def checkpoint_state(model, opt, fold: int, epoch: int, done: list, args, sched=None) -> dict:
    """What `--resume` needs: weights, optimiser (None: left out), position (the last finished epoch of
    `fold`; -1: none yet), RNG state, the finished folds' predictions and the arguments (to refuse another
    run's checkpoint)."""
    state = {"model": model.state_dict(), "fold": fold, "epoch": epoch, "rng": torch.get_rng_state(),
             "done": done, "args": vars(args)}  # fmt: skip
    if opt is not None:
        state["optimizer"] = opt.state_dict()
    if sched is not None:
        state["scheduler"] = sched.state_dict()
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


# ---------------------------------------------------------------------------------------------- main
# what defines the folds, the data and the model: a checkpoint only resumes a run with the same values
RESUME_KEYS = ("model", "data", "csv", "protocol", "seed", "test_fraction", "max_folds")


def main(argv=None) -> dict:
    args = parse_args(argv)
    task = TASKS[args.model]
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
    chance = 1.0 / task.num_classes(ds)
    be_name = describe_backend(args.backend, dd.device)
    log(
        f"{task.describe(args, ds)}, {len(folds)} fold(s) [{args.protocol}], backend={be_name}, "
        f"{dd.world} process(es), {torch.get_num_threads()} thread(s) each, device {dd.device}"
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
        keys = RESUME_KEYS + task.resume_keys
        changed = [k for k in keys if k in saved and saved[k] != getattr(args, k)]
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
    records = None  # metrics.csv, created with the first epoch's loss parts
    tests = {i: f["metrics"]["acc"] for i, f in enumerate(done) if "metrics" in f}
    model = None
    stopped = False

    def draw():
        if dd.main and records is not None:
            plot_curves(records.rows, out / CURVES_PNG, task.title, tests, chance)

    with backend_ctx(args.backend):
        for fi in range(start_fold, len(folds)):
            name, tr_idx, te_idx = folds[fi]
            model, opt = new_model(args, ds, dd.device)
            sched = task.scheduler(args, opt)
            epoch0 = 0
            if resume_state is not None and fi == start_fold and start_epoch > 0:
                model.load_state_dict(resume_state["model"])
                opt.load_state_dict(resume_state["optimizer"])
                if sched is not None and "scheduler" in resume_state:
                    sched.load_state_dict(resume_state["scheduler"])
                torch.set_rng_state(resume_state["rng"])
                epoch0 = start_epoch
            net = model
            if dd.world > 1:
                net = torch.nn.parallel.DistributedDataParallel(model)
            sampler = DistributedSampler(Subset(ds, tr_idx), dd.world, dd.rank, shuffle=True, seed=args.seed)
            loader = DataLoader(Subset(ds, tr_idx), batch_size=per_batch, sampler=sampler, drop_last=True)
            for epoch in range(epoch0, args.epochs):
                sampler.set_epoch(epoch)
                sums: dict[str, float] = {}  # per-sample sums of the loss parts
                stats = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, samples, steps
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
                    stats += torch.tensor([loss * len(pred), correct, len(pred), 1], dtype=torch.float64)
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * len(pred)
                    if bar is not loader:
                        bar.set_postfix(
                            loss=f"{loss:.3f}", **{k: f"{float(v):.3f}" for k, v in parts.items()}
                        )
                steps = int(stats[3])
                part_names = sorted(sums)
                stats = dd.all_sum(torch.cat([stats, torch.tensor([sums[k] for k in part_names],
                                                                  dtype=torch.float64)]))  # fmt: skip
                n = max(float(stats[2]), 1.0)
                mean_loss, acc = float(stats[0]) / n, float(stats[1]) / n
                means = {k: float(stats[4 + i]) / n for i, k in enumerate(part_names)}
                epoch_log.append({"fold": fi, "epoch": epoch, "loss": mean_loss, "train_acc": acc})
                speed = steps / max(epoch_time, 1e-9)
                parts_text = " (" + ", ".join(f"{k} {v:.4f}" for k, v in means.items()) + ")" if means else ""
                log(
                    f"{name} epoch {epoch + 1}/{args.epochs}: loss {mean_loss:.4f}{parts_text}, "
                    f"train acc {acc:.3f}, {steps} steps, {speed:.3f} steps/s"
                )
                if records is None:
                    resume_at = (start_fold, start_epoch) if resume_state is not None else None
                    records = EpochLog(out, part_names, resume_at, enabled=dd.main)
                records.add({"fold": fi, "fold_name": name, "epoch": epoch, "loss": mean_loss, "train_acc": acc,
                             "steps": steps, "steps_per_s": speed, **{f"loss_{k}": v for k, v in means.items()}})  # fmt: skip
                if sched is not None:
                    sched.step()
                if dd.main:
                    save_checkpoint(ckpt_path, checkpoint_state(model, opt, fi, epoch, done, args, sched))
                dd.barrier()
                if args.stop_after is not None and len(epoch_log) >= args.stop_after:
                    stopped = True
                    break
            if stopped:
                draw()
                log(f"stopped after {len(epoch_log)} epoch(s) (--stop-after); continue with --resume")
                break
            preds = predict(model, ds, te_idx, args, dd.device)
            labels = [ds.labels[i] for i in te_idx]
            m = task.metrics(labels, preds, ds)
            done.append(
                {"name": name, "test_idx": list(te_idx), "pred": preds, "label": labels, "metrics": m}
            )
            tests[fi] = m["acc"]
            log(
                f"{name}: test acc {m['acc']:.3f} (chance {chance:.3f}), "
                + ", ".join(f"{k} {m[k]:.3f}" for k in task.metric_columns if k != "acc")
                + f", n={len(labels)}"
            )
            if dd.main:  # the next fold starts at epoch 0 from a fresh model and optimiser
                # so no resume reads this optimiser state (AdamW's moments: 2/3 of the file); the trained
                # weights stay for the user
                save_checkpoint(ckpt_path, checkpoint_state(model, None, fi + 1, -1, done, args))
            draw()
            dd.barrier()

    if stopped:
        summary.update(stopped=True, epochs=epoch_log)
        dd.close()
        return summary
    rows = [(f["name"], task.metrics(f["label"], f["pred"], ds), len(f["label"])) for f in done]
    all_labels = [y for f in done for y in f["label"]]
    all_preds = [y for f in done for y in f["pred"]]
    overall = task.metrics(all_labels, all_preds, ds)
    rows.append(("overall", overall, len(all_labels)))
    log(metrics_table(rows, task.metric_columns))
    log(f"overall accuracy {overall['acc']:.3f} vs chance {chance:.3f}")
    figures = []
    if args.save_figures and dd.main and model is not None and done:
        figures = [str(p) for p in task.figures(model, ds, done[-1]["test_idx"], args, out, dd.device)]
        for p in figures:
            log(f"figure: {p}")
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
            "figures": figures,
        }
    )
    with open(out / f"summary_rank{dd.rank}.json" if dd.world > 1 else out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    dd.close()
    return summary

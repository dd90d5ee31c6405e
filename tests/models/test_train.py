"""The training CLI (models/train/): learning on synthetic data, checkpoint/resume, LOSO, DDP under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fxkernels
from models import train

ROOT = Path(__file__).resolve().parents[2]
TINY = ["mol", "--data", "synthetic", "--classes", "3", "--subjects", "2", "--clips", "6", "--t", "4",
        "--batch-size", "2", "--no-progress", "--seed", "1"]  # fmt: skip


def run_main(args, out):
    return train.main(args + ["--out", str(out)])


def test_resume_continues_bitwise(tmp_path, capsys):
    # 2 epochs in one go == 1 epoch, stop (--stop-after 1), then --resume (model, optimiser and RNG restored)
    full = run_main(TINY + ["--epochs", "2", "--max-steps", "1"], tmp_path / "full")
    part = run_main(TINY + ["--epochs", "2", "--max-steps", "1", "--stop-after", "1"], tmp_path / "split")
    assert part["stopped"] and len(part["epochs"]) == 1
    ck = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert ck["fold"] == 0 and ck["epoch"] == 0
    capsys.readouterr()
    resumed = run_main(TINY + ["--epochs", "2", "--max-steps", "1", "--resume"], tmp_path / "split")
    assert "resumed from" in capsys.readouterr().out
    assert [e["epoch"] for e in resumed["epochs"]] == [1]
    assert resumed["epochs"][0]["loss"] == full["epochs"][1]["loss"]
    assert resumed["param_checksum"] == full["param_checksum"]
    assert resumed["overall"] == full["overall"]


def test_resume_refuses_another_runs_checkpoint(tmp_path):
    run_main(TINY + ["--epochs", "2", "--max-steps", "1", "--stop-after", "1"], tmp_path)
    with pytest.raises(SystemExit, match="--seed was 1, now 2"):
        run_main([*TINY[:-1], "2", "--epochs", "2", "--max-steps", "1", "--resume"], tmp_path)


def test_loso_folds_and_table(tmp_path, capsys):
    s = run_main(TINY + ["--protocol", "loso", "--epochs", "1", "--max-steps", "1"], tmp_path)
    out = capsys.readouterr().out
    assert [f["name"] for f in s["folds"]] == ["subject 0", "subject 1"]
    assert sum(f["n"] for f in s["folds"]) == 12  # every clip is tested exactly once
    for col in ("acc", "wf1", "uf1", "uar"):
        assert col in out
    assert "overall" in out and json.loads((tmp_path / "summary.json").read_text())[
        "chance"
    ] == pytest.approx(1 / 3)


def test_finished_fold_checkpoint_keeps_no_optimiser_state(tmp_path):
    # the next fold starts from a fresh model and optimiser: the end-of-fold checkpoint needs no AdamW state
    s = run_main(TINY + ["--protocol", "loso", "--epochs", "1", "--max-steps", "1"], tmp_path)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["fold"] == 2 and ck["epoch"] == -1 and "optimizer" not in ck
    assert ck["model"].keys() == train.MOL(3, t=4).state_dict().keys()
    again = run_main(TINY + ["--protocol", "loso", "--epochs", "1", "--max-steps", "1", "--resume"], tmp_path)
    assert again["overall"] == s["overall"] and again["folds"] == s["folds"]


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        run_main(["mol", "--epochs", "0"], tmp_path)
    with pytest.raises(SystemExit, match="empty"):
        run_main(TINY + ["--clips", "1", "--epochs", "1"], tmp_path)
    with pytest.raises(SystemExit, match="--epochs must be >= 1, got 0"):
        train.parse_args(["mol", "--epochs", "0"])
    with pytest.raises(SystemExit, match="--t must be >= 4 for MOL, got 3"):
        train.parse_args(["mol", "--t", "3"])
    with pytest.raises(SystemExit, match="neither 'synthetic' nor a folder"):
        train.build_dataset(train.parse_args(["mol", "--data", str(tmp_path / "synthetc")]))


def test_help_has_a_line_per_option_and_shows_the_defaults(capsys):
    parser = train.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare whitespace-folded
    options = [a for a in parser._actions if a.dest != "help"]
    assert len(options) == len(vars(train.parse_args(["mol"])))  # every option of the namespace is listed
    for action in options:
        assert action.help and action.help.strip(), action.dest
        assert " ".join(action.help.split()) in text, action.dest
        if action.default is not None and action.nargs != 0 and action.option_strings:
            assert f"{' '.join(action.help.split())} (default: {action.default})" in text, action.dest
    assert "--landmark-weight LANDMARK_WEIGHT weight of the inter-ocular-normalised landmark L1" in text
    assert "(default: 68.0)" in text and "(default: 0.1)" in text
    assert "docs/models/mol.md" in text


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    # torchrun, 2 processes on the gloo backend; each trains on half of every batch and DDP averages gradients,
    # so both processes must end with identical parameters
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "models.train", *TINY, "--epochs", "1", "--max-steps", "2", "--threads", "1",
           "--out", str(tmp_path)]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    s0 = json.loads((tmp_path / "summary_rank0.json").read_text())
    s1 = json.loads((tmp_path / "summary_rank1.json").read_text())
    assert s0["param_checksum"] == s1["param_checksum"]
    assert s0["overall"] == s1["overall"]
    assert (tmp_path / "checkpoint.pt").exists()


def test_seeded_training_lowers_the_loss(tmp_path):
    s = run_main(TINY + ["--epochs", "4", "--max-steps", "3", "--amplitude", "6", "--lr", "1e-3"], tmp_path)
    losses = [e["loss"] for e in s["epochs"]]
    assert len(losses) == 4 and all(map(lambda v: v == v and v < float("inf"), losses))
    assert losses[-1] < 0.85 * losses[0], losses


def demo_argv():
    text = (ROOT / "Makefile").read_text()
    block = text.split("DEMO_ARGS ?=", 1)[1].split("\ndemo:", 1)[0]
    return block.replace("\\\n", " ").split()


@pytest.mark.slow
def test_demo_training_beats_chance(tmp_path):
    # README's main job (`make demo`) as configured in the Makefile, without the backend timing: the seeded
    # run must lower the loss and classify the held-out clips above chance (39 min on 2 loaded CPU cores)
    s = train.main(["mol", *demo_argv(), "--compare-backends", "0", "--out", str(tmp_path), "--no-progress"])
    losses = [e["loss"] for e in s["epochs"]]
    assert losses[-1] < 0.5 * losses[0], losses
    assert s["overall"]["acc"] >= 2 * s["chance"], s["overall"]


def test_make_demo_arguments_are_valid():
    # README's first command (`make demo`) runs `python -m models.train mol $(DEMO_ARGS)`
    args = train.parse_args(["mol", *demo_argv()])
    ds = train.build_dataset(args)
    folds = train.make_folds(ds, args)
    assert len(ds) == args.subjects * args.clips and len(folds) == 1 and args.compare_backends > 0
    ds[0]  # the synthetic settings generate a clip


@pytest.mark.parametrize("norm", ["clip", "temporal", "none"])
def test_model_input_normalisation(norm):
    args = train.parse_args(["mol", "--input-norm", norm, "--input-scale", "2"])
    video = torch.rand(3, 1, 4, 8, 8, dtype=torch.float64) * 0.5 + 0.2
    x = train.model_input(video, args)
    if norm == "none":
        assert torch.equal(x, 2 * video)
        return
    flat = x.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(flat.std(1), torch.full((3,), 2.0, dtype=torch.float64))
    if norm == "temporal":  # every pixel's time series is centred: static content is gone
        assert x.mean(2).abs().max() < 1e-12


def test_compare_backends_reports_both(tmp_path, capsys):
    s = run_main(TINY + ["--epochs", "1", "--max-steps", "1", "--compare-backends", "1"], tmp_path)
    assert set(s["steps_per_s"]) == {"fxkernels", "reference"} and min(s["steps_per_s"].values()) > 0
    assert "training steps/s" in capsys.readouterr().out


def test_log_names_the_backend_auto_picks():
    cpu = torch.device("cpu")
    assert train.describe_backend("reference", cpu) == "reference"
    with fxkernels.use_backend("reference"):  # a process-wide default replaces "auto"
        assert train.describe_backend("auto", cpu) == "reference"
    assert train.describe_backend("auto", cpu) == (
        "auto -> cpu" if fxkernels.backends()["cpu"] else "auto -> reference"
    )


# ------------------------------------------------------------------- never lose work, fail fast on nonsense
def test_refuses_to_replace_an_earlier_runs_checkpoint(tmp_path):
    run_main(TINY + ["--epochs", "1", "--max-steps", "1"], tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit, match="holds a checkpoint of an earlier run; pass --resume"):
        run_main(TINY + ["--epochs", "1", "--max-steps", "1", "--seed", "2"], tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    with pytest.raises(SystemExit, match="contradict"):
        run_main(TINY + ["--epochs", "1", "--resume", "--overwrite"], tmp_path)
    again = run_main(TINY[:-1] + ["2", "--epochs", "1", "--max-steps", "1", "--overwrite"], tmp_path)
    assert again["args"]["seed"] == 2
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["args"]["seed"] == 2


def test_resume_without_a_checkpoint_fails_naming_the_path(tmp_path):
    with pytest.raises(SystemExit, match=rf"--resume: no checkpoint at {tmp_path / 'checkpoint.pt'}"):
        run_main(TINY + ["--epochs", "1", "--resume"], tmp_path)


@pytest.mark.parametrize(
    "content,why",
    [
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"not a checkpoint\x00\x01", "is not a readable torch checkpoint", id="garbage"),
        pytest.param(
            "dict", r"not a models.train checkpoint \(missing fold, epoch, rng, done, args\)", id="dict"
        ),
        pytest.param("list", "holds a list, not a models.train checkpoint", id="list"),
    ],
)
def test_unreadable_checkpoint_says_which_file_and_why(tmp_path, content, why):
    path = tmp_path / "checkpoint.pt"
    if content == "dict":
        torch.save({"model": {}}, path)
    elif content == "list":
        torch.save([1, 2], path)
    else:
        path.write_bytes(content)
    with pytest.raises(SystemExit, match=rf"cannot resume: .*{path.name}.*{why}"):
        run_main(TINY + ["--epochs", "1", "--resume"], tmp_path)


@pytest.mark.parametrize(
    "flag,value",
    [
        pytest.param("--max-steps", "-1", id="max-steps"),
        pytest.param("--threads", "0", id="threads"),
        pytest.param("--stop-after", "0", id="stop-after"),
        pytest.param("--max-folds", "0", id="max-folds"),
        pytest.param("--compare-backends", "-2", id="compare-backends"),
    ],
)
def test_nonsense_counts_are_rejected(flag, value, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["mol", flag, value])
    assert f"argument {flag}: must be >=" in capsys.readouterr().err


def test_loso_with_one_subject_is_refused(tmp_path):
    one = TINY[: TINY.index("--subjects")] + ["--subjects", "1"] + TINY[TINY.index("--subjects") + 2 :]
    with pytest.raises(SystemExit, match="loso needs clips of at least 2 subjects"):
        run_main(one + ["--protocol", "loso", "--epochs", "1"], tmp_path)


def test_metrics_csv_and_curves_png(tmp_path):
    # every epoch is a row of metrics.csv (loss and its parts, training accuracy); curves.png is drawn per fold;
    # a resumed run keeps the rows its checkpoint holds and continues them
    import csv

    run_main(TINY + ["--epochs", "2", "--max-steps", "1", "--stop-after", "1"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["fold"], r["epoch"]) for r in rows] == [("0", "0")]
    assert {"loss", "train_acc", "loss_ce", "loss_flow", "loss_landmarks", "steps_per_s"} <= rows[0].keys()
    s = run_main(TINY + ["--epochs", "2", "--max-steps", "1", "--resume"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["fold"], r["epoch"]) for r in rows] == [("0", "0"), ("0", "1")]
    assert float(rows[1]["loss"]) == pytest.approx(s["epochs"][0]["loss"])
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

"""models.data: the synthetic clips (determinism, bookkeeping, local class motions, exact flow and landmarks),
the frame-folder loader on a generated folder tree, the subject-wise splits and the inter-ocular distance."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models.data import (
    PRIMITIVES,
    FrameFolderDataset,
    SyntheticMicroExpressions,
    _invert,
    _pixel_grid,
    inter_ocular_distance,
    loso_folds,
    split_indices,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the clips are made of many small tensor ops: extra intra-op threads only add overhead on a busy box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


KEYS = {"video", "flow", "landmarks", "label", "subject", "has_flow", "has_landmarks"}


def check_item(item, t, S):
    assert set(item) == KEYS
    assert item["video"].shape == (1, t, S, S) and item["video"].dtype == torch.float32
    assert item["flow"].shape == (2, S, S, t - 1) and item["flow"].dtype == torch.float32
    assert item["landmarks"].shape == (136, t) and item["landmarks"].dtype == torch.float32
    for k in ("label", "subject"):
        assert item[k].shape == () and item[k].dtype == torch.int64
    for k in ("has_flow", "has_landmarks"):
        assert item[k].shape == () and item[k].dtype == torch.bool
    assert 0.0 <= float(item["video"].min()) and float(item["video"].max()) <= 1.0


def sample(img, pts):
    """Bilinear values of ``img (C, S, S)`` at pixel points ``pts (..., 2)`` -> ``(C, ...)``."""
    S = img.shape[-1]
    grid = (2 * pts / (S - 1) - 1).reshape(1, 1, -1, 2)
    out = F.grid_sample(img[None], grid, mode="bilinear", align_corners=True)
    return out.reshape(img.shape[0], *pts.shape[:-1])


# ---------------------------------------------------------------------------------------------------------
# SyntheticMicroExpressions
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds():
    return SyntheticMicroExpressions(num_classes=5, num_subjects=3, clips=7, t=8, size=128, seed=0)


def test_shapes_dtypes_and_collate(ds):
    check_item(ds[0], 8, 128)
    small = SyntheticMicroExpressions(num_subjects=2, clips=3, t=4, size=48)
    check_item(small[5], 4, 48)
    batch = next(iter(torch.utils.data.DataLoader(small, batch_size=3)))
    assert batch["video"].shape == (3, 1, 4, 48, 48)
    assert batch["flow"].shape == (3, 2, 48, 48, 3)
    assert batch["landmarks"].shape == (3, 136, 4)
    assert batch["label"].shape == (3,) and batch["has_flow"].all()


def test_determinism(ds):
    a, b = ds[4], SyntheticMicroExpressions(num_classes=5, num_subjects=3, clips=7, seed=0)[4]
    for k in KEYS:
        assert torch.equal(a[k], b[k]), k
    c = SyntheticMicroExpressions(num_classes=5, num_subjects=3, clips=7, seed=1)[4]
    assert not torch.equal(a["video"], c["video"])
    assert not torch.equal(ds[4]["video"], ds[5]["video"])
    assert ds.labels == SyntheticMicroExpressions(num_classes=5, num_subjects=3, clips=7, seed=0).labels


def test_bookkeeping_and_balance():
    d = SyntheticMicroExpressions(num_classes=5, num_subjects=4, clips=12, size=32)
    assert len(d) == 48 and d.num_classes == 5 and d.t == 8 and d.size == 32
    assert d.subjects == [i // 12 for i in range(48)]
    for s in range(4):
        counts = np.bincount([y for y, x in zip(d.labels, d.subjects) if x == s], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert len(set(map(tuple, np.array(d.labels).reshape(4, 12).tolist()))) > 1  # shuffled per subject
    for i in (0, 13, 47):
        item = d[i]
        assert int(item["label"]) == d.labels[i] and int(item["subject"]) == d.subjects[i]
    with pytest.raises(IndexError):
        d[48]


def test_class_counts_and_primitives():
    d3 = SyntheticMicroExpressions(num_classes=3, num_subjects=1, clips=3, size=32)
    assert sorted(d3.labels) == [0, 1, 2]
    d = SyntheticMicroExpressions(num_classes=12, num_subjects=1, clips=12, size=32)
    prims = [d.class_primitives(c) for c in range(12)]
    assert prims[:10] == [(p,) for p in PRIMITIVES] and len(set(prims)) == 12
    assert prims[10] == (PRIMITIVES[0], PRIMITIVES[1])
    check_item(d[d.labels.index(11)], 8, 32)
    with pytest.raises(ValueError):
        SyntheticMicroExpressions(num_classes=56)


def part_mask(landmarks, S, margin):
    """``(S, S)`` bool: boxes around brows + eyes (points 17-26, 36-47) and the mouth (48-67), grown by margin."""
    pts = landmarks.reshape(68, 2)
    mask = torch.zeros(S, S, dtype=torch.bool)
    for group in (
        list(range(17, 22)) + list(range(36, 42)),
        list(range(22, 27)) + list(range(42, 48)),
        range(48, 68),
    ):
        p = pts[list(group)]
        x0, y0 = (p.min(0).values - margin).floor().int().clamp(0, S).tolist()
        x1, y1 = (p.max(0).values + margin).ceil().int().clamp(0, S).tolist()
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def test_classes_differ_only_locally(ds):
    clips = [ds.make_clip(1, c, clip_seed=123) for c in range(5)]
    apex = int(ds._scene(1, 0, 123).a.argmax())  # the intensity profile depends on the clip, not the class
    # the first frame is neutral (intensity 0): the same for every class, nuisances included (up to the
    # < 1e-4 soft-edge tails that the renderer cuts at class-dependent box sizes)
    for c in clips[1:]:
        assert torch.allclose(c["video"][0, 0], clips[0]["video"][0, 0], atol=2e-4, rtol=0)
    S = ds.size
    mask = part_mask(clips[0]["landmarks"][:, 0], S, margin=10)
    assert mask.float().mean() < 0.25  # the part boxes are a small share of the frame
    for i in range(5):
        for j in range(i + 1, 5):
            diff = (clips[i]["video"][0, apex] - clips[j]["video"][0, apex]).abs()
            assert float(diff.sum()) > 5.0, (i, j)  # the classes do differ at the apex...
            assert float(diff[mask].sum() / diff.sum()) > 0.97, (i, j)  # ...and only around brows/eyes/mouth


def test_classes_move_their_own_parts():
    """Each primitive moves the landmarks of its part, in its direction."""
    ds = SyntheticMicroExpressions(num_subjects=1, clips=5, jitter=0.0)
    lm = {c: ds.make_clip(0, c, clip_seed=7)["landmarks"].reshape(68, 2, ds.t) for c in range(5)}
    move = {c: (v - v[..., :1]).abs().amax(-1).sum(-1) for c, v in lm.items()}  # (68,) peak |motion|
    brows, eyes, mouth = slice(17, 27), slice(36, 48), slice(48, 68)
    dy = {c: (v[:, 1] - v[:, 1, :1]) for c, v in lm.items()}  # (68, t) vertical motion
    apex = int(dy[0][brows].abs().mean(0).argmax())
    assert (dy[0][brows, apex] < -1).all()  # brows raise
    assert (dy[1][brows, apex].mean() > 0.5) and move[1][mouth].max() < 0.5  # brows lower
    assert (dy[2][[48, 54], apex] < -1).all() and move[2][brows].max() < 0.5  # corners up
    assert (dy[3][[48, 54], apex] > 1).all() and move[3][eyes].max() < 0.5  # corners down
    upper, lower = [37, 38, 43, 44], [40, 41, 46, 47]
    assert (dy[4][upper, apex] > 0.5).all() and (dy[4][lower, apex] < -0.3).all()  # eyes narrow
    assert move[4][mouth].max() < 0.5


def test_flow_is_exact_geometrically(ds):
    """The analytic maps: the material point under p in frame k sits under p + flow_k(p) in frame k+1."""
    S, t = ds.size, ds.t
    p = _pixel_grid(S).reshape(1, -1, 2)
    for i in (0, 8, 16):
        sc = ds._scene(ds.subjects[i], ds.labels[i], ds.clip_seed(i))
        flow = ds[i]["flow"]
        for k in range(t - 1):
            qk = _invert(sc.motion, p - sc.g[k], sc.a[k : k + 1])
            p1 = p + flow[..., k].permute(1, 2, 0).reshape(1, -1, 2)
            qk1 = _invert(sc.motion, p1 - sc.g[k + 1], sc.a[k + 1 : k + 2])
            assert float((qk - qk1).abs().max()) < 1e-3


def test_flow_warps_next_frame_onto_current():
    """frame_{k+1}(p + flow_k(p)) ~= frame_k(p): bilinear backward warping of the pixel grid beats the
    zero-flow baseline by a wide margin wherever something moves (the residual is interpolation error)."""
    d = SyntheticMicroExpressions(num_subjects=2, clips=5, noise=0.0, seed=3)
    err_warp, err_zero = [], []
    for i in range(len(d)):
        item = d[i]
        v, flow = item["video"][0], item["flow"]
        p = _pixel_grid(d.size)
        for k in range(d.t - 1):
            f = flow[..., k]
            moving = f.norm(dim=0) > 0.5
            if moving.sum() < 20:
                continue
            warped = sample(v[k + 1][None], p + f.permute(1, 2, 0))[0]
            err_warp.append((warped - v[k]).abs()[moving].mean())
            err_zero.append((v[k + 1] - v[k]).abs()[moving].mean())
    assert len(err_warp) >= 20
    ew, ez = float(torch.stack(err_warp).mean()), float(torch.stack(err_zero).mean())
    assert ew < 0.3 * ez, (ew, ez)
    assert ew < 0.004


def test_flow_with_sensor_noise_still_helps(ds):
    item = ds[2]
    v, flow = item["video"][0], item["flow"]
    k = int(flow.norm(dim=0).mean((0, 1)).argmax())
    f = flow[..., k]
    moving = f.norm(dim=0) > 0.5
    warped = sample(v[k + 1][None], _pixel_grid(ds.size) + f.permute(1, 2, 0))[0]
    assert (warped - v[k]).abs()[moving].mean() < 0.8 * (v[k + 1] - v[k]).abs()[moving].mean()


def test_landmarks_follow_the_flow(ds):
    for i in (1, 9, 20):
        item = ds[i]
        lm = item["landmarks"].t().reshape(ds.t, 68, 2)
        assert (lm >= 0).all() and (lm <= ds.size - 1).all()
        for k in range(ds.t - 1):
            f = sample(item["flow"][..., k], lm[k]).t()  # flow at the landmarks, (68, 2)
            assert float((lm[k] + f - lm[k + 1]).abs().max()) < 0.05
        assert float((lm[-1] - lm[0] - (lm[-1] - lm[0]).mean(0)).abs().max()) < 1e-3  # onset = offset pose


def test_amplitude_scales_the_motion():
    lo = SyntheticMicroExpressions(num_subjects=1, clips=5, amplitude=1.0, jitter=0.0)
    hi = SyntheticMicroExpressions(num_subjects=1, clips=5, amplitude=4.0, jitter=0.0)
    i = lo.labels.index(0)  # brows raise
    peak = lambda d: float(
        (d[i]["landmarks"][35:54:2] - d[i]["landmarks"][35:54:2, :1]).abs().max()
    )  # brow y
    assert peak(hi) == pytest.approx(4 * peak(lo), rel=0.05)
    # amplitude * (0.8..1.2 clip intensity) * (>= 0.9 at the frame nearest the apex) * (>= 0.75 window)
    assert 4 * 0.8 * 0.9 * 0.75 < peak(hi) < 4 * 1.2


def test_synthetic_timing(ds):
    import time

    ds[0]
    t0 = time.process_time()
    for i in range(5):
        ds[i]
    assert (time.process_time() - t0) / 5 < 0.25  # loose: ~20 ms/clip on one idle core


# ---------------------------------------------------------------------------------------------------------
# FrameFolderDataset on a generated tree
# ---------------------------------------------------------------------------------------------------------

W, H = 30, 20  # original frame size (non-square on purpose)


def write_clip(root, subject, clip, numbers, name="img{}.png"):
    folder = root / subject / clip
    folder.mkdir(parents=True)
    for n in numbers:  # frame n is uniformly grey with value 5 * n, so a sampled frame tells its number
        Image.fromarray(np.full((H, W), 5 * n, np.uint8)).save(folder / name.format(n))
    return folder


def write_csv(path, rows, header=("subject", "clip", "onset", "apex", "offset", "label")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def tree(tmp_path):
    write_clip(tmp_path, "sub01", "EP01", range(1, 13), "reg_img{}.png")  # frames 1..12
    write_clip(tmp_path, "sub01", "EP02", range(40, 43), "{:03d}.png")  # 040..042
    write_clip(tmp_path, "sub02", "EP01", range(5, 9), "img{}.png")
    rows = [
        ("sub01", "EP01", 3, 6, 10, "positive"),
        ("sub01", "EP02", 40, 41, 41, "surprise"),
        ("sub02", "EP01", 5, "/", 8, "negative"),
    ]
    write_csv(tmp_path / "labels.csv", rows)
    return tmp_path


def frame_numbers(item):
    return [round(float(v) * 255 / 5) for v in item["video"][0].mean((1, 2))]


def test_folder_sampling_and_labels(tree):
    d = FrameFolderDataset(tree, t=4, size=16)
    assert len(d) == 3 and d.t == 4 and d.size == 16
    assert d.classes == ["negative", "positive", "surprise"] and d.num_classes == 3  # names sorted
    assert d.labels == [1, 2, 0] and d.subjects == [1, 1, 2]
    assert d.subject_names == ["sub01", "sub01", "sub02"]
    a, b, c = d[0], d[1], d[2]
    check_item(a, 4, 16)
    assert frame_numbers(a) == [3, 5, 8, 10]  # rint(linspace(3, 10, 4)) = 3, 5.33, 7.67, 10
    assert frame_numbers(b) == [40, 40, 41, 41]  # a 2-frame clip repeats frames
    assert frame_numbers(c) == [5, 6, 7, 8]
    for item in (a, b, c):
        assert not item["has_flow"] and not item["has_landmarks"]
        assert not item["flow"].any() and not item["landmarks"].any()
    assert int(a["label"]) == 1 and int(c["subject"]) == 2
    d2 = FrameFolderDataset(tree, t=4, size=16, classes=["surprise", "positive", "negative"])
    assert d2.labels == [1, 0, 2] and d2.num_classes == 3
    batch = next(iter(torch.utils.data.DataLoader(d, batch_size=3)))
    assert batch["video"].shape == (3, 1, 4, 16, 16) and batch["has_flow"].tolist() == [False] * 3


def test_folder_int_labels_and_skip_unknown(tmp_path):
    write_clip(tmp_path, "006", "c1", range(1, 4))
    write_clip(tmp_path, "007", "c2", range(1, 4))
    write_csv(tmp_path / "l.csv", [("006", "c1", 1, 2, 3, 0), ("007", "c2", 1, 2, 3, 4)])
    d = FrameFolderDataset(tmp_path, csv="l.csv", t=2, size=8)
    assert d.labels == [0, 4] and d.num_classes == 5 and d.classes is None and d.subjects == [6, 7]
    write_csv(tmp_path / "n.csv", [("006", "c1", 1, 2, 3, "happy"), ("007", "c2", 1, 2, 3, "fear")])
    d = FrameFolderDataset(
        tmp_path, csv=str(tmp_path / "n.csv"), t=2, size=8, classes=["happy"], skip_unknown=True
    )
    assert len(d) == 1 and d.labels == [0]


def test_folder_resizing(tmp_path):
    folder = tmp_path / "s" / "c"
    folder.mkdir(parents=True)
    img = np.zeros((H, W), np.uint8)
    img[:, W // 2 :] = 255
    img[:4] = 128
    for n in (1, 2):
        Image.fromarray(img).save(folder / f"{n}.png")
    write_csv(tmp_path / "labels.csv", [("s", "c", 1, 1, 2, 0)])
    v = FrameFolderDataset(tmp_path, t=2, size=24)[0]["video"]
    ref = np.asarray(Image.fromarray(img).resize((24, 24), Image.BILINEAR), np.float32) / 255
    assert torch.allclose(v[0, 1], torch.from_numpy(ref))
    assert float(v[0, 0, 12:, :8].max()) == 0.0 and float(v[0, 0, 12:, -8:].min()) == 1.0


def test_folder_landmarks_and_flow(tree):
    S, t = 16, 4
    lmd, fld = tree / "lm", tree / "flow"
    (lmd / "sub01").mkdir(parents=True)
    (lmd / "sub02").mkdir(parents=True)
    (fld / "sub01").mkdir(parents=True)
    base = np.stack([np.arange(68) * 0.4, np.arange(68) * 0.25], -1)  # (68, 2) inside the 30 x 20 frame
    # sub01/EP01: rows = onset..offset (3..10), row i is frame 3 + i, shifted by i pixels in x
    span = np.stack([base + [i, 0] for i in range(8)]).astype(np.float32)
    np.save(lmd / "sub01" / "EP01.npy", span)
    # sub02/EP01: a CSV with a header, one row per frame of the folder (4 frames: 5..8)
    with open(lmd / "sub02" / "EP01.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"{a}{i}" for i in range(68) for a in "xy"])
        for i in range(4):
            w.writerow((base + [0, i]).reshape(-1).tolist())
    flow = np.zeros((t - 1, 2, 10, 15), np.float32)  # half resolution of the frames, any size works
    for k in range(t - 1):
        flow[k, 0], flow[k, 1] = k + 1, -2.0
    np.save(fld / "sub01" / "EP01.npy", flow)

    d = FrameFolderDataset(tree, t=t, size=S, flow_dir=fld, landmarks_dir=lmd)
    a, b, c = d[0], d[1], d[2]
    check_item(a, t, S)
    assert a["has_landmarks"] and a["has_flow"]
    assert not b["has_landmarks"] and not b["has_flow"] and not b["landmarks"].any()
    assert c["has_landmarks"] and not c["has_flow"]
    scale = torch.tensor([S / W, S / H])
    for item, src in ((a, [span[n - 3] for n in (3, 5, 8, 10)]), (c, [base + [0, i] for i in range(4)])):
        want = (torch.tensor(np.stack(src), dtype=torch.float32) + 0.5) * scale - 0.5  # (t, 68, 2)
        assert torch.allclose(item["landmarks"], want.reshape(t, 136).t(), atol=1e-5)
    for k in range(t - 1):
        assert torch.allclose(a["flow"][0, ..., k], torch.full((S, S), (k + 1) * S / 15))
        assert torch.allclose(a["flow"][1, ..., k], torch.full((S, S), -2.0 * S / 10))
    # rows = every frame of the folder (12 frames 1..12) instead of onset..offset
    np.save(lmd / "sub01" / "EP01.npy", np.stack([base + [i, 0] for i in range(12)]).astype(np.float32))
    want = (
        torch.tensor(np.stack([base + [n - 1, 0] for n in (3, 5, 8, 10)]), dtype=torch.float32) + 0.5
    ) * scale - 0.5
    assert torch.allclose(d[0]["landmarks"], want.reshape(t, 136).t(), atol=1e-5)
    # (n, 136) arrays are accepted too
    np.save(lmd / "sub01" / "EP01.npy", span.reshape(8, 136))
    assert torch.allclose(d[0]["landmarks"], a["landmarks"])


def test_folder_bad_ground_truth(tree):
    lmd, fld = tree / "lm", tree / "flow"
    (lmd / "sub01").mkdir(parents=True)
    (fld / "sub01").mkdir(parents=True)
    d = FrameFolderDataset(tree, t=4, size=16, flow_dir=fld, landmarks_dir=lmd)
    np.save(lmd / "sub01" / "EP01.npy", np.zeros((8, 68, 3), np.float32))
    with pytest.raises(ValueError, match=r"EP01\.npy.*\(n, 68, 2\)"):
        d[0]
    np.save(lmd / "sub01" / "EP01.npy", np.zeros((5, 68, 2), np.float32))  # neither 8 (span) nor 12 (folder)
    with pytest.raises(ValueError, match="5 landmark rows"):
        d[0]
    (lmd / "sub01" / "EP01.npy").unlink()
    np.save(fld / "sub01" / "EP01.npy", np.zeros((4, 2, 8, 8), np.float32))  # t-1 = 3 expected
    with pytest.raises(ValueError, match=r"EP01\.npy.*t-1 = 3"):
        d[0]


def test_folder_errors(tree):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        FrameFolderDataset(tree, csv="nope.csv")

    def bad(rows, exc, match, header=("subject", "clip", "onset", "apex", "offset", "label"), **kw):
        write_csv(tree / "bad.csv", rows, header)
        with pytest.raises(exc, match=match):
            FrameFolderDataset(tree, csv="bad.csv", t=4, size=16, **kw)

    bad(
        [("sub01", "EP01", 3, 10, "x")],
        ValueError,
        r"missing column.*apex",
        header=("subject", "clip", "onset", "offset", "label"),
    )
    bad([("sub01", "EP09", 3, 5, 10, 0)], FileNotFoundError, r"line 2.*clip folder not found.*EP09")
    bad(
        [("sub01", "EP01", 3, 5, 10, 0), ("sub01", "EP01", 10, 5, 3, 0)],
        ValueError,
        r"line 3.*onset 10 > offset 3",
    )
    bad([("sub01", "EP01", 3, 5, "x", 0)], ValueError, r"offset must be an integer")
    bad(
        [("sub01", "EP01", 8, 10, 14, 0)],
        FileNotFoundError,
        r"line 2.*frame number\(s\) \[14\] not found.*frames: 1\.\.12",
    )
    bad([("sub01", "EP01", 3, 5, 10, "joy")], ValueError, r"unknown label name 'joy'", classes=["positive"])
    bad([("sub01", "EP01", 3, 5, 10, 3)], ValueError, r"label 3 out of range \[0, 2\)", classes=["a", "b"])
    bad([("sub01", "EP01", 3, 5, 10, -1)], ValueError, r"label -1 out of range")
    bad(
        [("sub01", "EP01", 3, 5, 10, 1), ("sub01", "EP02", 40, 41, 41, "x")], ValueError, "mix ints and names"
    )


# ---------------------------------------------------------------------------------------------------------
# Splits and inter-ocular distance
# ---------------------------------------------------------------------------------------------------------


def test_loso_folds():
    subjects = [3, 1, 3, 2, 1, 1]
    folds = loso_folds(subjects)
    assert [f[0] for f in folds] == [1, 2, 3]
    assert folds[0] == (1, [0, 2, 3], [1, 4, 5])
    for s, train, test in folds:
        assert sorted(train + test) == list(range(6))
        assert all(subjects[i] == s for i in test) and all(subjects[i] != s for i in train)
    d = SyntheticMicroExpressions(num_subjects=4, clips=3, size=32)
    assert [len(te) for _, _, te in loso_folds(d.subjects)] == [3, 3, 3, 3]


def test_split_indices():
    train, test = split_indices(50, 0.2, seed=1)
    assert len(test) == 10 and sorted(train + test) == list(range(50)) and train == sorted(train)
    assert split_indices(50, 0.2, seed=1) == (train, test) and split_indices(50, 0.2, seed=2) != (train, test)
    labels = [0] * 20 + [1] * 10 + [2] * 5
    train, test = split_indices(35, 0.2, seed=0, labels=labels)
    assert np.bincount([labels[i] for i in test]).tolist() == [4, 2, 1]
    assert sorted(train + test) == list(range(35))
    with pytest.raises(ValueError):
        split_indices(10, 0.2, labels=[0, 1])


def test_inter_ocular_distance(ds):
    lm = torch.zeros(2, 68, 2)
    lm[:, 36:42] = torch.tensor([10.0, 20.0])  # right eye centre (10, 20)
    lm[:, 42:48] = torch.tensor([13.0, 24.0])  # left eye centre (13, 24): distance 5
    lm[1] *= 2
    assert torch.allclose(inter_ocular_distance(lm.reshape(2, 136)), torch.tensor([5.0, 10.0]))
    item = ds[0]
    iod = inter_ocular_distance(item["landmarks"].t())  # per frame, (t,)
    assert iod.shape == (ds.t,)
    assert ((iod > 28) & (iod < 38)).all()  # the synthetic eyes are 2 * (15..18) px apart at S = 128
    batch = torch.stack([item["landmarks"], ds[1]["landmarks"]]).transpose(1, 2)  # (B, t, 136)
    assert inter_ocular_distance(batch).shape == (2, ds.t)
    with pytest.raises(ValueError):
        inter_ocular_distance(torch.zeros(3, 68))
    assert math.isfinite(float(iod.mean()))


def test_amplitude_that_folds_the_warp_is_rejected():
    with pytest.raises(ValueError, match="amplitude must be in"):
        SyntheticMicroExpressions(amplitude=7.0)

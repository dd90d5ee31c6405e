"""models.data.synthetic: the synthetic clips (determinism, bookkeeping, local class motions, exact flow and
landmarks) and the pieces other synthetic data sets reuse."""

import numpy as np
import pytest
import torch

from models.data import PRIMITIVES, SyntheticMicroExpressions
from models.data.geometry import pixel_grid
from models.data.motion import invert
from models.data.synthetic import balanced_labels, one_thread

from .items import KEYS, check_item, sample


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
    p = pixel_grid(S).reshape(1, -1, 2)
    for i in (0, 8, 16):
        sc = ds._scene(ds.subjects[i], ds.labels[i], ds.clip_seed(i))
        flow = ds[i]["flow"]
        for k in range(t - 1):
            qk = invert(sc.motion, p - sc.g[k], sc.a[k : k + 1])
            p1 = p + flow[..., k].permute(1, 2, 0).reshape(1, -1, 2)
            qk1 = invert(sc.motion, p1 - sc.g[k + 1], sc.a[k + 1 : k + 2])
            assert float((qk - qk1).abs().max()) < 1e-3


def test_flow_warps_next_frame_onto_current():
    """frame_{k+1}(p + flow_k(p)) ~= frame_k(p): bilinear backward warping of the pixel grid beats the
    zero-flow baseline by a wide margin wherever something moves (the residual is interpolation error)."""
    d = SyntheticMicroExpressions(num_subjects=2, clips=5, noise=0.0, seed=3)
    err_warp, err_zero = [], []
    for i in range(len(d)):
        item = d[i]
        v, flow = item["video"][0], item["flow"]
        p = pixel_grid(d.size)
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
    warped = sample(v[k + 1][None], pixel_grid(ds.size) + f.permute(1, 2, 0))[0]
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


def test_amplitude_that_folds_the_warp_is_rejected():
    with pytest.raises(ValueError, match="amplitude must be in"):
        SyntheticMicroExpressions(amplitude=7.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="clips=0"):
        SyntheticMicroExpressions(clips=0)
    d = SyntheticMicroExpressions(num_classes=5, num_subjects=1, clips=5, size=32)
    with pytest.raises(ValueError, match=r"label 5 out of range \[0, 5\)"):
        d.make_clip(0, 5, clip_seed=1)
    for label in (-1, 55):  # a negative label must not index PRIMITIVES from the end
        with pytest.raises(ValueError, match=r"out of range \[0, 55\)"):
            d.class_primitives(label)
    assert d.class_primitives(54) == (PRIMITIVES[8], PRIMITIVES[9])


def test_balanced_labels_are_the_datasets():
    d = SyntheticMicroExpressions(num_classes=5, num_subjects=4, clips=12, size=32, seed=3)
    assert balanced_labels(4, 12, 5, seed=3) == (d.subjects, d.labels)


def test_one_thread_restores_the_thread_count():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with one_thread():
                raise KeyError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)

"""models.data.dfer: the Former-DFER segment sampling, the synthetic DFER clips (format, determinism,
variable lengths, class motion vs class-independent head motion, train-mode sampling) and the DFEW / AFEW
loaders on generated frame folders and label files."""

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import DFER_CLASSES, AFEWDataset, DFEWDataset, SyntheticDFER, segment_indices
from models.data.geometry import pixel_grid

from . import items

KEYS = {"frames", "label", "num_frames", "subject"}


def check_item(item, S, t=16):
    assert set(item) == KEYS
    assert item["frames"].shape == (t, 3, S, S) and item["frames"].dtype == torch.float32
    assert item["frames"].is_contiguous()
    for k in KEYS - {"frames"}:
        assert item[k].shape == () and item[k].dtype == torch.int64, k
    assert 0 <= int(item["label"]) < 7
    assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0


@pytest.fixture(scope="module")
def small():
    return SyntheticDFER(num_subjects=2, clips_per_class=1, size=32, seed=0)


# ---------------------------------------------------------------------------------------------------------
# segment_indices
# ---------------------------------------------------------------------------------------------------------


def test_segment_indices_test_mode_hand_cases():
    assert segment_indices(16, False) == list(range(16))  # tick 15/8: offsets 0, 2, 4, ..., 14
    assert segment_indices(17, False) == list(range(1, 17))  # tick 2: offsets 1, 3, ..., 15
    # tick 99/8 = 12.375: int(6.1875 + 12.375 s) = 6, 18, 30, 43, 55, 68, 80, 92
    assert segment_indices(100, False) == [6, 7, 18, 19, 30, 31, 43, 44, 55, 56, 68, 69, 80, 81, 92, 93]
    assert segment_indices(100, False, rng=np.random.default_rng(0)) == segment_indices(100, False)


def test_segment_indices_train_mode_hand_cases():
    for seed in range(3):
        # a = 15 // 8 = 1: U[0, 1) is 0, offsets 0..7
        pairs = [i for s in range(8) for i in (s, s + 1)]  # [0, 1, 1, 2, 2, 3, ..., 7, 8]
        assert segment_indices(16, True, np.random.default_rng(seed)) == pairs
        # a = 16 // 8 = 2: offsets 2s or 2s + 1
        idx = segment_indices(17, True, np.random.default_rng(seed))
        assert all(idx[2 * s] in (2 * s, 2 * s + 1) for s in range(8))
    draws = set()
    for seed in range(20):
        idx = segment_indices(100, True, np.random.default_rng(seed))  # a = 99 // 8 = 12
        assert len(idx) == 16 and all(0 <= i < 100 for i in idx)
        assert all(12 * s <= idx[2 * s] < 12 * s + 12 and idx[2 * s + 1] == idx[2 * s] + 1 for s in range(8))
        draws.add(tuple(idx))
    assert len(draws) > 15  # random offsets
    rng_a, rng_b = np.random.default_rng([1, 2]), np.random.default_rng([1, 2])
    assert segment_indices(100, True, rng_a) == segment_indices(100, True, rng_b)
    # the same arithmetic as Former-DFER: s * a + randint(a)
    expect = list(np.arange(8) * 12 + np.random.default_rng(7).integers(0, 12, size=8))
    assert segment_indices(100, True, np.random.default_rng(7))[::2] == expect


def test_segment_indices_short_clips_and_errors():
    assert segment_indices(5, False) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4]  # padded, clamped
    assert segment_indices(5, True, np.random.default_rng(0)) == segment_indices(5, False)
    idx = segment_indices(9, True, np.random.default_rng(0))  # a = 8 // 8 = 1
    assert idx == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8]
    # tick = (20 - 3 + 1) / 4 = 4.5: int(2.25 + 4.5 s) = 2, 6, 11, 15
    assert segment_indices(20, False, segments=4, per_segment=3) == [2, 3, 4, 6, 7, 8, 11, 12, 13, 15, 16, 17]
    with pytest.raises(ValueError, match="n, segments and per_segment must be >= 1, got n=0"):
        segment_indices(0, False)


# ---------------------------------------------------------------------------------------------------------
# SyntheticDFER
# ---------------------------------------------------------------------------------------------------------


def test_item_format_and_collate(small):
    assert len(small) == 2 * 7 and small.classes == list(DFER_CLASSES) and small.size == 32
    assert DFER_CLASSES == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    check_item(small[0], 32)
    check_item(small[-1], 32)
    batch = next(iter(torch.utils.data.DataLoader(small, batch_size=4)))
    assert batch["frames"].shape == (4, 16, 3, 32, 32)
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    assert batch["num_frames"].dtype == torch.int64 and batch["subject"].tolist() == [0, 0, 0, 0]
    v = small[3]["frames"]
    assert not torch.equal(v[:, 0], v[:, 2])  # a colour render
    assert small.subjects == [i // 7 for i in range(14)]
    for s in (0, 1):
        assert sorted(small.labels[7 * s : 7 * s + 7]) == list(range(7))
    for i in (0, 9):
        assert int(small[i]["label"]) == small.labels[i] and int(small[i]["subject"]) == small.subjects[i]
    with pytest.raises(IndexError):
        small[14]


def test_determinism(small):
    again = SyntheticDFER(num_subjects=2, clips_per_class=1, size=32, seed=0)
    for i in (0, 11):
        a, b = small[i], again[i]
        for k in KEYS:
            assert torch.equal(a[k], b[k]), (i, k)
        assert torch.equal(small[i]["frames"], a["frames"])  # the same item twice
    assert torch.equal(small[-3]["frames"], small[11]["frames"])
    other = SyntheticDFER(num_subjects=2, clips_per_class=1, size=32, seed=1)
    assert not torch.equal(small[0]["frames"], other[0]["frames"])
    assert not torch.equal(small[0]["frames"], small[1]["frames"])
    assert small.labels != other.labels


def test_variable_raw_lengths_within_bounds():
    d = SyntheticDFER(num_subjects=3, clips_per_class=2, size=16, min_frames=18, max_frames=24)
    lengths = [d._scene(d.subjects[i], d.labels[i], d.clip_seed(i)).n for i in range(len(d))]
    assert all(18 <= n <= 24 for n in lengths) and len(set(lengths)) >= 4
    for i in (0, 5):
        assert int(d[i]["num_frames"]) == lengths[i]
    fixed = SyntheticDFER(num_subjects=1, frames=20, size=16)
    assert {int(fixed[i]["num_frames"]) for i in range(7)} == {20}
    # the item is the test-mode sampling of the raw clip (rendered to the 1e-4 px warp tolerance)
    raw = d.make_clip(0, 3, d.clip_seed(0), raw=True)
    n = int(raw["num_frames"])
    assert raw["frames"].shape == (n, 3, 16, 16)
    item = d.make_clip(0, 3, d.clip_seed(0))
    assert torch.allclose(item["frames"], raw["frames"][segment_indices(n, False)], atol=1e-3, rtol=0)


def face_mask(sc, k, S, grow):
    """``(S, S)`` bool: frame k's pixels within ~``grow`` px of the (moved) face ellipse."""
    p = pixel_grid(S)
    c = torch.tensor([sc.face.cx, sc.face.cy])
    q = c + (p - c - sc.shift[k]) / sc.scale[k]  # the pixel's point in the unmoved face
    s = float(sc.scale[k])
    r = ((q[..., 0] - c[0]) / (sc.face.rx + grow / s)) ** 2 + (
        (q[..., 1] - c[1]) / (sc.face.ry + grow / s)
    ) ** 2
    return r <= 1


def test_class_motion_differs_and_the_head_motion_does_not_depend_on_the_class():
    S = 48
    d = SyntheticDFER(num_subjects=1, size=S, drift=8.0, zoom=0.1)
    seed = 12345
    scenes = [d._scene(0, c, seed) for c in range(7)]
    for sc in scenes[1:]:
        for k in ("a", "shift", "scale"):
            assert torch.equal(getattr(sc, k), getattr(scenes[0], k)), k
        assert sc.n == scenes[0].n and sc.noise_seed == scenes[0].noise_seed
    sc = scenes[0]
    clips = [d.make_clip(0, c, seed)["frames"] for c in range(7)]
    idx = segment_indices(sc.n, False)
    neutral = clips[DFER_CLASSES.index("neutral")]
    for c in range(7):
        diff = (clips[c] - neutral).abs().amax(1)  # (16, S, S)
        for j, k in enumerate(idx):
            # only the face differs: the motions move the face outline by ~2 px here (brows raise), and its
            # soft edge fades out over a few px more
            outside = ~face_mask(sc, k, S, grow=4.0)
            assert float(diff[j][outside].max()) < 1e-3, (c, j)
            assert float(diff[j][~face_mask(sc, k, S, grow=8.0)].max()) < 1e-6, (c, j)
            if DFER_CLASSES[c] != "neutral" and j >= 10:
                assert float(diff[j][~outside].max()) > 0.05, (c, j)
    # the head really moves: the neutral clip's frames differ outside the face
    still = ~face_mask(sc, idx[0], S, 2.0) & ~face_mask(sc, idx[-1], S, 2.0)
    assert float((neutral[0] - neutral[-1]).abs().amax(0)[still].mean()) > 0.01
    # every pair of classes differs in the face in the late (expressive) frames
    for i in range(7):
        for j in range(i + 1, 7):
            assert float((clips[i][-6:] - clips[j][-6:]).abs().sum()) > 5.0, (i, j)
    # with no head motion and no noise the neutral class is a still image
    calm = SyntheticDFER(num_subjects=1, size=S, drift=0.0, zoom=0.0, noise=0.0)
    v = calm.make_clip(0, DFER_CLASSES.index("neutral"), seed)["frames"]
    assert float((v - v[:1]).abs().max()) < 1e-5
    happy = calm.make_clip(0, DFER_CLASSES.index("happy"), seed)["frames"]
    assert float((happy[-1] - happy[0]).abs().max()) > 0.05  # the expression shows up over the clip


def test_train_mode_sampling_by_epoch():
    test = SyntheticDFER(num_subjects=1, size=16, min_frames=40, max_frames=40, seed=3)
    train = SyntheticDFER(num_subjects=1, size=16, min_frames=40, max_frames=40, seed=3, train=True)
    raw = test.make_clip(test.subjects[2], test.labels[2], test.clip_seed(2), raw=True)["frames"]
    a0 = train[2]["frames"]
    assert torch.equal(train[2]["frames"], a0)
    idx = segment_indices(40, True, train.sample_rng(2))
    assert torch.allclose(a0, raw[idx], atol=1e-3, rtol=0)
    train.set_epoch(1)
    a1 = train[2]["frames"]
    assert not torch.equal(a0, a1)
    assert torch.allclose(a1, raw[segment_indices(40, True, train.sample_rng(2))], atol=1e-3, rtol=0)
    train.set_epoch(0)
    assert torch.equal(train[2]["frames"], a0)
    t0 = test[2]["frames"]
    test.set_epoch(5)
    assert torch.equal(test[2]["frames"], t0)  # test mode ignores the epoch


def test_bad_arguments_are_named():
    for kw, match in (
        (dict(num_classes=8), r"num_classes must be in \[1, 7\], got 8"),
        (dict(min_frames=15), r"16 <= min_frames <= max_frames.*min_frames=15"),
        (dict(min_frames=30, max_frames=20), "min_frames=30, max_frames=20"),
        (dict(frames=12), "min_frames=12, max_frames=12"),
        (dict(clips_per_class=0), "clips_per_class=0"),
        (dict(size=8), "size=8"),
        (dict(amplitude=6.5), r"amplitude must be in \[0, 6.0\]"),
        (dict(zoom=0.6), "zoom in"),
        (dict(noise=-1.0), "noise=-1.0"),
    ):
        with pytest.raises(ValueError, match=match):
            SyntheticDFER(**kw)
    d = SyntheticDFER(num_subjects=1, size=16, num_classes=3)
    assert d.classes == ["happy", "sad", "neutral"] and len(d) == 3
    with pytest.raises(ValueError, match=r"label 3 out of range \[0, 3\)"):
        d.make_clip(0, 3, clip_seed=1)


# ---------------------------------------------------------------------------------------------------------
# DFEWDataset / AFEWDataset on generated folders
# ---------------------------------------------------------------------------------------------------------

W, H = 20, 16  # original frame size (non-square on purpose)


def write_clip(root, rel, numbers, name="img{}.png"):
    folder = root / rel
    folder.mkdir(parents=True)
    xs = np.linspace(0, 255, W).astype(np.uint8)
    for n in numbers:  # R encodes the frame number, B is a left-to-right ramp (shows a flip)
        img = np.empty((H, W, 3), np.uint8)
        img[..., 0], img[..., 1], img[..., 2] = 5 * n, 255 - 5 * n, xs
        Image.fromarray(img).save(folder / name.format(n))
    return folder


def frame_numbers(item):
    return [round(float(v) * 255 / 5) for v in item["frames"][:, 0].mean((1, 2))]


def write_list(path, rows):
    path.write_text("".join(" ".join(str(x) for x in r) + "\n" for r in rows))


def write_csv(path, rows, header=("video_name", "label")):
    items.write_csv(path, rows, header)


@pytest.fixture
def tree(tmp_path):
    write_clip(tmp_path, "clips/a", range(1, 17))  # 16 frames: img1..img16 (lexical order would differ)
    write_clip(tmp_path, "clips/b b", range(1, 21), "frame_{:03d}.png")  # 20 frames, a space in the path
    write_clip(tmp_path, "clips/short", range(1, 11))  # 10 frames: dropped
    write_clip(tmp_path, "00007", range(3, 23), "{}.png")  # DFEW-style folder of video 7: frames 3..22
    write_list(
        tmp_path / "set_1_train.txt", [("clips/a", 16, 0), ("clips/b b", 20, 6), ("clips/short", 10, 2)]
    )
    write_list(tmp_path / "set_1_test.txt", [(tmp_path / "clips/b b", 17, 3), ("", "", "")])
    write_list(tmp_path / "set_2_train.txt", [("clips/a", 16, 4)])
    return tmp_path


def test_list_format_test_mode(tree):
    d = DFEWDataset(tree, fold=1, split="test", size=8)
    assert len(d) == 1 and d.labels == [3] and d.num_frames == [17] and d.num_dropped == 0
    item = d[0]
    check_item(item, 8)
    assert int(item["num_frames"]) == 17 and int(item["subject"]) == -1
    assert frame_numbers(item) == list(range(2, 18))  # the first 17 frames, test offsets 1, 3, ..., 15
    v = item["frames"]
    assert torch.allclose(v[:, 1], 1 - v[:, 0], atol=1e-6)  # RGB order
    assert float(v[0, 2, :, 0].mean()) < float(v[0, 2, :, -1].mean())  # not flipped
    # the train split read without augmentation: test sampling, clips under 16 frames dropped
    tr = DFEWDataset(tree, split="train", size=8, train_augment=False)
    assert len(tr) == 2 and tr.labels == [0, 6] and tr.num_frames == [16, 20]
    assert tr.num_dropped == 1 and tr.dropped == [(3, str(tree / "clips/short"))]
    assert frame_numbers(tr[0]) == list(range(1, 17))
    assert frame_numbers(tr[1]) == [1 + i for i in segment_indices(20, False)]
    assert torch.equal(tr[1]["frames"], tr[1]["frames"])
    batch = next(iter(torch.utils.data.DataLoader(tr, batch_size=2)))
    assert batch["frames"].shape == (2, 16, 3, 8, 8) and batch["label"].tolist() == [0, 6]
    assert DFEWDataset(tree, fold=2, size=8, train_augment=False).labels == [4]


def test_list_format_train_augment(tree):
    d = DFEWDataset(tree, split="train", size=12, seed=4)
    assert d.augment
    items = {}
    flips = set()
    for epoch in range(8):
        d.set_epoch(epoch)
        item = d[1]
        check_item(item, 12)
        assert torch.equal(d[1]["frames"], item["frames"])  # deterministic per (seed, index, epoch)
        rng = np.random.default_rng([4, 5, 1, epoch])
        # the crop of a uniform channel is uniform: the frame numbers survive the crop
        assert frame_numbers(item) == [1 + i for i in segment_indices(20, True, rng)]
        ramp = item["frames"][:, 2].mean((0, 1))  # (12,) the blue ramp along x
        flips.add(bool(ramp[0] > ramp[-1]))
        items[epoch] = item["frames"]
    assert flips == {True, False}
    assert not torch.equal(items[0], items[1])
    other = DFEWDataset(tree, split="train", size=12, seed=5)
    assert not torch.equal(other[1]["frames"], items[0])


def test_csv_format(tree):
    ann = tree / "EmoLabel_DataSplit" / "train(single-labeled)"
    ann.mkdir(parents=True)
    write_csv(ann / "set_3.csv", [("7", 5), ("clips/a", "Happy"), ("clips/short", 1)])
    d = DFEWDataset(
        tree,
        csv="EmoLabel_DataSplit/{split}(single-labeled)/set_{fold}.csv",
        fold=3,
        size=8,
        train_augment=False,
    )
    assert d.labels == [4, 0] and d.num_frames == [20, 16] and d.num_dropped == 1
    assert d.rows[0]["folder"] == str(tree / "00007")  # video 7 -> the 5-digit folder
    assert frame_numbers(d[0]) == [3 + i for i in segment_indices(20, False)]
    write_csv(tree / "labels.csv", [("clips/b b", "x", 7)], header=("Video_Name", "extra", "LABEL"))
    assert DFEWDataset(tree, csv=str(tree / "labels.csv"), size=8).labels == [6]


def test_afew_same_format(tree):
    d = AFEWDataset(tree, split="train", size=8, train_augment=False)
    ref = DFEWDataset(tree, split="train", size=8, train_augment=False)
    assert d.labels == ref.labels and d.num_dropped == 1 and d.classes == list(DFER_CLASSES)
    assert torch.equal(d[1]["frames"], ref[1]["frames"])
    write_list(tree / "afew_val.txt", [("clips/a", 16, 5)])
    assert AFEWDataset(tree, list_file="afew_val.txt", split="test", size=8).labels == [5]
    with pytest.raises(ValueError, match=r"AFEW: fold must be in 1\.\.1, got 2"):
        AFEWDataset(tree, fold=2)


def test_loader_errors(tree):
    for kw, exc, match in (
        (dict(fold=0), ValueError, r"DFEW: fold must be in 1\.\.5, got 0"),
        (dict(fold=6), ValueError, "got 6"),
        (dict(fold="1"), ValueError, "got '1'"),
        (dict(split="val"), ValueError, "split must be 'train' or 'test', got 'val'"),
        (dict(list_file="x.txt", csv="y.csv"), ValueError, "list_file or csv, not both"),
        (dict(size=0), ValueError, "size must be >= 1, got 0"),
        (dict(fold=3), FileNotFoundError, r"list file not found: .*set_3_train\.txt"),
        (dict(csv="nope_{fold}.csv"), FileNotFoundError, r"label CSV not found: .*nope_1\.csv"),
    ):
        with pytest.raises(exc, match=match):
            DFEWDataset(tree, **kw)
    with pytest.raises(FileNotFoundError, match="DFEW root folder not found.*nowhere"):
        DFEWDataset(tree / "nowhere")

    def bad_list(rows, exc, match):
        write_list(tree / "bad.txt", rows)
        with pytest.raises(exc, match=match):
            DFEWDataset(tree, list_file="bad.txt")

    ok = ("clips/a", 16, 0)
    bad_list(
        [ok, ("clips/a", 16)], ValueError, r"bad\.txt line 2: expected '<frame_dir> <num_frames> <label>'"
    )
    bad_list([("clips/a", "many", 0)], ValueError, r"bad\.txt line 1: expected")
    bad_list([ok, ok, ("clips/a", 0, 0)], ValueError, r"line 3: num_frames must be >= 1")
    bad_list([("clips/a", 16, 7)], ValueError, r"bad\.txt line 1: label 7 out of range 0\.\.6")
    bad_list([("clips/a", 16, -1)], ValueError, r"label -1 out of range 0\.\.6")
    bad_list([("clips/a", 16, "contempt")], ValueError, r"line 1: unknown class 'contempt'; expected one of")
    bad_list([ok, ("clips/zz", 16, 0)], FileNotFoundError, r"bad\.txt line 2: frame folder not found.*zz")
    bad_list(
        [("clips/a", 17, 0)], ValueError, r"line 1: num_frames 17 but .*clips/a holds 16 numbered images"
    )

    def bad_csv(rows, exc, match, header=("video_name", "label")):
        write_csv(tree / "bad.csv", rows, header)
        with pytest.raises(exc, match=match):
            DFEWDataset(tree, csv="bad.csv")

    bad_csv(
        [("clips/a", 1)], ValueError, r"bad\.csv: missing column.*label", header=("video_name", "emotion")
    )
    bad_csv([("clips/a", 1), ("clips/a", "")], ValueError, r"bad\.csv line 3: missing value\(s\) for label")
    bad_csv([("clips/a", 0)], ValueError, r"bad\.csv line 2 \(clips/a\): label 0 out of range 1\.\.7")
    bad_csv([("clips/a", 8)], ValueError, r"label 8 out of range 1\.\.7")
    bad_csv([("clips/a", "Contempt")], ValueError, r"line 2 \(clips/a\): unknown class 'Contempt'")
    bad_csv([("clips/a", 1), ("99", 1)], FileNotFoundError, r"bad\.csv line 3 \(99\): frame folder not found")

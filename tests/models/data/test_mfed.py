"""models.data.mfed: the synthetic MFED clips (format, determinism, balance, the timing of the two
expressions, per-subject appearance) and the MFED frame-folder loader on generated folder trees."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import MFEDFolderDataset, SyntheticMFED, loso_folds, split_indices
from models.data.geometry import pixel_grid
from models.data.mfed import CLASS_MOTIONS, MFED_CLASSES
from models.data.motion import PRIMITIVES, invert
from models.data.synthetic import render_clip

from . import items

KEYS = {"video", "experienced", "required", "label", "subject", "onset", "apex", "offset"}


def check_item(item, t, S):
    assert set(item) == KEYS
    assert item["video"].shape == (3, t, S, S) and item["video"].dtype == torch.float32
    for k in KEYS - {"video"}:
        assert item[k].shape == () and item[k].dtype == torch.int64, k
    assert 0.0 <= float(item["video"].min()) and float(item["video"].max()) <= 1.0
    assert int(item["onset"]) == 0 and int(item["offset"]) == t - 1
    assert 0 <= int(item["apex"]) <= t - 1


@pytest.fixture(scope="module")
def small():
    return SyntheticMFED(num_subjects=2, t=6, size=32, seed=0)


# ---------------------------------------------------------------------------------------------------------
# SyntheticMFED
# ---------------------------------------------------------------------------------------------------------


def test_item_format_and_collate(small):
    assert len(small) == 2 * 36 and small.t == 6 and small.size == 32
    check_item(small[0], 6, 32)
    check_item(small[-1], 6, 32)
    batch = next(iter(torch.utils.data.DataLoader(small, batch_size=4)))
    assert batch["video"].shape == (4, 3, 6, 32, 32)
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    v = small[3]["video"]
    assert not torch.equal(v[0], v[2])  # a colour render, not grey in three channels


def test_determinism(small):
    again = SyntheticMFED(num_subjects=2, t=6, size=32, seed=0)
    for i in (0, 41):
        a, b = small[i], again[i]
        for k in KEYS:
            assert torch.equal(a[k], b[k]), (i, k)
        assert torch.equal(small[i]["video"], a["video"])  # the same item twice
    other = SyntheticMFED(num_subjects=2, t=6, size=32, seed=1)
    assert not torch.equal(small[0]["video"], other[0]["video"])
    assert not torch.equal(small[0]["video"], small[1]["video"])
    assert small.labels == again.labels and small.labels != other.labels


def test_bookkeeping_balance_and_splits():
    d = SyntheticMFED(num_subjects=3, clips_per_class=2, t=4, size=16, num_classes=3, seed=5)
    n = 3 * 9 * 2
    assert len(d) == n and d.num_classes == 3 and d.classes == ["anger", "disgust", "fear"]
    assert d.subjects == [i // 18 for i in range(n)]
    assert d.labels == [3 * e + r for e, r in zip(d.experienced_labels, d.required_labels)]
    for s in range(3):
        pairs = [(e, r) for e, r, x in zip(d.experienced_labels, d.required_labels, d.subjects) if x == s]
        assert sorted(pairs) == sorted([(e, r) for e in range(3) for r in range(3)] * 2)
    assert d.labels[:18] != d.labels[18:36]  # shuffled per subject
    for i in (0, 20, n - 1):
        item = d[i]
        assert int(item["experienced"]) == d.experienced_labels[i]
        assert int(item["required"]) == d.required_labels[i]
        assert int(item["label"]) == d.labels[i] and int(item["subject"]) == d.subjects[i]
    folds = loso_folds(d.subjects)
    assert [f[0] for f in folds] == [0, 1, 2] and folds[1][2] == list(range(18, 36))
    train, test = split_indices(len(d), 0.5, seed=0, labels=d.labels)
    assert len(test) == 27 and sorted(train + test) == list(range(n))
    with pytest.raises(IndexError):
        d[n]
    full = SyntheticMFED(num_subjects=1, t=4, size=16)
    assert full.classes == list(MFED_CLASSES) and len(full) == 36 and max(full.labels) == 35


def test_class_motions_are_distinct_primitives():
    sets = [frozenset(p for p, _ in CLASS_MOTIONS[c]) for c in MFED_CLASSES]
    assert len(set(sets)) == 6 and all(s <= set(PRIMITIVES) for s in sets)


def region_energy(video, neutral, mask):
    """Per frame: the summed |frame - neutral frame| over the pixels of ``mask (S, S)`` -> ``(t,)``."""
    return (video - neutral[:, :1]).abs().sum(0)[:, mask].sum(-1)


def test_required_peaks_at_apex_and_experienced_at_onset():
    d = SyntheticMFED(num_subjects=2, t=9, size=64, noise=0.0)
    ex, re = MFED_CLASSES.index("happiness"), MFED_CLASSES.index("anger")  # mouth vs brows and eyes
    for subject, clip_seed in ((0, 3), (1, 11)):
        item = d.make_clip(subject, ex, re, clip_seed)
        neutral = d.make_clip(subject, ex, re, clip_seed, neutral=True)["video"]
        sc = d._scene(subject, ex, re, clip_seed)
        apex = int(item["apex"])
        assert apex == sc.apex and 2 <= apex <= 6
        m_re, m_ex = sc.motions[0].support(d.size, 0), sc.motions[1].support(d.size, 0)
        e_re = region_energy(item["video"], neutral, m_re & ~m_ex)
        e_ex = region_energy(item["video"], neutral, m_ex & ~m_re)
        # required: nothing at the onset, ramping in to the apex, held there to the offset
        assert float(e_re[0]) < 1e-3 * float(e_re.max())
        assert (e_re[1 : apex + 1] > e_re[:apex]).all()
        assert float(e_re[apex]) > 0.98 * float(e_re.max()) and float(e_re[-1]) > 0.9 * float(e_re[apex])
        # experienced: largest at the onset, fading to faint (but present) at the apex
        assert int(e_ex.argmax()) == 0
        assert (e_ex[1 : apex + 1] < e_ex[:apex]).all()
        assert 0.1 * float(e_ex[0]) < float(e_ex[apex]) < 0.6 * float(e_ex[0])
        assert float(e_re[apex]) > float(e_ex[0])  # the required motion is the strong one


def test_pairs_are_distinguishable():
    d = SyntheticMFED(num_subjects=1, t=5, size=48, noise=0.0)
    sc = d._scene(0, 0, 0, 7)
    apex = sc.apex
    clips = {(e, r): d.make_clip(0, e, r, clip_seed=7)["video"] for e in range(6) for r in range(6)}
    for i in range(6):
        for j in range(i + 1, 6):
            # the required class shows at the apex, the experienced one at the onset
            assert float((clips[0, i][:, apex] - clips[0, j][:, apex]).abs().sum()) > 3.0, (i, j)
            assert float((clips[i, 0][:, 0] - clips[j, 0][:, 0]).abs().sum()) > 1.0, (i, j)
    for c in range(6):  # experienced == required is a clip of its own: the onset tells it apart
        other = (c + 1) % 6
        assert float((clips[c, c][:, 0] - clips[other, c][:, 0]).abs().sum()) > 1.0, c
        assert float((clips[c, c][:, apex] - clips[c, other][:, apex]).abs().sum()) > 3.0, c


def test_subject_appearance_differs():
    d = SyntheticMFED(num_subjects=3, t=2, size=48, noise=0.0)
    neutral = [d.make_clip(s, 0, 0, clip_seed=1, neutral=True)["video"][:, 0] for s in range(3)]
    colors = [d.subject_colors(s) for s in range(3)]
    assert len(set(colors)) == 3 and d.subject_colors(1) == colors[1]
    for i in range(3):
        for j in range(i + 1, 3):
            assert float((neutral[i] - neutral[j]).abs().mean()) > 0.02, (i, j)
    centre = [v[:, 20:28, 20:28].mean((1, 2)) for v in neutral]  # skin colour at the face centre
    assert float(torch.stack(centre).std(0).max()) > 0.01
    for v in centre:
        assert v[0] > v[2]  # skin is warm: red above blue
    a = d.make_clip(2, 0, 0, clip_seed=1, neutral=True)["video"]
    b = d.make_clip(2, 0, 0, clip_seed=2, neutral=True)["video"]
    assert float((a - b).abs().mean()) < float((neutral[2] - neutral[1]).abs().mean())


def test_every_pair_renders_at_the_largest_amplitudes():
    d = SyntheticMFED(num_subjects=1, t=4, size=32, amplitude=5.3, experienced_amplitude=2.0)
    for i in range(len(d)):  # the warp must stay invertible (a fold raises RuntimeError)
        check_item(d[i], 4, 32)


def test_bad_arguments_are_named():
    for kw, match in (
        (dict(num_classes=7), r"num_classes must be in \[1, 6\], got 7"),
        (dict(t=1), "t must be >= 2"),
        (dict(clips_per_class=0), "clips_per_class=0"),
        (dict(amplitude=6.5), r"amplitude must be in \[0, 6.0\]"),
        (dict(experienced_amplitude=-1.0), "experienced_amplitude must be in"),
        (dict(amplitude=5.5, experienced_amplitude=3.0), r"amplitude \+ experienced_at_apex"),
        (dict(experienced_at_apex=1.5), r"experienced_at_apex must be in \[0, 1\]"),
        (dict(noise=-0.1), "noise and jitter must be >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            SyntheticMFED(**kw)
    d = SyntheticMFED(num_subjects=1, t=3, size=16, num_classes=2)
    with pytest.raises(ValueError, match=r"required class 2 out of range \[0, 2\)"):
        d.make_clip(0, 0, 2, clip_seed=1)
    with pytest.raises(ValueError, match="experienced class -1"):
        d.make_clip(0, -1, 0, clip_seed=1)


def test_synthetic_timing():
    d = SyntheticMFED(num_subjects=1, t=8, size=64)
    d[0]
    t0 = time.process_time()
    for i in range(1, 9):
        d[i]
    assert (time.process_time() - t0) / 8 < 0.1  # loose: ~10-20 ms per clip on one core


# ---------------------------------------------------------------------------------------------------------
# MFEDFolderDataset on a generated tree
# ---------------------------------------------------------------------------------------------------------

W, H = 30, 20  # original frame size (non-square on purpose)
HEADER = ("subject", "clip", "onset", "apex", "offset", "experienced", "required")


def write_clip(root, subject, clip, numbers, name="img{}.png"):
    folder = root / subject / clip
    folder.mkdir(parents=True)
    for n in numbers:  # frame n is uniform (R, G, B) = (5n, 255 - 5n, 7), so a sampled frame tells its number
        Image.fromarray(np.full((H, W, 3), (5 * n, 255 - 5 * n, 7), np.uint8)).save(folder / name.format(n))
    return folder


def write_csv(path, rows, header=HEADER):
    items.write_csv(path, rows, header)


@pytest.fixture
def tree(tmp_path):
    write_clip(tmp_path, "sub01", "EP01", range(1, 13), "reg_img{}.png")  # frames 1..12
    write_clip(tmp_path, "sub01", "EP02", range(40, 43), "{:03d}.png")  # 040..042
    write_clip(tmp_path, "sub02", "EP01", range(5, 9), "img{}.png")
    rows = [
        ("sub01", "EP01", 3, 6, 10, "Happiness", "anger", "x"),
        ("sub01", "EP02", 40, 41, 41, "surprise", "SURPRISE", ""),
        ("sub02", "EP01", 5, 8, 8, "fear", "disgust", "note"),
    ]
    write_csv(tmp_path / "labels.csv", rows, ("Subject", "CLIP", "Onset", "apex", "OFFSET", "Experienced",
                                               "required", "comment"))  # fmt: skip
    return tmp_path


def frame_numbers(item):
    return [round(float(v) * 255 / 5) for v in item["video"][0].mean((1, 2))]


def test_folder_sampling_labels_and_rgb(tree):
    d = MFEDFolderDataset(tree, t=4, size=16)
    assert len(d) == 3 and d.t == 4 and d.size == 16
    assert d.classes == list(MFED_CLASSES) and d.num_classes == 6
    assert d.experienced_labels == [3, 5, 2] and d.required_labels == [0, 5, 1]
    assert d.labels == [18, 35, 13] and d.subjects == [1, 1, 2]
    assert d.subject_names == ["sub01", "sub01", "sub02"]
    a, b, c = d[0], d[1], d[2]
    for item in (a, b, c):
        check_item(item, 4, 16)
    assert frame_numbers(a) == [3, 5, 8, 10]  # rint(linspace(3, 10, 4)) = 3, 5.33, 7.67, 10
    assert frame_numbers(b) == [40, 40, 41, 41]  # a 2-frame clip repeats frames
    assert frame_numbers(c) == [5, 6, 7, 8]
    assert int(a["apex"]) == 1  # apex 6: the sampled frame 5 is closest
    assert int(b["apex"]) == 2  # apex 41: the first sampled 41
    assert int(c["apex"]) == 3
    # RGB order: channel 0 = 5 n, channel 1 = 255 - 5 n, channel 2 = 7
    v = a["video"]
    assert torch.allclose(v[1], 1 - v[0], atol=1e-6) and torch.allclose(v[2], torch.full_like(v[2], 7 / 255))
    assert int(a["label"]) == 18 and int(a["experienced"]) == 3 and int(c["subject"]) == 2
    batch = next(iter(torch.utils.data.DataLoader(d, batch_size=3)))
    assert batch["video"].shape == (3, 3, 4, 16, 16) and batch["label"].tolist() == [18, 35, 13]
    assert [f[0] for f in loso_folds(d.subjects)] == [1, 2]


def test_folder_int_labels_and_csv_paths(tmp_path):
    write_clip(tmp_path, "006", "c1", range(1, 4))
    write_clip(tmp_path, "007", "c2", range(1, 4))
    write_csv(tmp_path / "l.csv", [("006", "c1", 1, 2, 3, 0, 5), ("007", "c2", 1, 3, 3, 4, 4)])
    for csv_arg in ("l.csv", str(tmp_path / "l.csv")):
        d = MFEDFolderDataset(tmp_path, csv=csv_arg, t=2, size=8)
        assert d.experienced_labels == [0, 4] and d.required_labels == [5, 4] and d.labels == [5, 28]
        assert d.subjects == [6, 7]
    assert int(d[1]["apex"]) == 1


def test_folder_resizing(tmp_path):
    folder = tmp_path / "s" / "c"
    folder.mkdir(parents=True)
    img = np.zeros((H, W, 3), np.uint8)
    img[:, W // 2 :, 0] = 255  # right half red
    img[:4, :, 2] = 128  # top rows half blue
    for n in (1, 2):
        Image.fromarray(img).save(folder / f"{n}.png")
    write_csv(tmp_path / "labels.csv", [("s", "c", 1, 1, 2, 0, 0)])
    v = MFEDFolderDataset(tmp_path, t=2, size=24)[0]["video"]
    ref = np.asarray(Image.fromarray(img).resize((24, 24), Image.BILINEAR), np.float32) / 255
    assert torch.allclose(v[:, 1], torch.from_numpy(ref).permute(2, 0, 1))
    assert float(v[0, 0, 12:, :8].max()) == 0.0 and float(v[0, 0, 12:, -8:].min()) == 1.0
    assert float(v[1].abs().max()) == 0.0


def test_folder_errors(tree):
    with pytest.raises(FileNotFoundError, match="MFED root folder not found.*nowhere"):
        MFEDFolderDataset(tree / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"label CSV not found.*nope\.csv"):
        MFEDFolderDataset(tree, csv="nope.csv")

    def bad(rows, exc, match, header=HEADER):
        write_csv(tree / "bad.csv", rows, header)
        with pytest.raises(exc, match=match):
            MFEDFolderDataset(tree, csv="bad.csv", t=4, size=16)

    ok = ("sub01", "EP01", 3, 6, 10, 0, 1)
    bad([ok[:6]], ValueError, r"bad\.csv: missing column.*required", header=HEADER[:6])
    bad([ok, ok[:6]], ValueError, r"bad\.csv line 3: missing value\(s\) for required")
    bad([("sub01", "EP01", 3, "", 10, 0, 1)], ValueError, r"line 2: missing value\(s\) for apex")
    bad([ok, ("sub01", "EP09", 3, 5, 10, 0, 0)], FileNotFoundError, r"line 3.*clip folder not found.*EP09")
    bad(
        [("sub01", "EP01", 7, 6, 10, 0, 1)],
        ValueError,
        r"line 2 \(sub01/EP01\).*onset <= apex <= offset.*onset 7",
    )
    bad(
        [("sub01", "EP01", 3, 11, 10, 0, 1)],
        ValueError,
        r"line 2.*onset <= apex <= offset.*apex 11, offset 10",
    )
    bad([("sub01", "EP01", 3, "6.5", 10, 0, 1)], ValueError, r"line 2.*apex must be an integer frame number")
    bad(
        [("sub01", "EP01", 0, 6, 14, 0, 1)],
        ValueError,
        r"line 2.*onset 0, offset 14 outside the clip's frames 1\.\.12",
    )
    bad(
        [ok, ("sub01", "EP01", 3, 6, 10, "anger", 1)], ValueError, r"mix ints and class names.*line 2.*line 3"
    )
    bad([("sub01", "EP01", 3, 6, 10, "joy", "anger")], ValueError, r"line 2.*unknown experienced class 'joy'")
    bad([("sub01", "EP01", 3, 6, 10, "fear", "Contempt")], ValueError, r"unknown required class 'Contempt'")
    bad(
        [("sub01", "EP01", 3, 6, 10, 6, 1)], ValueError, r"line 2.*experienced: label 6 out of range \[0, 6\)"
    )
    bad([("sub01", "EP01", 3, 6, 10, 0, -1)], ValueError, r"required: label -1 out of range")
    (tree / "sub01" / "EP01" / "reg_img8.png").unlink()  # frame 8 is sampled by rint(linspace(3, 10, 4))
    bad([ok], FileNotFoundError, r"line 2 \(sub01/EP01\).*frame number\(s\) \[8\] not found")
    (tree / "sub03" / "E1").mkdir(parents=True)
    bad(
        [("sub03", "E1", 1, 1, 2, 0, 0)],
        FileNotFoundError,
        r"line 2 \(sub03/E1\): no numbered images in .*E1",
    )
    with pytest.raises(ValueError, match="t must be >= 2"):
        MFEDFolderDataset(tree, t=1)


# ---------------------------------------------------------------------------------------------------------
# The generalised shared pieces SyntheticMFED renders with (motion groups, grid inversion, colour)
# ---------------------------------------------------------------------------------------------------------


def test_grid_inversion_equals_point_inversion():
    d = SyntheticMFED(num_subjects=1, t=5, size=40)
    sc = d._scene(0, 0, 5, 3)
    p = (pixel_grid(40).unsqueeze(0) - sc.g[:, None, None])[:, 4:36, 6:30]  # (t, 32, 24, 2), a crop
    flat = invert(sc.motions, p.reshape(5, -1, 2), sc.a)
    grid = invert(sc.motions, p, sc.a)
    assert torch.equal(grid.reshape(5, -1, 2), flat)  # the per-window boxes change nothing
    assert float((grid - p).abs().max()) > 0.5  # something moved
    # the solution: q + sum_g a_g D_g(q) = p
    back = grid + sum(sc.a[:, g, None, None, None] * m(grid) for g, m in enumerate(sc.motions))
    assert float((back - p).abs().max()) < 1e-3


def test_motion_groups_and_colours():
    d = SyntheticMFED(num_subjects=1, t=4, size=32, noise=0.0)
    sc = d._scene(0, 2, 3, 9)
    m = sc.motions[0]
    zero = torch.stack([sc.a[:, 0], torch.zeros(4)], 1)
    noise = torch.zeros(4, 32, 32)
    one, flow1, lm1 = render_clip(sc.face, m, sc.a[:, 0], sc.g, sc.texture, noise)
    two, flow2, lm2 = render_clip(sc.face, [m, sc.motions[1]], zero, sc.g, sc.texture, noise)
    assert one.shape == (1, 4, 32, 32) and torch.allclose(
        one, two, atol=2e-4, rtol=0
    )  # a group at 0 is no motion
    assert torch.allclose(flow1, flow2) and torch.allclose(lm1, lm2)
    rgb, _, _ = render_clip(
        sc.face, m, sc.a[:, 0], sc.g, sc.texture, noise.expand(3, -1, -1, -1), ((1, 1, 1),) * 2
    )
    assert rgb.shape == (3, 4, 32, 32) and torch.equal(rgb, one.expand(3, -1, -1, -1))  # unit gains: the grey
    with pytest.raises(ValueError, match=r"2 motions take intensities a of shape \(t, 2\)"):
        invert([m, m], torch.zeros(4, 3, 2), sc.a[:, 0])
    with pytest.raises(ValueError, match=r"one Motion takes intensities a of shape \(t,\)"):
        invert(m, torch.zeros(4, 3, 2), sc.a)
    with pytest.raises(ValueError, match="colors must be"):
        render_clip(sc.face, m, sc.a[:, 0], sc.g, sc.texture, noise, ((1, 1), (1, 1, 1)))

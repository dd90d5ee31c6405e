"""models.data.frame_folder / frames: the frame-folder loader on a generated folder tree."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import FrameFolderDataset
from models.data.frames import load_frames

from . import items
from .items import check_item

W, H = 30, 20  # original frame size (non-square on purpose)


def write_clip(root, subject, clip, numbers, name="img{}.png"):
    folder = root / subject / clip
    folder.mkdir(parents=True)
    for n in numbers:  # frame n is uniformly grey with value 5 * n, so a sampled frame tells its number
        Image.fromarray(np.full((H, W), 5 * n, np.uint8)).save(folder / name.format(n))
    return folder


def write_csv(path, rows, header=("subject", "clip", "onset", "apex", "offset", "label")):
    items.write_csv(path, rows, header)


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


def test_folder_landmark_csv_errors_name_the_file(tree):
    lmd = tree / "lm"
    (lmd / "sub02").mkdir(parents=True)
    d = FrameFolderDataset(tree, t=4, size=16, landmarks_dir=lmd)
    path = lmd / "sub02" / "EP01.csv"
    path.write_text("")
    with pytest.raises(ValueError, match=r"EP01\.csv: no landmark rows"):
        d[2]
    row = ",".join(["1.0"] * 136)
    path.write_text("\n".join([row, ",".join(["1.0"] * 10), row, row]) + "\n")
    with pytest.raises(
        ValueError, match=r"EP01\.csv: expected 136 .* data row\(s\) \[1\] \(0-based\) have \[10\]"
    ):
        d[2]
    path.write_text("\n".join([row] * 3) + "\n")  # the folder has 4 frames and onset..offset spans 4
    with pytest.raises(ValueError, match=r"EP01\.csv: 3 landmark rows"):
        d[2]


def test_load_frames_grey_and_rgb(tmp_path):
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 51, 0
    paths = []
    for n in (1, 2):
        paths.append(str(tmp_path / f"{n}.png"))
        Image.fromarray(img).save(paths[-1])
    rgb, size = load_frames(paths, 8, mode="RGB")
    assert rgb.shape == (3, 2, 8, 8) and size == (W, H) and rgb.is_contiguous()
    assert torch.allclose(rgb[:, 1].mean((1, 2)), torch.tensor([1.0, 0.2, 0.0]))
    grey, _ = load_frames(paths, 8)
    want = np.asarray(Image.fromarray(img).convert("L").resize((8, 8), Image.BILINEAR), np.float32) / 255
    assert grey.shape == (1, 2, 8, 8) and torch.equal(grey[0, 0], torch.from_numpy(want))


@pytest.mark.parametrize(
    "row,missing",
    [
        pytest.param(("sub01", "EP01", 3, 6, 10), "label", id="short-row"),
        pytest.param(("sub01", "EP01", 3, "", 10, "positive"), "apex", id="blank-field"),
    ],
)
def test_folder_csv_row_with_a_missing_field_names_the_line(tree, row, missing):
    rows = [("sub01", "EP01", 3, 6, 10, "positive"), row]
    write_csv(tree / "labels.csv", rows)
    with pytest.raises(ValueError, match=rf"labels.csv line 3: missing value\(s\) for {missing}"):
        FrameFolderDataset(tree, t=2, size=8)

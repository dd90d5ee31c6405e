"""The real DFER data sets of STT (frame folders plus fold files): ``DFEWDataset`` and ``AFEWDataset``. Items and
the frame sampling are those of ``models.data.dfer`` (which also holds the synthetic set)."""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .dfer import DFER_CLASSES, MIN_FRAMES, _item, segment_indices
from .frames import is_int, list_frames, load_frames, read_csv

__all__ = ["DFEWDataset", "AFEWDataset"]


def _random_sized_crop(
    video: torch.Tensor, size: int, rng: np.random.Generator, attempts: int = 10
) -> torch.Tensor:
    """The same random crop of every frame of ``video (c, n, H, W)``, resized to ``(c, n, size, size)``.

    As torchvision's RandomResizedCrop (Former-DFER's GroupRandomSizedCrop): area 8-100 % of the frame,
    aspect ratio 3/4..4/3 (swapped half the time), ``attempts`` tries, else the centred square crop.
    """
    H, W = video.shape[-2:]
    box = None
    for _ in range(attempts):
        area = rng.uniform(0.08, 1.0) * H * W
        ratio = rng.uniform(3 / 4, 4 / 3)
        w, h = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if rng.uniform() < 0.5:
            w, h = h, w
        if 1 <= w <= W and 1 <= h <= H:
            x0, y0 = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            box = (y0, x0, h, w)
            break
    if box is None:
        s = min(H, W)
        box = ((H - s) // 2, (W - s) // 2, s, s)
    y0, x0, h, w = box
    crop = video[..., y0 : y0 + h, x0 : x0 + w].transpose(0, 1)  # (n, c, h, w)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.transpose(0, 1).clamp_(0, 1)


class DFEWDataset(torch.utils.data.Dataset):
    """The real DFEW data set (or any set in its formats): face-crop frame folders plus fold files.

    Args:
        root: the data folder; relative paths (list file, CSV, frame folders) are relative to it.
        list_file: a Former-DFER list file, rows ``<frame_dir> <num_frames> <label 0-6>`` (whitespace
            separated; the folder may contain spaces); ``{fold}`` and ``{split}`` in the name are filled in.
        csv: a DFEW label CSV with the header ``video_name,label`` (case-insensitive, other columns ignored),
            labels 1..7 (``DFER_CLASSES`` 1-based) or class names (case-insensitive); the frames of a video
            are in ``root/<video_name>/`` (or ``root/<video_name as 5 digits>/``, DFEW's folder names);
            ``{fold}`` and ``{split}`` are filled in, e.g.
            ``"EmoLabel_DataSplit/{split}(single-labeled)/set_{fold}.csv"``.
            With neither, the list file ``root/set_{fold}_{split}.txt``; both is an error.
        fold: 1..5; ``split``: "train" or "test".
        size: output frame side S.
        train_augment: on the train split, sample with the random train offsets of ``segment_indices`` and
            apply one random-sized crop (resized to S) and a horizontal flip (p = 0.5) to all 16 frames,
            seeded by ``(seed, index, epoch)`` (see ``set_epoch``). False, and on the test split: the test
            offsets and a plain resize to S x S (PIL bilinear).
        seed: the seed of the train-mode randomness.

    The frames of a folder are its images ordered by the last integer in their file names; a list row uses
    the first ``num_frames`` of them (the folder must hold at least that many), a CSV row all of them.
    Clips with fewer than 16 frames are dropped: ``num_dropped`` counts them, ``dropped`` holds their
    ``(line, folder)``. Attributes: ``rows`` (per kept clip: folder, frame paths, label, line),
    ``labels``, ``num_frames``, ``classes``, ``num_classes``, ``path`` (the label file read).
    """

    name = "DFEW"
    num_folds = 5

    def __init__(
        self,
        root: str,
        list_file: Optional[str] = None,
        csv: Optional[str] = None,
        fold: int = 1,
        split: str = "train",
        size: int = 112,
        train_augment: bool = True,
        seed: int = 0,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"{self.name}: split must be 'train' or 'test', got {split!r}")
        if (
            isinstance(fold, bool)
            or not isinstance(fold, (int, np.integer))
            or not 1 <= fold <= self.num_folds
        ):
            raise ValueError(f"{self.name}: fold must be in 1..{self.num_folds}, got {fold!r}")
        if list_file is not None and csv is not None:
            raise ValueError(f"{self.name}: pass list_file or csv, not both")
        if size < 1:
            raise ValueError(f"{self.name}: size must be >= 1, got {size}")
        self.root, self.fold, self.split, self.size = str(root), int(fold), split, int(size)
        self.seed, self.epoch = seed, 0
        self.augment = bool(train_augment) and split == "train"
        self.classes, self.num_classes = list(DFER_CLASSES), len(DFER_CLASSES)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{self.name} root folder not found: {self.root}")
        if csv is not None:
            clips = self._read_csv(self._fill(csv))
        else:
            clips = self._read_list(self._fill(f"set_{fold}_{split}.txt" if list_file is None else list_file))

        self.rows: list[dict[str, object]] = []
        self.dropped: list[tuple[int, str]] = []
        for line, folder, frames, label in clips:
            if len(frames) < MIN_FRAMES:
                self.dropped.append((line, folder))
            else:
                self.rows.append({"folder": folder, "frames": frames, "label": label, "line": line})
        self.num_dropped = len(self.dropped)
        self.labels: list[int] = [int(r["label"]) for r in self.rows]
        self.num_frames: list[int] = [len(r["frames"]) for r in self.rows]

    def _fill(self, name: str) -> str:
        name = str(name).replace("{fold}", str(self.fold)).replace("{split}", self.split)
        return name if os.path.isabs(name) else os.path.join(self.root, name)

    def _frames(self, folder: str, where: str) -> list[str]:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{where}: frame folder not found: {folder}")
        return list(list_frames(folder).values())

    def _label(self, value: str, base: int, where: str) -> int:
        """``value``: an int ``base..base+6`` or a class name -> the class index."""
        if is_int(value):
            y = int(value) - base
            if not 0 <= y < self.num_classes:
                raise ValueError(
                    f"{where}: label {int(value)} out of range {base}..{base + self.num_classes - 1}"
                )
            return y
        if value.lower() in self.classes:
            return self.classes.index(value.lower())
        raise ValueError(f"{where}: unknown class {value!r}; expected one of {self.classes}")

    def _read_list(self, path: str) -> list[tuple[int, str, list[str], int]]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.name} list file not found: {path}")
        clips = []
        with open(path) as fh:
            for line, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                where = f"{path} line {line}"
                parts = text.strip().rsplit(None, 2)
                if len(parts) != 3 or not is_int(parts[1]):
                    raise ValueError(
                        f"{where}: expected '<frame_dir> <num_frames> <label>', got {text.strip()!r}"
                    )
                n = int(parts[1])
                if n < 1:
                    raise ValueError(f"{where}: num_frames must be >= 1, got {n}")
                label = self._label(parts[2], 0, where)
                folder = parts[0] if os.path.isabs(parts[0]) else os.path.join(self.root, parts[0])
                frames = self._frames(folder, where)
                if len(frames) < n:
                    raise ValueError(
                        f"{where}: num_frames {n} but {folder} holds {len(frames)} numbered images"
                    )
                clips.append((line, folder, frames[:n], label))
        return clips

    def _read_csv(self, path: str) -> list[tuple[int, str, list[str], int]]:
        path, raw = read_csv(self.root, path, ("video_name", "label"))
        clips = []
        for line, r in raw:
            where = f"{path} line {line} ({r['video_name']})"
            label = self._label(r["label"], 1, where)
            folder = os.path.join(self.root, r["video_name"])
            if not os.path.isdir(folder) and is_int(r["video_name"]):
                padded = os.path.join(self.root, f"{int(r['video_name']):05d}")
                folder = padded if os.path.isdir(padded) else folder
            clips.append((line, folder, self._frames(folder, where), label))
        return clips

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Select the train-mode randomness (offsets, crop, flip) of ``epoch``."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        r = self.rows[index]
        frames: list[str] = r["frames"]  # type: ignore[assignment]
        n = len(frames)
        if self.augment:
            rng = np.random.default_rng([self.seed, 5, index, self.epoch])
            video, _ = load_frames([frames[i] for i in segment_indices(n, True, rng)], None, mode="RGB")
            video = _random_sized_crop(video, self.size, rng)
            if rng.uniform() < 0.5:
                video = video.flip(-1)
        else:
            video, _ = load_frames([frames[i] for i in segment_indices(n, False)], self.size, mode="RGB")
        return _item(video.transpose(0, 1).contiguous(), int(r["label"]), n, -1)


class AFEWDataset(DFEWDataset):
    """AFEW in the Former-DFER list format and ``DFER_CLASSES`` order (labels 0..6): see ``DFEWDataset``;
    AFEW has one split (train / validation as "test"), so ``fold`` is 1."""

    name = "AFEW"
    num_folds = 1

    def __init__(
        self,
        root: str,
        list_file: Optional[str] = None,
        fold: int = 1,
        split: str = "train",
        size: int = 112,
        train_augment: bool = True,
        seed: int = 0,
    ):
        super().__init__(root, list_file, None, fold, split, size, train_augment, seed)

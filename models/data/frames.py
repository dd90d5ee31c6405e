"""Building blocks of the loaders for real data sets stored as frame folders.

Layout shared by every such data set: ``root/<subject>/<clip>/`` holds the frames of one clip, ordered by
the last integer in their file names (``img46.jpg``, ``046.png``, ``reg_img46.jpg``), and a CSV at the root
names the clips (header case-insensitive, other columns ignored). A loader for a further data set (its own
columns, frame sampling and ground truth) is one new module built from these functions; see
``frame_folder.FrameFolderDataset`` for the MOL data sets (CASME II, SAMM, SMIC).
"""

from __future__ import annotations

import csv as _csv
import os
import re
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from PIL import Image

__all__ = ["IMAGE_EXT", "frame_number", "list_frames", "subject_ids", "is_int", "is_float", "read_csv",
           "LabelMap", "sample_numbers", "check_frames", "load_frames"]  # fmt: skip

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def frame_number(name: str) -> Optional[int]:
    """The last integer in a file name without its extension (``"reg_img046.jpg"`` -> 46), or None."""
    m = re.search(r"(\d+)(?!.*\d)", os.path.splitext(name)[0])
    return int(m.group(1)) if m else None


def list_frames(folder: str) -> dict[int, str]:
    """Frame number -> file path for the images in ``folder`` (the number is the last integer in the name),
    sorted by number; two images with the same number raise."""
    frames: dict[int, str] = {}
    for name in os.listdir(folder):
        if not name.lower().endswith(IMAGE_EXT):
            continue
        n = frame_number(name)
        if n is None:
            continue
        if n in frames:
            raise ValueError(
                f"{folder}: two images with frame number {n}: {os.path.basename(frames[n])}, {name}"
            )
        frames[n] = os.path.join(folder, name)
    return dict(sorted(frames.items()))


def subject_ids(names: Sequence[str]) -> dict[str, int]:
    """Subject name -> int: the last integer in the name ("sub01" -> 1, "006" -> 6, "s3" -> 3) when that is
    one-to-one over all names, else the position in the sorted unique names."""
    uniq = sorted(set(names))
    nums = [frame_number(n) for n in uniq]
    if all(n is not None for n in nums) and len(set(nums)) == len(uniq):
        return dict(zip(uniq, nums))
    return {n: i for i, n in enumerate(uniq)}


def is_int(s: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", s.strip()) is not None


def is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_csv(root: str, csv: str, columns: Sequence[str]) -> tuple[str, list[tuple[int, dict[str, str]]]]:
    """Read the label CSV ``root/<csv>`` (or ``csv`` itself when it is an absolute path).

    Returns ``(path, rows)``: ``rows`` are ``(line number, {column: stripped value})`` for the ``columns``
    (matched case-insensitively; other columns are ignored). A missing file or column, or a row with an empty or
    missing value in one of ``columns``, raises (naming the line).
    """
    path = csv if os.path.isabs(str(csv)) else os.path.join(str(root), str(csv))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label CSV not found: {path}")
    with open(path, newline="") as fh:
        reader = _csv.DictReader(fh)
        header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; expected header {','.join(columns)}, "
                f"got {reader.fieldnames}"
            )
        rows = []
        for line, r in enumerate(reader, 2):
            row = {c: (r[header[c]] or "").strip() for c in columns}
            empty = [c for c in columns if not row[c]]
            if empty:  # a short row (DictReader fills None) or a blank field
                raise ValueError(
                    f"{path} line {line}: missing value(s) for {', '.join(empty)}; expected the fields "
                    f"{','.join(columns)}, got {dict((k, v) for k, v in r.items() if k is not None)}"
                )
            rows.append((line, row))
    return path, rows


class LabelMap:
    """CSV label strings -> class indices.

    With ``classes`` (list of names) a name maps to its position and an int must lie in
    ``[0, len(classes))``. Without: all-int labels are used as they are (``num_classes = max + 1``), all-name
    labels are numbered in sorted order (``self.classes`` is then that order); a mix raises.
    """

    def __init__(self, labels: Sequence[str], classes: Optional[Sequence[str]], where: str):
        ints = [is_int(x) for x in labels]
        if classes is not None:
            self.classes: Optional[list[str]] = [str(c) for c in classes]
            self.num_classes = len(self.classes)
        elif all(ints):
            self.classes = None
            self.num_classes = max((int(x) for x in labels), default=-1) + 1
        elif not any(ints):
            self.classes = sorted(set(labels))
            self.num_classes = len(self.classes)
        else:
            raise ValueError(f"{where}: labels mix ints and names; pass classes= to map the names")

    def __call__(self, label: str, where: str) -> Optional[int]:
        """The class index of ``label``; None for a name that is not a class (an int out of range raises)."""
        if is_int(label):
            y = int(label)
            if not 0 <= y < self.num_classes:
                raise ValueError(f"{where}: label {y} out of range [0, {self.num_classes})")
            return y
        if self.classes is not None and label in self.classes:
            return self.classes.index(label)
        return None


def sample_numbers(onset: int, offset: int, t: int) -> list[int]:
    """The ``t`` frame numbers ``rint(linspace(onset, offset, t))``; frames repeat in a clip shorter than t."""
    return [int(x) for x in np.rint(np.linspace(onset, offset, t))]


def check_frames(numbers: Sequence[int], frames: dict[int, str], folder: str, where: str) -> None:
    """Raise FileNotFoundError naming the frame numbers of ``numbers`` that ``frames`` lacks."""
    absent = sorted({n for n in numbers if n not in frames})
    if absent:
        have = f"{min(frames)}..{max(frames)}" if frames else "none"
        raise FileNotFoundError(f"{where}: frame number(s) {absent} not found in {folder} (frames: {have})")


def load_frames(
    paths: Sequence[str], size: Optional[int], mode: str = "L"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Load images, convert them to ``mode`` (PIL: "L" grey, "RGB"), resize to ``size x size`` (bilinear) and
    scale to [0, 1] -> ``(video (c, n, size, size) float32, (W, H) of the last original frame)``.

    ``size=None`` keeps the original size (the frames must share it): ``video (c, n, H, W)``."""
    imgs = []
    W = H = 0
    for path in paths:
        with Image.open(path) as im:
            W, H = im.size
            im = im.convert(mode)
            if size is not None:
                im = im.resize((size, size), Image.BILINEAR)
            imgs.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0))
    video = torch.stack(imgs)  # (n, S, S) or (n, S, S, c)
    video = video.unsqueeze(0) if video.dim() == 3 else video.permute(3, 0, 1, 2).contiguous()
    return video, (W, H)

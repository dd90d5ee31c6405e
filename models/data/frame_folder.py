"""``FrameFolderDataset``: the real micro-expression data sets of the MOL pipeline (CASME II, SAMM, SMIC)
stored as frame folders plus a label CSV, with optional landmark and optical-flow ground truth."""

from __future__ import annotations

import csv as _csv
import os
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch

from .frames import (
    LabelMap,
    check_frames,
    is_float,
    is_int,
    list_frames,
    load_frames,
    read_csv,
    sample_numbers,
    subject_ids,
)
from .geometry import NUM_LANDMARKS, resize_flow, resize_points

__all__ = ["FrameFolderDataset", "COLUMNS"]

COLUMNS = ("subject", "clip", "onset", "apex", "offset", "label")


class FrameFolderDataset(torch.utils.data.Dataset):
    """A real micro-expression data set stored as frame folders plus a label CSV.

    Layout: ``root/<subject>/<clip>/`` holds the frames of one clip, ordered by the last integer in their
    file names (``img46.jpg``, ``046.png``, ``reg_img46.jpg``). ``root/<csv>`` (or ``csv`` itself when it is
    an absolute path) has the header ``subject,clip,onset,apex,offset,label`` (case-insensitive; other
    columns are ignored): onset and offset are inclusive frame numbers as in the file names, apex is kept
    in ``self.rows`` but unused, label is an int or a class name.

    Sampling: the frame numbers ``rint(linspace(onset, offset, t))`` (frames repeat when the clip is shorter
    than t), loaded as greyscale, resized to ``size x size`` (PIL bilinear) and scaled to [0, 1].

    Labels: with ``classes`` (list of names) a name maps to its position and an int must lie in
    ``[0, len(classes))``; rows whose name is not in ``classes`` raise, or are dropped when
    ``skip_unknown``. Without ``classes``: all-int labels are used as they are (``num_classes = max + 1``),
    all-name labels are numbered in sorted order (``self.classes`` is then that order).

    Subjects: ``self.subject_names`` are the CSV strings (folder names); ``self.subjects`` their ints: the
    last integer in the name ("sub01" -> 1) when that is one-to-one, else the sorted position.

    Optional ground truth (a missing file gives ``has_* = False`` and zeros):

    - ``landmarks_dir/<subject>/<clip>.npy``: ``(n, 68, 2)`` or ``(n, 136)`` (x, y) in original pixels, or
      ``<clip>.csv`` with 136 interleaved columns per row (a non-numeric header row is skipped). Row i is
      frame ``onset + i`` when ``n == offset - onset + 1``, else the i-th frame of the sorted folder when
      ``n`` is the folder's frame count. Points are mapped to the resized frame with the pixel-centre
      convention ``x' = (x + 0.5) * size / W - 0.5`` (same for y with H).
    - ``flow_dir/<subject>/<clip>.npy``: ``(t-1, 2, H, W)``, the forward flow (dx, dy) in pixels between
      the *sampled* frames, at any resolution H x W; resized bilinearly to ``size x size`` with dx scaled
      by ``size / W`` and dy by ``size / H``.
    """

    def __init__(
        self,
        root: str,
        csv: str = "labels.csv",
        t: int = 8,
        size: int = 128,
        classes: Optional[Sequence[str]] = None,
        flow_dir: Optional[str] = None,
        landmarks_dir: Optional[str] = None,
        skip_unknown: bool = False,
    ):
        if t < 2:
            raise ValueError(f"t must be >= 2, got {t}")
        self.root = str(root)
        self.t = t
        self.size = size
        self.flow_dir = None if flow_dir is None else str(flow_dir)
        self.landmarks_dir = None if landmarks_dir is None else str(landmarks_dir)
        csv_path, raw = read_csv(self.root, csv, COLUMNS)
        labels = LabelMap([r["label"] for _, r in raw], classes, csv_path)
        self.classes, self.num_classes = labels.classes, labels.num_classes

        self.rows: list[dict[str, object]] = []
        for line, r in raw:
            where = f"{csv_path} line {line} ({r['subject']}/{r['clip']})"
            y = labels(r["label"], where)
            if y is None:
                if skip_unknown:
                    continue
                raise ValueError(
                    f"{where}: unknown label name {r['label']!r}; expected one of {self.classes}"
                )
            for c in ("onset", "offset"):
                if not is_int(r[c]):
                    raise ValueError(f"{where}: {c} must be an integer frame number, got {r[c]!r}")
            onset, offset = int(r["onset"]), int(r["offset"])
            if onset > offset:
                raise ValueError(f"{where}: onset {onset} > offset {offset}")
            folder = os.path.join(self.root, r["subject"], r["clip"])
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{where}: clip folder not found: {folder}")
            frames = list_frames(folder)
            numbers = sample_numbers(onset, offset, t)
            check_frames(numbers, frames, folder, where)
            self.rows.append(
                {
                    "subject": r["subject"],
                    "clip": r["clip"],
                    "onset": onset,
                    "apex": int(r["apex"]) if is_int(r["apex"]) else None,
                    "offset": offset,
                    "label": y,
                    "numbers": numbers,
                    "frames": frames,
                    "line": line,
                }
            )
        self.labels: list[int] = [int(r["label"]) for r in self.rows]
        self.subject_names: list[str] = [str(r["subject"]) for r in self.rows]
        ids = subject_ids(self.subject_names)
        self.subjects: list[int] = [ids[s] for s in self.subject_names]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        r = self.rows[index]
        S, t = self.size, self.t
        video, (W, H) = load_frames([r["frames"][n] for n in r["numbers"]], S)

        landmarks = torch.zeros(136, t)
        lm_path, lm = self._load_landmarks(r)
        has_lm = lm is not None
        if has_lm:
            n_rows = lm.shape[0]
            span = r["offset"] - r["onset"] + 1
            order = list(r["frames"])
            if n_rows == span:
                idx = [n - r["onset"] for n in r["numbers"]]
            elif n_rows == len(order):
                idx = [order.index(n) for n in r["numbers"]]
            else:
                raise ValueError(
                    f"{lm_path}: {n_rows} landmark rows; expected "
                    f"offset-onset+1 = {span} or the folder's frame count {len(order)}"
                )
            pts = torch.from_numpy(lm[idx]).float().reshape(t, NUM_LANDMARKS, 2)
            landmarks = resize_points(pts, W, H, S).reshape(t, 2 * NUM_LANDMARKS).t().contiguous()

        flow = torch.zeros(2, S, S, t - 1)
        fl = self._load_flow(r)
        has_flow = fl is not None
        if has_flow:
            flow = resize_flow(torch.from_numpy(fl).float(), S).permute(1, 2, 3, 0).contiguous()

        return {
            "video": video,
            "flow": flow,
            "landmarks": landmarks,
            "label": torch.tensor(r["label"], dtype=torch.int64),
            "subject": torch.tensor(self.subjects[index], dtype=torch.int64),
            "has_flow": torch.tensor(has_flow),
            "has_landmarks": torch.tensor(has_lm),
        }

    @staticmethod
    def _gt_path(base: str, r, ext: str = ".npy") -> str:
        return os.path.join(base, str(r["subject"]), str(r["clip"]) + ext)

    def _load_landmarks(self, r) -> tuple[Optional[str], Optional[np.ndarray]]:
        """``(path, (n, 136) float array)``, or ``(None, None)`` when there is no file."""
        if self.landmarks_dir is None:
            return None, None
        path = self._gt_path(self.landmarks_dir, r)
        if os.path.isfile(path):
            a = np.load(path)
            if not (a.ndim == 3 and a.shape[1:] == (68, 2)) and not (a.ndim == 2 and a.shape[1] == 136):
                raise ValueError(f"{path}: landmarks of shape {a.shape}; expected (n, 68, 2) or (n, 136)")
            return path, a.reshape(a.shape[0], 136).astype(np.float32)
        path = self._gt_path(self.landmarks_dir, r, ".csv")
        if os.path.isfile(path):
            with open(path, newline="") as fh:
                rows = [row for row in _csv.reader(fh) if row]
            if rows and not is_float(rows[0][0]):
                rows = rows[1:]
            if not rows:
                raise ValueError(
                    f"{path}: no landmark rows; expected one row of 136 interleaved x, y values per frame"
                )
            bad = [i for i, row in enumerate(rows) if len(row) != 136]
            if bad:
                raise ValueError(
                    f"{path}: expected 136 interleaved x, y values per row; data row(s) {bad[:5]} (0-based) "
                    f"have {[len(rows[i]) for i in bad[:5]]}"
                )
            return path, np.asarray(rows, dtype=np.float32)
        return None, None

    def _load_flow(self, r) -> Optional[np.ndarray]:
        """``(t-1, 2, H, W)`` float array or None when there is no file."""
        if self.flow_dir is None:
            return None
        path = self._gt_path(self.flow_dir, r)
        if not os.path.isfile(path):
            return None
        a = np.load(path)
        if a.ndim != 4 or a.shape[0] != self.t - 1 or a.shape[1] != 2:
            raise ValueError(
                f"{path}: flow of shape {a.shape}; expected (t-1, 2, H, W) with t-1 = {self.t - 1}"
            )
        return a.astype(np.float32)

"""Checks and helpers shared by the data-set tests: the MOL item format, bilinear sampling at pixel points, label
CSV files."""

import csv

import torch
import torch.nn.functional as F

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


def write_csv(path, rows, header):
    """A label CSV: the header row, then `rows`."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)

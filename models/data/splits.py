"""Evaluation splits over data set items: leave-one-subject-out folds and stratified random splits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

__all__ = ["loso_folds", "split_indices"]


def loso_folds(subjects: Sequence[int]) -> list[tuple[int, list[int], list[int]]]:
    """Leave-one-subject-out folds: ``[(test_subject, train_idx, test_idx), ...]`` sorted by subject.

    ``subjects[i]`` is the subject of item i; every subject gives one fold, the index lists are ascending.
    """
    subjects = [int(s) for s in subjects]
    folds = []
    for s in sorted(set(subjects)):
        test = [i for i, x in enumerate(subjects) if x == s]
        train = [i for i, x in enumerate(subjects) if x != s]
        folds.append((s, train, test))
    return folds


def split_indices(
    n: int, test_fraction: float = 0.2, seed: int = 0, labels: Optional[Sequence[int]] = None
) -> tuple[list[int], list[int]]:
    """A random ``(train_idx, test_idx)`` split of ``range(n)`` (both ascending).

    The test set has ``round(test_fraction * n)`` items; with ``labels`` it is stratified:
    ``round(test_fraction * n_c)`` items of each class c.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
        test = perm[: int(round(test_fraction * n))].tolist()
    else:
        labels = [int(y) for y in labels]
        if len(labels) != n:
            raise ValueError(
                f"split_indices: labels must have one entry per item, got {len(labels)} for n = {n}"
            )
        test = []
        for c in sorted(set(labels)):
            idx = np.array([i for i, y in enumerate(labels) if y == c])
            idx = idx[rng.permutation(len(idx))]
            test += idx[: int(round(test_fraction * len(idx)))].tolist()
    test_set = set(test)
    return [i for i in range(n) if i not in test_set], sorted(test_set)

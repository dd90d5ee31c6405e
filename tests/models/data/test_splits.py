"""models.data.splits: leave-one-subject-out folds and stratified random splits."""

import numpy as np
import pytest

from models.data import SyntheticMicroExpressions, loso_folds, split_indices


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

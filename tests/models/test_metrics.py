"""models.metrics: hand-computed accuracy / WF1 / UF1 / UAR (MOL eq. 10) and the absent-class conventions."""

import pytest
import torch

from models.metrics import accuracy, all_metrics, confusion_matrix, uar, uf1, wf1

# A 3-class example, N_0 = 3, N_1 = 2, N_2 = 5, N = 10.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
Y_PRED = [0, 1, 2, 1, 1, 2, 2, 0, 2, 1]
# Confusion matrix (rows = truth, columns = prediction):
#   true 0 -> predicted 0, 1, 2      : [1, 1, 1]
#   true 1 -> predicted 1, 1         : [0, 2, 0]
#   true 2 -> predicted 2, 2, 0, 2, 1: [1, 1, 3]
# TP = diagonal                      : TP_0 = 1, TP_1 = 2, TP_2 = 3
# FP = column sum - TP               : FP_0 = 2 - 1 = 1, FP_1 = 4 - 2 = 2, FP_2 = 4 - 3 = 1
# FN = row sum - TP                  : FN_0 = 3 - 1 = 2, FN_1 = 2 - 2 = 0, FN_2 = 5 - 3 = 2
# F1_j = 2TP / (2TP + FP + FN)       : F1_0 = 2/5, F1_1 = 4/6 = 2/3, F1_2 = 6/9 = 2/3
# Acc = (1 + 2 + 3) / 10                   = 0.6
# WF1 = 3/10 * 2/5 + 2/10 * 2/3 + 5/10 * 2/3 = 0.12 + 7/15
# UF1 = (2/5 + 2/3 + 2/3) / 3              = 26/45
# UAR = (1/3 + 2/2 + 3/5) / 3              = 29/45
EXPECTED = {"acc": 0.6, "wf1": 0.12 + 7 / 15, "uf1": 26 / 45, "uar": 29 / 45}


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 1, 1], [0, 2, 0], [1, 1, 3]]
    # a class that never occurs keeps its (zero) row and column
    assert confusion_matrix(Y_TRUE, Y_PRED, 4).shape == (4, 4)
    assert confusion_matrix(Y_TRUE, Y_PRED).shape == (3, 3)


def test_hand_computed_metrics():
    got = all_metrics(Y_TRUE, Y_PRED, 3)
    assert set(got) == {"acc", "wf1", "uf1", "uar"}
    for k, v in EXPECTED.items():
        assert isinstance(got[k], float)
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx(EXPECTED["acc"])
    assert wf1(Y_TRUE, Y_PRED, 3) == pytest.approx(EXPECTED["wf1"])
    assert uf1(Y_TRUE, Y_PRED, 3) == pytest.approx(EXPECTED["uf1"])
    assert uar(Y_TRUE, Y_PRED, 3) == pytest.approx(EXPECTED["uar"])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_tensor_inputs(dtype):
    got = all_metrics(torch.tensor(Y_TRUE, dtype=dtype), torch.tensor(Y_PRED, dtype=dtype).view(2, 5), 3)
    assert got == pytest.approx(EXPECTED)


def test_perfect_and_all_wrong():
    y = [0, 1, 2, 2, 1, 0, 0]
    assert all_metrics(y, y, 3) == {"acc": 1.0, "wf1": 1.0, "uf1": 1.0, "uar": 1.0}
    # every prediction wrong: TP_j = 0 for all j, so every metric is 0
    assert all_metrics([0, 1, 2, 0], [1, 2, 0, 2], 3) == {"acc": 0.0, "wf1": 0.0, "uf1": 0.0, "uar": 0.0}


def test_class_absent_from_predictions():
    # class 2 is never predicted: TP_2 = 0, FP_2 = 0, FN_2 = 2 -> F1_2 = 0, recall_2 = 0
    # class 0: TP 2, FP 0, FN 0 -> F1 1;  class 1: TP 2, FP 2, FN 0 -> F1 4/6
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1]
    got = all_metrics(y_true, y_pred, 3)
    assert got["acc"] == pytest.approx(4 / 6)
    assert got["uf1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert got["wf1"] == pytest.approx((2 * 1 + 2 * 2 / 3 + 2 * 0) / 6)
    assert got["uar"] == pytest.approx((1 + 1 + 0) / 3)


def test_absent_class_conventions():
    base = all_metrics(Y_TRUE, Y_PRED, 3)
    # a class in neither y_true nor y_pred (2TP + FP + FN = 0) is left out of every mean
    assert all_metrics(Y_TRUE, Y_PRED, 5) == pytest.approx(base)
    # a class only predicted counts in UF1 (F1 = 0) but not in UAR (N_j = 0) nor WF1 (weight 0)
    # class 0: TP 1, FN 1 -> F1 2/3, recall 1/2; class 1: TP 2 -> F1 1, recall 1; class 3: FP 1 -> F1 0
    y_true, y_pred = [0, 0, 1, 1], [0, 3, 1, 1]
    got = all_metrics(y_true, y_pred, 4)
    assert got["uf1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert got["uar"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["wf1"] == pytest.approx((2 * 2 / 3 + 2 * 1) / 4)
    assert got["acc"] == pytest.approx(3 / 4)


def test_loso_accumulation():
    # LOSO: predictions of every held-out subject are concatenated, then scored once
    folds = [
        ([0, 0, 1], [0, 1, 1]),  # subject A
        ([0, 1, 2, 2], [2, 1, 2, 2]),  # subject B
        ([2, 2, 2], [2, 0, 1]),  # subject C: only class 2
    ]
    y_true = [y for t, _ in folds for y in t]
    y_pred = [y for _, p in folds for y in p]
    assert sorted(zip(y_true, y_pred)) == sorted(zip(Y_TRUE, Y_PRED))  # the hand-computed example, permuted
    assert all_metrics(y_true, y_pred, 3) == pytest.approx(EXPECTED)
    # averaging per-fold UF1 instead gives a different (and not the standard) number
    per_fold = sum(uf1(t, p, 3) for t, p in folds) / len(folds)
    assert per_fold != pytest.approx(EXPECTED["uf1"])


def test_values_in_unit_interval_random():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(1, 40, (1,), generator=g))
        yt = torch.randint(0, 5, (n,), generator=g)
        yp = torch.randint(0, 5, (n,), generator=g)
        m = all_metrics(yt, yp, 5)
        assert all(0.0 <= v <= 1.0 for v in m.values())
        assert m["acc"] == pytest.approx(float((yt == yp).double().mean()))
        # binary-indicator definition of F1 per class, as in MEGC evaluation scripts
        f1s, recalls = [], []
        for c in range(5):
            tp = int(((yt == c) & (yp == c)).sum())
            fp = int(((yt != c) & (yp == c)).sum())
            fn = int(((yt == c) & (yp != c)).sum())
            if 2 * tp + fp + fn:
                f1s.append(2 * tp / (2 * tp + fp + fn))
            if tp + fn:
                recalls.append(tp / (tp + fn))
        assert m["uf1"] == pytest.approx(sum(f1s) / len(f1s))
        assert m["uar"] == pytest.approx(sum(recalls) / len(recalls))


def test_errors():
    with pytest.raises(ValueError, match="labels but"):
        accuracy([0, 1], [0], 2)
    with pytest.raises(ValueError, match="outside"):
        accuracy([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="outside"):
        uf1([0, 1], [-1, 1], 3)
    with pytest.raises(ValueError, match="integer"):
        uar(torch.tensor([0.0, 1.0]), [0, 1], 2)
    with pytest.raises(ValueError, match="empty"):
        all_metrics([], [], 3)

"""Classification metrics of micro-expression recognition: accuracy and the MOL paper's eq. 10.

With ``N_j`` the number of samples of class j (row sums of the confusion matrix), ``N`` the total and
``TP_j, FP_j, FN_j`` the per-class true positives, false positives and false negatives:

- ``WF1 = sum_j N_j / N * F1_j`` (eq. 10a), ``F1_j = 2 TP_j / (2 TP_j + FP_j + FN_j)``;
- ``UF1 = mean_j F1_j`` (eq. 10b);
- ``UAR = mean_j TP_j / N_j`` (eq. 10c).

Every function takes ``(y_true, y_pred, num_classes=None)``: sequences or tensors of class indices.

Classes that do not occur: the paper's means run over all n classes, which is undefined when a class has
``N_j = 0`` (``TP_j / N_j``) or ``2 TP_j + FP_j + FN_j = 0``. We follow the composite-dataset evaluation
practice (MEGC 2019): UF1 averages over the classes present in ``y_true`` or ``y_pred`` (exactly those with
``2 TP_j + FP_j + FN_j > 0``; a class only predicted, never true, counts with F1 = 0), and UAR averages over
the classes present in ``y_true`` (``N_j > 0``). WF1 is unaffected (absent classes have weight 0). For
LOSO evaluation, concatenate the predictions of all folds and compute the metrics once, as the paper and
MEGC do, rather than averaging per-fold values (a single subject often lacks classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch

__all__ = ["confusion_matrix", "accuracy", "wf1", "uf1", "uar", "all_metrics"]

Labels = Union[Sequence[int], torch.Tensor]


def _as_labels(y: Labels, name: str) -> torch.Tensor:
    t = torch.as_tensor(y)
    if t.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    return t.reshape(-1).to(torch.int64).cpu()


def confusion_matrix(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts; entry ``[i, j]`` = samples of true class i predicted j.

    ``y_true``, ``y_pred``: equal-length sequences or tensors of ints in ``[0, num_classes)``;
    ``num_classes`` defaults to ``1 + max(y_true, y_pred)`` (pass it: a class absent from both is harmless
    to every metric here, but the matrix shape should not depend on the data).
    """
    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if yt.numel() != yp.numel():
        raise ValueError(f"y_true has {yt.numel()} labels but y_pred has {yp.numel()}")
    if num_classes is None:
        num_classes = 1 + max(int(yt.max()) if yt.numel() else 0, int(yp.max()) if yp.numel() else 0)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, y in (("y_true", yt), ("y_pred", yp)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"{name} has labels outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}"
            )
    return torch.bincount(yt * num_classes + yp, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _counts(y_true: Labels, y_pred: Labels, num_classes: Optional[int]):
    cm = confusion_matrix(y_true, y_pred, num_classes)
    if int(cm.sum()) == 0:
        raise ValueError("metrics of an empty prediction set are undefined")
    tp = cm.diag().double()
    support = cm.sum(1).double()  # N_j
    predicted = cm.sum(0).double()
    fp, fn = predicted - tp, support - tp
    return tp, fp, fn, support


def _f1(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp)), denom > 0


def accuracy(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None) -> float:
    """Fraction of correct predictions."""
    tp, _, _, support = _counts(y_true, y_pred, num_classes)
    return float(tp.sum() / support.sum())


def wf1(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None) -> float:
    """Support-weighted F1 (eq. 10a): ``sum_j N_j / N * 2TP_j / (2TP_j + FP_j + FN_j)``."""
    tp, fp, fn, support = _counts(y_true, y_pred, num_classes)
    f1, _ = _f1(tp, fp, fn)
    return float((support * f1).sum() / support.sum())


def uf1(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None) -> float:
    """Unweighted F1 (eq. 10b): mean of the per-class F1 over the classes in ``y_true`` or ``y_pred``."""
    tp, fp, fn, _ = _counts(y_true, y_pred, num_classes)
    f1, present = _f1(tp, fp, fn)
    return float(f1[present].mean())


def uar(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None) -> float:
    """Unweighted average recall (eq. 10c): mean of ``TP_j / N_j`` over the classes with ``N_j > 0``."""
    tp, _, _, support = _counts(y_true, y_pred, num_classes)
    present = support > 0
    return float((tp[present] / support[present]).mean())


def all_metrics(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None) -> dict[str, float]:
    """``{"acc": ..., "wf1": ..., "uf1": ..., "uar": ...}``, each a Python float in [0, 1]."""
    return {
        "acc": accuracy(y_true, y_pred, num_classes),
        "wf1": wf1(y_true, y_pred, num_classes),
        "uf1": uf1(y_true, y_pred, num_classes),
        "uar": uar(y_true, y_pred, num_classes),
    }

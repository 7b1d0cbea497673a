"""Segmentation metrics of the F3 facies benchmark, all from one confusion matrix.

The matrix is accumulated on the device (a scatter-add per batch, no host synchronisation) and
read once; the scores follow the benchmark's ``runningScore``: pixel accuracy, per-class
accuracy (recall), their mean over the classes present in the labels, mean IoU over the
classes present in labels or predictions, and frequency-weighted IoU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def confusion(pred: torch.Tensor, label: torch.Tensor, n_classes: int, ignore_index: int
              ) -> torch.Tensor:
    """(C, C) int64 matrix, rows = label, columns = prediction, ignored pixels left out."""
    label = label.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = (label != ignore_index) & (label < n_classes)
    # masked pixels go to a spare bin C*C that is cut off; scatter_add, not bincount, whose
    # CUDA version reads the maximum back to the host
    index = torch.where(keep, label * n_classes + pred, n_classes * n_classes)
    bins = torch.zeros(n_classes * n_classes + 1, dtype=torch.int64, device=index.device)
    bins.scatter_add_(0, index, torch.ones((), dtype=torch.int64, device=index.device
                                           ).expand_as(index))
    return bins[:-1].view(n_classes, n_classes)


class ConfusionMatrix:
    """A running confusion matrix on ``device``; ``scores()`` is the only host sync."""

    def __init__(self, n_classes: int, ignore_index: int, device: torch.device | str = "cpu"
                 ) -> None:
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self.hist = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        self.hist += confusion(pred, label, self.n_classes, self.ignore_index)

    def scores(self, classes: list[str]) -> dict[str, Any]:
        return scores(self.hist.cpu().numpy(), classes)


def _num(value: float) -> float | None:
    """JSON-able number: NaN (an undefined score) becomes None."""
    return None if np.isnan(value) else float(value)


def scores(hist: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Benchmark scores of confusion matrix ``hist`` (rows = label, columns = prediction).

    A class absent from the labels has no accuracy (None) and no part in the means; a class
    absent from both labels and predictions has no IoU.
    """
    hist = np.asarray(hist, dtype=np.float64)
    tp = np.diag(hist)
    labelled = hist.sum(axis=1)
    union = labelled + hist.sum(axis=0) - tp
    total = hist.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = np.where(labelled > 0, tp / labelled, np.nan)
        iou = np.where(union > 0, tp / union, np.nan)
        freq = labelled / total if total else np.zeros_like(labelled)
    present = labelled > 0
    return {
        "pixel_acc": _num(tp.sum() / total) if total else None,
        "mean_class_acc": _num(class_acc[present].mean()) if present.any() else None,
        "miou": _num(np.nanmean(iou)) if (union > 0).any() else None,
        "fwiou": _num((freq[present] * iou[present]).sum()) if present.any() else None,
        "class_acc": {name: _num(v) for name, v in zip(classes, class_acc)},
        "class_iou": {name: _num(v) for name, v in zip(classes, iou)},
    }

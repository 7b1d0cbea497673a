"""The on-device accumulators behind the data maps (read by :mod:`falsecli.method.datamaps`).

Per tracked pixel and epoch the prediction pass yields two numbers (:func:`label_probs`): the
softmax probability of the pixel's label and that of its top wrong class. Keeping them per
epoch would cost 8 bytes x pixels x epochs (~14 GB for F3's 29 M pixels x 60 epochs), so
:class:`DataMapTracker` folds each epoch into running statistics instead, 21 bytes a pixel
whatever the number of epochs:

- mean and M2 of both probabilities by Welford's update, in float32. Welford, not sums of
  x and x^2: the variance of a probability near 1 (most pixels, late in training) is a
  small difference of two numbers near 1 in ``E[x^2] - E[x]^2``, which float32 (24-bit
  mantissa) would lose; Welford's update adds only differences from the running mean;
- from epoch ``late_from`` on: the minimum of ``p(top wrong) - p(label)`` and the one class
  predicted in every late epoch (``UNSTABLE`` once the prediction changes class).

All updates are elementwise on the device, queued behind the prediction pass; nothing is
copied to the host until :meth:`DataMapTracker.save`. The state goes into the training
checkpoint, so a resumed run continues with exactly the accumulators it had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from falsecli.core.files import save_npz
from falsecli.method.datamaps import DATAMAP, UNSTABLE
from falsecli.method.history import TRACKING

#: rows of the float32 state
LABEL_MEAN, LABEL_M2, WRONG_MEAN, WRONG_M2, LATE_MARGIN = range(5)


def label_probs(scores: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """(2, N*H*W) float32: the softmax probability of each pixel's label and of the likeliest
    other class, from class scores (N, C, H, W) and labels (N, H, W). Unlabelled pixels are
    scored as if labelled class 0 (their rows are never read)."""
    p = scores.float().softmax(1)
    lab = torch.where(labels == ignore_index, 0, labels.long())[:, None]
    p_label = p.gather(1, lab)
    # the likeliest other class: the label's probability zeroed (2x faster than a top-2 on
    # the CPU, the same values)
    p_wrong = p.scatter(1, lab, 0.0).amax(1)
    return torch.stack([p_label.reshape(-1), p_wrong.reshape(-1)])


class DataMapTracker:
    """Running per-pixel statistics of ``n_pixels`` tracked pixels on ``device``."""

    def __init__(self, n_pixels: int, late_from: int, device: torch.device,
                 state: dict[str, Any] | None = None) -> None:
        self.late_from = late_from
        if state is None:
            self.epochs = self.late_epochs = 0
            self.stats = torch.zeros((5, n_pixels), dtype=torch.float32, device=device)
            self.late_class = torch.full((n_pixels,), UNSTABLE, dtype=torch.uint8,
                                         device=device)
        else:
            self.epochs, self.late_epochs = int(state["epochs"]), int(state["late_epochs"])
            self.stats = state["stats"].to(device)
            self.late_class = state["late_class"].to(device)

    def state(self) -> dict[str, Any]:
        """What the training checkpoint keeps (device tensors; the saver copies them)."""
        return {"epochs": self.epochs, "late_epochs": self.late_epochs, "stats": self.stats,
                "late_class": self.late_class}

    def record(self, probs: torch.Tensor, pred: torch.Tensor) -> None:
        """Fold in one epoch: ``probs`` (2, P) from :func:`label_probs`, ``pred`` (P,) uint8."""
        self.epochs += 1
        s = self.stats
        for mean, m2, x in ((LABEL_MEAN, LABEL_M2, probs[0]), (WRONG_MEAN, WRONG_M2, probs[1])):
            delta = x - s[mean]
            s[mean] += delta / self.epochs
            s[m2] += delta * (x - s[mean])
        if self.epochs < self.late_from:
            return
        margin = probs[1] - probs[0]
        if self.late_epochs == 0:
            s[LATE_MARGIN] = margin
            self.late_class.copy_(pred)
        else:
            torch.minimum(s[LATE_MARGIN], margin, out=s[LATE_MARGIN])
            self.late_class.masked_fill_(pred != self.late_class, UNSTABLE)
        self.late_epochs += 1

    def save(self, run: Path) -> Path:
        """Write ``tracking/datamap.npz`` (variances over the epochs, population form)."""
        s = self.stats.cpu().numpy()
        n = max(self.epochs, 1)
        path = Path(run) / TRACKING / DATAMAP
        save_npz(path, label_mean=s[LABEL_MEAN], label_var=s[LABEL_M2] / n,
                 wrong_mean=s[WRONG_MEAN], wrong_var=s[WRONG_M2] / n,
                 late_margin=s[LATE_MARGIN], late_class=self.late_class.cpu().numpy(),
                 epochs=self.epochs, late_from=self.late_from, late_epochs=self.late_epochs)
        return path

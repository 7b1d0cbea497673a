"""The final softmax margin of every tracked pixel: how far the trained network's decision
for the pixel lies from the decision boundary (claim C1 at the decision boundary).

Per pixel, ``p(label) − max over the other classes of p``: in [−1, 1], positive when the
pixel ends classified right, near 0 at the decision boundary; NaN where the label is
ignored. One float16 per tracked pixel (half the disk of float32; a probability difference
loses < 5e-4), in the tracked pixel order, written once with the final weights (the last
epoch's) as ``tracking/margin.npy``. The pixels forgotten most should end nearest the
boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from falsecli.data.dataset import Dataset, Section
from falsecli.method.history import TRACKING

MARGIN = "margin.npy"


def label_margins(model: Any, ds: Dataset, sections: list[Section], batch_size: int,
                  amp: bool) -> np.ndarray:
    """(pixels,) float16: each pixel's label probability minus the likeliest other class's,
    section by section in order (NaN where the label is ``ds.ignore_index``)."""
    import torch

    from falsecli.method.training import softmax_batches

    out = []
    for p, labels in softmax_batches(model, ds, sections, batch_size, amp):
        y = torch.from_numpy(labels.astype(np.int64)).to(p.device)
        known = y != ds.ignore_index
        index = torch.where(known, y, 0)[:, None]
        own = p.gather(1, index)[:, 0]
        other = p.scatter(1, index, -1.0).max(1).values
        margin = torch.where(known, own - other, torch.nan)
        out.append(margin.reshape(len(margin), -1).to(torch.float16).cpu().numpy())
    return np.concatenate([m.ravel() for m in out]) if out else np.zeros(0, np.float16)


def read_margins(run: Path) -> np.ndarray | None:
    """The run's final margins (None for a run recorded before they were)."""
    path = Path(run) / TRACKING / MARGIN
    return np.load(path, allow_pickle=False) if path.is_file() else None

"""Per-pixel learning history of the tracked sections, one packed row per epoch.

At F3 scale (~29 M tracked pixels x 60 epochs) the history must never be held in memory:
after each epoch the correctness and switch bits are compared and packed on the device,
copied to the host once, and appended to ``correct.npy`` / ``switch.npy``, which are
valid ``.npy`` files after every epoch (fixed-size header rewritten with the row count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from falsecli.core.files import save_npy, write_json
from falsecli.data.dataset import Section
from falsecli.method.history import (CORRECT, FILES, LABELS, PRED_LAST, SECTIONS_JSON, SWITCH,
                                     RowFile)


def packbits(bits: torch.Tensor) -> torch.Tensor:
    """``np.packbits(bits, axis=-1)`` on the tensor's device: the first pixel of each byte
    in the most significant bit, the last byte padded with zeros."""
    n = bits.shape[-1]
    b = F.pad(bits.to(torch.uint8), (0, -n % 8))
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=bits.device)
    return (b.view(*b.shape[:-1], -1, 8) << shifts).sum(-1, dtype=torch.uint8)


def offsets(sections: list[Section]) -> list[int]:
    """Offset of each section's first pixel in the tracked pixel order."""
    out, total = [], 0
    for s in sections:
        out.append(total)
        total += s.shape[0] * s.shape[1]
    return out


class Tracker:
    """The ``tracking/`` directory of one training run.

    ``labels`` is the (P,) uint8 label vector of the tracked pixels on the compute device;
    ``previous`` the predictions of the last recorded epoch (from a checkpoint when resuming).
    """

    def __init__(self, directory: Path, sections: list[Section], labels: torch.Tensor,
                 classes: list[str], ignore_index: int, *, epochs: int = 0,
                 previous: torch.Tensor | None = None) -> None:
        self.directory = Path(directory)
        self.labels = labels
        self.previous = previous
        self.epochs = epochs
        n_pixels = labels.numel()
        width = (n_pixels + 7) // 8
        self.correct = RowFile(self.directory / CORRECT, width)
        self.switch = RowFile(self.directory / SWITCH, width)
        self.meta: dict[str, Any] = {
            "classes": list(classes), "ignore_index": ignore_index, "n_pixels": n_pixels,
            "epochs": epochs,
            "sections": [{**s.to_json(), "offset": o}
                         for s, o in zip(sections, offsets(sections))],
        }
        if epochs == 0:
            for rows in (self.correct, self.switch):
                rows.create()
        else:
            if previous is None:
                raise ValueError("resuming a tracker needs the previous predictions")
            for rows in (self.correct, self.switch):
                rows.truncate(epochs)
        save_npy(self.directory / LABELS, labels.cpu().numpy())
        write_json(self.directory / SECTIONS_JSON, self.meta)
        pinned = labels.is_cuda
        self._host = torch.empty((2, width), dtype=torch.uint8, pin_memory=pinned)

    def paths(self) -> list[Path]:
        return [self.directory / name for name in FILES]

    def record(self, pred: torch.Tensor) -> None:
        """Append epoch ``epochs + 1``: ``pred`` is the (P,) uint8 prediction on the device
        (kept, not copied, as the reference for the next switch row)."""
        correct = pred == self.labels
        switch = (pred != self.previous if self.previous is not None
                  else torch.zeros_like(correct))
        self._host.copy_(packbits(torch.stack([correct, switch])), non_blocking=True)
        if pred.is_cuda:  # the one wait for the device in an epoch
            torch.cuda.current_stream(pred.device).synchronize()
        rows = self._host.numpy()
        self.correct.append(rows[0])
        self.switch.append(rows[1])
        self.previous = pred
        self.epochs += 1
        self.meta["epochs"] = self.epochs
        write_json(self.directory / SECTIONS_JSON, self.meta)

    def finish(self) -> None:
        """Write the predictions of the last recorded epoch."""
        if self.previous is None:
            raise ValueError("no epoch recorded")
        save_npy(self.directory / PRED_LAST, self.previous.cpu().numpy())

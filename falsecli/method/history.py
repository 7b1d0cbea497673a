"""A training run's ``tracking/`` folder (SPEC §3): its file names, the growing row file the
trainer appends to, and the validated reader.

One module owns the layout so that the writer (:mod:`falsecli.method.tracking`, on the
device, with torch) and the readers (:mod:`falsecli.method.forgetting`, the heatmap and
report stages) cannot drift apart. Torch-free on purpose: reading a history must not pay
for importing torch.
"""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from falsecli.core.errors import FalseCliError, did_you_mean
from falsecli.core.files import atomic_path, read_json, write_json

#: the history's folder inside a run folder, and its files
TRACKING = "tracking"
SECTIONS_JSON = "sections.json"
LABELS = "labels.npy"
CORRECT = "correct.npy"
SWITCH = "switch.npy"
PRED_LAST = "pred_last.npy"
FILES = (SECTIONS_JSON, LABELS, CORRECT, SWITCH, PRED_LAST)
#: the pool sections' softmax uncertainty after the last epoch (runs that track ``pool``)
CONFIDENCE = "confidence.json"
#: its statistics, each a mean over a section's pixels
CONFIDENCE_STATS = ("entropy", "least_confidence", "margin")
#: bytes before the data of a growing .npy: magic, version, header length, padded dict
HEADER_BYTES = 128
#: event counts are stored as uint16, so no more epochs can be counted
MAX_EPOCHS = np.iinfo(np.uint16).max
#: labels counted per chunk when a history is validated
LABEL_CHUNK = 1 << 24
#: the fix for a damaged history
REDO = "redo the training run with --force"


class RowFile:
    """A uint8 (rows, width) ``.npy`` that grows in place, one appended row at a time.

    Data go first, then the header with the new count, so a process killed mid-append
    leaves a file numpy still reads with the previous rows.
    """

    def __init__(self, path: Path, width: int) -> None:
        self.path = Path(path)
        self.width = width

    def _header(self, rows: int) -> bytes:
        text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({rows}, {self.width}), }}"
        body_len = HEADER_BYTES - 10
        return (b"\x93NUMPY\x01\x00" + struct.pack("<H", body_len)
                + text.ljust(body_len - 1).encode("latin1") + b"\n")

    def create(self) -> None:
        """An empty (0, width) array."""
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(self._header(0))

    def rows(self) -> int:
        """Rows recorded in the header; raises if the file is not one of ours."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(HEADER_BYTES)
            if not head.startswith(b"\x93NUMPY\x01\x00"):
                raise ValueError("no .npy 1.0 header")
            rows, width = ast.literal_eval(head[10:].decode("latin1"))["shape"]
        except (OSError, ValueError, SyntaxError, KeyError, TypeError) as exc:
            raise FalseCliError(f"{self.path}: not a tracking history file ({exc}) — "
                                "use --force to start the run over") from None
        if width != self.width:
            raise FalseCliError(f"{self.path}: rows of {width} bytes, expected {self.width} — "
                                "the tracked sections changed; use --force to start over")
        return int(rows)

    def truncate(self, rows: int) -> None:
        """Keep the first ``rows`` rows (a resumed run drops rows after its checkpoint)."""
        have = self.rows()
        if have < rows:
            raise FalseCliError(f"{self.path}: {have} epochs recorded but the checkpoint is "
                                f"at epoch {rows} — use --force to start over")
        with open(self.path, "r+b") as fh:
            fh.truncate(HEADER_BYTES + rows * self.width)
            fh.write(self._header(rows))

    def iter_rows(self) -> Iterator[np.ndarray]:
        """The recorded rows in order, read one at a time into ONE reused buffer (copy a row
        to keep it): a pass over an F3-sized history needs a row of memory, not the file's
        size in mapped pages."""
        rows = self.rows()
        buf = np.empty(self.width, dtype=np.uint8)
        with open(self.path, "rb") as fh:
            fh.seek(HEADER_BYTES)
            for i in range(rows):
                if fh.readinto(memoryview(buf)) != self.width:
                    raise FalseCliError(f"{self.path}: row {i} of {rows} is cut short — {REDO}")
                yield buf

    def append(self, row: np.ndarray) -> None:
        """Append one row of ``width`` bytes."""
        rows = self.rows()
        with open(self.path, "r+b") as fh:
            fh.seek(HEADER_BYTES + rows * self.width)
            fh.write(np.ascontiguousarray(row, dtype=np.uint8).tobytes())
            fh.truncate()
            fh.flush()
            fh.seek(0)
            fh.write(self._header(rows + 1))


@dataclass(frozen=True)
class TrackedSection:
    """One tracked section: its pixels are ``[offset, offset + size)`` of the history."""

    name: str
    split: str
    axis: str
    index: int
    shape: tuple[int, int]  # (depth, width)
    offset: int

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def pixels(self) -> slice:
        return slice(self.offset, self.offset + self.size)


@dataclass
class Tracking:
    """A run's ``tracking/`` folder, validated; the large arrays stay memory-mapped."""

    path: Path
    classes: list[str]
    ignore_index: int
    n_pixels: int
    epochs: int
    sections: list[TrackedSection]
    labels: np.ndarray  # uint8 (P,)
    correct: np.ndarray  # uint8 (E, ceil(P/8)), packed
    switch: np.ndarray  # uint8 (E, ceil(P/8)), packed, row 0 zero

    def section(self, name: str) -> TrackedSection:
        """The section called ``name``; unknown names list a few valid ones."""
        found = self._by_name.get(name)
        if found is None:
            few = ", ".join(s.name for s in self.sections[:5])
            more = f", ... ({len(self.sections)} in all)" if len(self.sections) > 5 else ""
            hint = did_you_mean(name, self._by_name)
            raise FalseCliError(f"unknown section '{name}' in {self.path}{hint} "
                                f"(the tracked sections are {few}{more})")
        return found

    @cached_property
    def _by_name(self) -> dict[str, TrackedSection]:
        return {s.name: s for s in self.sections}

    def switch_rows(self) -> Iterator[np.ndarray]:
        """The packed switch rows, one at a time (see :meth:`RowFile.iter_rows`)."""
        return RowFile(self.path / SWITCH, self.switch.shape[1]).iter_rows()

    @cached_property
    def labelled(self) -> np.ndarray:
        """bool (P,): pixels with a class label (not ``ignore_index``)."""
        return np.asarray(self.labels) != self.ignore_index

    def window(self, epochs: int | None) -> int:
        """The number of epochs T to use: all recorded when None, else checked against them."""
        if epochs is None:
            return self.epochs
        if epochs < 1:
            raise FalseCliError(f"heatmap.epochs is {epochs}; it must be at least 1")
        if epochs > self.epochs:
            raise FalseCliError(
                f"heatmap.epochs is {epochs} but {self.path} recorded only {self.epochs} "
                f"epochs — use --epochs {self.epochs} or fewer")
        return epochs

    def images(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Split a per-pixel array (P,) into one [depth, width] image per section."""
        return {s.name: values[s.pixels].reshape(s.shape) for s in self.sections}

    def flatten(self, images: Mapping[str, np.ndarray], source: Path) -> np.ndarray:
        """Inverse of :meth:`images`; ``source`` names the file in errors."""
        missing = [s.name for s in self.sections if s.name not in images]
        if missing:
            raise FalseCliError(f"{source}: no map for section {missing[0]} of {self.path} "
                                "— redo that stage with --force")
        for s in self.sections:
            if images[s.name].shape != s.shape:
                raise FalseCliError(f"{source}: section {s.name} has shape "
                                    f"{list(images[s.name].shape)}, {self.path} says "
                                    f"{list(s.shape)} — redo that stage with --force")
        return np.concatenate([images[s.name].ravel() for s in self.sections])


def _load_npy(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing — the training run is incomplete; "
                            "redo it with 'falsecli train --force'") from None
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty or cut-off file
        raise FalseCliError(f"{path}: not a readable .npy file ({exc or 'empty'}) — {REDO}"
                            ) from None
    if array.dtype != dtype or array.shape != shape:
        raise FalseCliError(f"{path}: expected {np.dtype(dtype).name} {list(shape)}, found "
                            f"{array.dtype.name} {list(array.shape)} — {REDO}")
    return array


def _parse_sections(meta: dict[str, Any], path: Path) -> list[TrackedSection]:
    sections, offset = [], 0
    for i, entry in enumerate(meta["sections"]):
        try:
            depth, width = (int(v) for v in entry["shape"])
            section = TrackedSection(str(entry["name"]), str(entry["split"]),
                                     str(entry["axis"]), int(entry["index"]), (depth, width),
                                     int(entry["offset"]))
        except (KeyError, TypeError, ValueError):
            raise FalseCliError(f"{path}: sections[{i}] must have name, split, axis, index, "
                                f"shape [depth, width] and offset — {REDO}") from None
        if section.offset != offset:
            raise FalseCliError(f"{path}: section {section.name} starts at pixel "
                                f"{section.offset}, expected {offset} (sections are stored "
                                "one after another)")
        offset += section.size
        sections.append(section)
    if offset != meta["n_pixels"]:
        raise FalseCliError(f"{path}: the sections hold {offset} pixels but n_pixels is "
                            f"{meta['n_pixels']}")
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise FalseCliError(f"{path}: section name {dup} appears twice")
    return sections


def load_tracking(run: Path) -> Tracking:
    """Load and validate ``<run>/tracking/`` (SPEC §3: every shape, dtype and label) of a
    training run directory (``train``, ``retrain/<aug>/seed<k>``)."""
    folder = Path(run) / TRACKING
    meta_path = folder / SECTIONS_JSON
    meta = read_json(meta_path, REDO)
    kinds = {"classes": list, "ignore_index": int, "n_pixels": int, "epochs": int,
             "sections": list}
    if not isinstance(meta, dict) or any(type(meta.get(k)) is not t for k, t in kinds.items()):
        raise FalseCliError(f"{meta_path}: must be an object with "
                            + ", ".join(f"{k} ({t.__name__})" for k, t in kinds.items())
                            + f" — {REDO}")
    n_pixels, epochs = meta["n_pixels"], meta["epochs"]
    if not 0 <= meta["ignore_index"] <= 255 or n_pixels < 0:
        raise FalseCliError(f"{meta_path}: ignore_index must be 0-255 and n_pixels at least 0 "
                            f"— {REDO}")
    if not 1 <= epochs <= MAX_EPOCHS:
        raise FalseCliError(f"{meta_path}: epochs is {epochs}; tracking needs 1 to "
                            f"{MAX_EPOCHS} recorded epochs")
    sections = _parse_sections(meta, meta_path)
    packed = (epochs, (n_pixels + 7) // 8)
    tracking = Tracking(
        path=folder, classes=[str(c) for c in meta["classes"]],
        ignore_index=int(meta["ignore_index"]), n_pixels=n_pixels, epochs=epochs,
        sections=sections, labels=_load_npy(folder / LABELS, np.uint8, (n_pixels,)),
        correct=_load_npy(folder / CORRECT, np.uint8, packed),
        switch=_load_npy(folder / SWITCH, np.uint8, packed),
    )
    # chunked: bincount casts to int64, 8 bytes per pixel at once (0.9 GB for F3's pool)
    counts = sum(np.bincount(tracking.labels[i:i + LABEL_CHUNK], minlength=256)
                 for i in range(0, max(n_pixels, 1), LABEL_CHUNK))
    counts[tracking.ignore_index] = 0
    bad = np.flatnonzero(counts[len(tracking.classes):])
    if bad.size:
        raise FalseCliError(f"{folder / LABELS}: label {bad[0] + len(tracking.classes)} "
                            f"is neither a class id (0-{len(tracking.classes) - 1}) nor "
                            f"ignore_index {tracking.ignore_index}")
    return tracking


def write_confidence(path: Path, names: list[str], values: np.ndarray) -> None:
    """``confidence.json``: per section, the :data:`CONFIDENCE_STATS` of ``values``
    (sections, 3)."""
    write_json(path, {"stats": list(CONFIDENCE_STATS),
                      "sections": {n: [float(v) for v in row] for n, row in zip(names, values)}})


def load_confidence(run: Path, names: list[str]) -> np.ndarray:
    """(len(names), 3) of the run's ``confidence.json`` for the sections ``names``, in
    :data:`CONFIDENCE_STATS` order."""
    path = Path(run) / TRACKING / CONFIDENCE
    if not path.is_file():
        raise FalseCliError(f"{path}: missing — the run did not track the pool "
                            "(train.track must include pool); redo it with --force")
    data = read_json(path, REDO)
    try:
        if data["stats"] != list(CONFIDENCE_STATS):
            raise ValueError
        out = np.array([data["sections"][n] for n in names], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise FalseCliError(f"{path}: must map every pool section to its "
                            f"{', '.join(CONFIDENCE_STATS)} — {REDO}") from None
    if out.shape != (len(names), len(CONFIDENCE_STATS)) or not np.isfinite(out).all():
        raise FalseCliError(f"{path}: must hold {len(CONFIDENCE_STATS)} finite numbers per "
                            f"section — {REDO}")
    return out

"""Forgetting and switch events from a run's recorded history (SPEC §6, paper eq. 1-3).

The history is stored bit-packed, one row per epoch, so an F3-scale run (~29 M pixels x 60
epochs) is ~200 MB per file. Events are counted without unpacking the history: per chunk of
packed columns, every epoch's event bits are added into bit-plane counters (a ripple-carry
adder on packed bytes), and only the final counts are unpacked. Time and memory therefore
grow with the number of pixels, not with pixels x epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from falsecli.core.errors import FalseCliError
from falsecli.core.workdir import read_json

TRACKING = "tracking"
SECTIONS_JSON = "sections.json"
NEVER_LEARNED_MODES = ("zero", "max")
#: packed bytes (8 pixels each) processed at once: keeps the working set in cache
CHUNK_BYTES = 1 << 17
#: counts are stored as uint16
MAX_EPOCHS = np.iinfo(np.uint16).max


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
            raise FalseCliError(f"unknown section '{name}' in {self.path}; "
                                f"the tracked sections are {few}{more}")
        return found

    @cached_property
    def _by_name(self) -> dict[str, TrackedSection]:
        return {s.name: s for s in self.sections}

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
    except (OSError, ValueError) as exc:
        raise FalseCliError(f"{path}: not a readable .npy file ({exc})") from None
    if array.dtype != dtype or array.shape != shape:
        raise FalseCliError(f"{path}: expected {np.dtype(dtype).name} {list(shape)}, found "
                            f"{array.dtype.name} {list(array.shape)}")
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
                                "shape [depth, width] and offset") from None
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
    meta = read_json(meta_path)
    keys = ("classes", "ignore_index", "n_pixels", "epochs", "sections")
    if not isinstance(meta, dict) or any(k not in meta for k in keys):
        raise FalseCliError(f"{meta_path}: must be an object with keys {', '.join(keys)}")
    n_pixels, epochs = int(meta["n_pixels"]), int(meta["epochs"])
    if not 1 <= epochs <= MAX_EPOCHS:
        raise FalseCliError(f"{meta_path}: epochs is {epochs}; tracking needs 1 to "
                            f"{MAX_EPOCHS} recorded epochs")
    sections = _parse_sections(meta, meta_path)
    packed = (epochs, (n_pixels + 7) // 8)
    tracking = Tracking(
        path=folder, classes=[str(c) for c in meta["classes"]],
        ignore_index=int(meta["ignore_index"]), n_pixels=n_pixels, epochs=epochs,
        sections=sections, labels=_load_npy(folder / "labels.npy", np.uint8, (n_pixels,)),
        correct=_load_npy(folder / "correct.npy", np.uint8, packed),
        switch=_load_npy(folder / "switch.npy", np.uint8, packed),
    )
    counts = np.bincount(tracking.labels, minlength=256)
    counts[tracking.ignore_index] = 0
    bad = np.flatnonzero(counts[len(tracking.classes):])
    if bad.size:
        raise FalseCliError(f"{folder / 'labels.npy'}: label {bad[0] + len(tracking.classes)} "
                            f"is neither a class id (0-{len(tracking.classes) - 1}) nor "
                            f"ignore_index {tracking.ignore_index}")
    return tracking


class _BitCounter:
    """Per-bit event counters for packed bytes, kept as bit planes (bit j of every count).

    ``add`` is a ripple-carry addition of one packed event row: a few bitwise operations per
    byte and plane, 8 pixels at a time, with no unpacking.
    """

    def __init__(self, nbytes: int, max_count: int) -> None:
        self.planes = [np.zeros(nbytes, np.uint8) for _ in range(max(1, max_count.bit_length()))]
        self._carry = np.empty(nbytes, np.uint8)
        self._next = np.empty(nbytes, np.uint8)

    def add(self, bits: np.ndarray) -> None:
        carry, nxt = self._carry, self._next
        np.copyto(carry, bits)
        for plane in self.planes:
            np.bitwise_and(plane, carry, out=nxt)
            np.bitwise_xor(plane, carry, out=plane)
            carry, nxt = nxt, carry

    def counts(self, n: int) -> np.ndarray:
        """The first ``n`` counts, unpacked to uint16."""
        out = np.zeros(n, np.uint16)
        for j, plane in enumerate(self.planes):
            out += np.unpackbits(plane, count=n).astype(np.uint16) << np.uint16(j)
        return out


@dataclass
class EventMaps:
    """Per-pixel event counts of one run over the first ``epochs`` epochs (flat, (P,))."""

    tracking: Tracking
    epochs: int
    never_learned_mode: str
    forgetting: np.ndarray  # uint16: L_i, with never-learned pixels 0 or T
    switch: np.ndarray  # uint16: switch events at t = 1..T-1, ignored pixels included
    never_learned: np.ndarray  # bool: labelled and never correct in the window

    def stats(self) -> SectionStats:
        return section_stats(self.tracking, self.forgetting, self.switch, self.never_learned)


def event_maps(tracking: Tracking, epochs: int | None = None, never_learned: str = "zero",
               *, chunk_bytes: int = CHUNK_BYTES) -> EventMaps:
    """Forgetting counts L_i (eq. 3), switch counts and never-learned pixels over T epochs.

    ``L_i = sum_{t=0}^{T-2} 1[acc^t = 1 and acc^{t+1} = 0]``: learning for the first time is
    not an event. Ignored pixels have no forgetting and are never "never learned", but do
    switch. ``never_learned="max"`` gives never-learned pixels L = T instead of 0.
    """
    if never_learned not in NEVER_LEARNED_MODES:
        raise FalseCliError(f"heatmap.never_learned is {never_learned!r}; it must be zero or max")
    T = tracking.window(epochs)
    P = tracking.n_pixels
    forgetting = np.empty(P, np.uint16)
    switch = np.empty(P, np.uint16)
    ever = np.empty(P, bool)
    for b0 in range(0, tracking.correct.shape[1], chunk_bytes):
        b1 = min(b0 + chunk_bytes, tracking.correct.shape[1])
        p0, p1 = 8 * b0, min(8 * b1, P)
        forgot, switched = _BitCounter(b1 - b0, T - 1), _BitCounter(b1 - b0, T - 1)
        seen = np.zeros(b1 - b0, np.uint8)
        event = np.empty(b1 - b0, np.uint8)
        prev = np.asarray(tracking.correct[0, b0:b1])
        seen |= prev
        for t in range(1, T):
            cur = np.asarray(tracking.correct[t, b0:b1])
            np.bitwise_and(prev, np.invert(cur, out=event), out=event)
            forgot.add(event)
            switched.add(tracking.switch[t, b0:b1])
            seen |= cur
            prev = cur
        forgetting[p0:p1] = forgot.counts(p1 - p0)
        switch[p0:p1] = switched.counts(p1 - p0)
        ever[p0:p1] = np.unpackbits(seen, count=p1 - p0).view(bool)
    labelled = tracking.labelled
    forgetting[~labelled] = 0
    never = labelled & ~ever
    if never_learned == "max":
        forgetting[never] = T
    return EventMaps(tracking, T, never_learned, forgetting, switch, never)


@dataclass
class SectionStats:
    """Per-section and per-section-per-class reductions of event maps (rows: sections)."""

    sections: list[TrackedSection]
    classes: list[str]
    pixels: np.ndarray  # (S,) labelled pixels
    events: np.ndarray  # (S,) forgetting events
    switch_events: np.ndarray  # (S,) switch events, ignored pixels included
    never_learned: np.ndarray  # (S,) never-learned pixels
    class_pixels: np.ndarray  # (S, C)
    class_events: np.ndarray  # (S, C) forgetting events of each class's pixels
    class_switch_events: np.ndarray  # (S, C)

    def density(self, by: str = "forgetting") -> np.ndarray:
        """(S, C) events per class pixel (SPEC §6); NaN where a section lacks the class."""
        events = self.class_events if by == "forgetting" else self.class_switch_events
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.class_pixels > 0, events / np.maximum(self.class_pixels, 1),
                            np.nan)


def section_stats(tracking: Tracking, forgetting: np.ndarray, switch: np.ndarray,
                  never_learned: np.ndarray) -> SectionStats:
    """Sum the per-pixel maps per section and per (section, class)."""
    C = len(tracking.classes)
    S = len(tracking.sections)
    shape = (S, C)
    class_pixels, class_events, class_switch = (np.zeros(shape, np.int64) for _ in range(3))
    events, switch_events, never = (np.zeros(S, np.int64) for _ in range(3))
    for k, s in enumerate(tracking.sections):
        labels = np.asarray(tracking.labels[s.pixels])
        class_pixels[k] = np.bincount(labels, minlength=256)[:C]
        class_events[k] = np.bincount(labels, forgetting[s.pixels], minlength=256)[:C]
        class_switch[k] = np.bincount(labels, switch[s.pixels], minlength=256)[:C]
        events[k] = forgetting[s.pixels].sum(dtype=np.int64)
        switch_events[k] = switch[s.pixels].sum(dtype=np.int64)
        never[k] = np.count_nonzero(never_learned[s.pixels])
    return SectionStats(tracking.sections, tracking.classes, class_pixels.sum(axis=1), events,
                        switch_events, never, class_pixels, class_events, class_switch)

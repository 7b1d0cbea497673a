"""Forgetting and switch events from a run's recorded history (SPEC §6, paper eq. 1-3).

The history (read by :func:`falsecli.method.history.load_tracking`) is stored bit-packed,
one row per epoch, so an F3-scale run (~29 M pixels x 60 epochs) is ~200 MB per file.
Events are counted without unpacking the history: per chunk of packed columns, every
epoch's event bits are added into bit-plane counters (a ripple-carry adder on packed bytes),
and only the final counts are unpacked. Time and memory therefore grow with the number of
pixels, not with pixels x epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from falsecli.core.errors import FalseCliError
from falsecli.method.history import TrackedSection, Tracking

NEVER_LEARNED_MODES = ("zero", "max")
#: packed bytes (8 pixels each) processed at once: keeps the working set in cache
CHUNK_BYTES = 1 << 17


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

"""Measuring the style of a class region of a seismic section, and how far a transfer moved it.

A transfer claims that the target's class takes the *style* of the same class in a source
section. This module makes "style" a number. The descriptor of a class region has three
components, each a property a seismic interpreter reads as the look of a unit:

- ``quantiles``: the amplitude distribution, its quantiles at :data:`PROBABILITIES`;
- ``spectrum``: the amplitude spectrum along depth, from each trace's runs of class samples
  (runs longer than :data:`NFFT` cut into chunks), zero-padded to :data:`NFFT`, summed over
  the runs and normalised to sum 1 (its shape, not its level: the level is in ``quantiles``);
- ``coherence``: the lateral coherence of neighbouring traces, the correlation of the pairs
  of class pixels :data:`LAGS` traces apart at the same depth (0 without two such pairs).

The distance of two descriptors is the mean of three component distances, each scale-free
and within [0, 1] so that none dominates: the mean absolute quantile difference over the sum
of the two mean absolute quantiles (a normalised Wasserstein-1 distance), half the L1
distance of the spectra (total variation), and half the mean absolute coherence difference.

Per sample, ``style_moved = 1 − d(sample, source) / d(target, source)`` in the class region:
1 when the class has the source's style, 0 when it kept the target's, below 0 when it moved
away from the source (None when the target already has the source's style).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the amplitude distribution's quantiles
PROBABILITIES = np.linspace(0.05, 0.95, 19)
#: FFT length of the depth spectrum: thin classes (scruff: 2-6 samples a trace) are zero-padded
NFFT = 32
#: lateral lags (traces) of the coherence
LAGS = (1, 2)


@dataclass(frozen=True)
class Descriptor:
    """The style of one class region (see the module docstring)."""

    quantiles: np.ndarray
    spectrum: np.ndarray
    coherence: np.ndarray


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vertical runs of ``mask`` (depth, width), cut into chunks of at most :data:`NFFT`
    samples: (trace, first sample, length) per chunk, ordered by trace then depth."""
    edges = np.diff(mask.astype(np.int8), axis=0, prepend=0, append=0).T  # (width, depth + 1)
    trace, start = np.nonzero(edges == 1)
    _, end = np.nonzero(edges == -1)
    length = end - start
    chunks = -(-length // NFFT)
    index = np.repeat(np.arange(len(length)), chunks)
    offset = (np.arange(len(index)) - np.repeat(np.cumsum(chunks) - chunks, chunks)) * NFFT
    return (trace[index], start[index] + offset,
            np.minimum(NFFT, length[index] - offset))


def segments(image: np.ndarray, mask: np.ndarray
             ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The class runs of ``image`` as rows of :data:`NFFT` samples, zero beyond each run's
    length: (segments, the pixel of each entry as (depth, trace) index arrays, valid where
    the run is), so that ``image[depth[valid], trace[valid]] = new[valid]`` writes changed
    segments back."""
    trace, start, length = runs(mask)
    steps = np.arange(NFFT)
    valid = steps < length[:, None]
    pixels = (np.where(valid, start[:, None] + steps, 0),
              np.broadcast_to(trace[:, None], valid.shape))
    return np.where(valid, image[pixels], 0.0), pixels, valid


def depth_spectrum(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The amplitude spectrum (:data:`NFFT` // 2 + 1 bins) of the class runs along depth,
    summed over the runs (not normalised)."""
    return np.abs(np.fft.rfft(segments(image, mask)[0], axis=1)).sum(axis=0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def coherence(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The lateral coherence at each of :data:`LAGS`: the correlation of the pairs of class
    pixels that many traces apart at the same depth."""
    return np.array([_correlation(image[:, :-lag][both], image[:, lag:][both])
                     for lag in LAGS for both in [mask[:, :-lag] & mask[:, lag:]]])


def describe(image: np.ndarray, mask: np.ndarray) -> Descriptor | None:
    """The style descriptor of the pixels of ``image`` (depth, width) where ``mask`` is set;
    None for an empty mask (a region without pixels has no style)."""
    if not mask.any():
        return None
    image = np.asarray(image, dtype=np.float64)
    spectrum = depth_spectrum(image, mask)
    return Descriptor(np.quantile(image[mask], PROBABILITIES),
                      spectrum / max(spectrum.sum(), 1e-300), coherence(image, mask))


def components(a: Descriptor, b: Descriptor) -> dict[str, float]:
    """The three component distances, each within [0, 1]."""
    scale = np.abs(a.quantiles).mean() + np.abs(b.quantiles).mean()
    return {"amplitude": float(np.abs(a.quantiles - b.quantiles).mean() / scale)
            if scale > 0 else 0.0,
            "spectrum": float(0.5 * np.abs(a.spectrum - b.spectrum).sum()),
            "coherence": float(0.5 * np.abs(a.coherence - b.coherence).mean())}


def distance(a: Descriptor, b: Descriptor) -> float:
    """The style distance: the mean of the component distances (0: the same style)."""
    return float(np.mean(list(components(a, b).values())))


@dataclass(frozen=True)
class Score:
    """How far one sample's class moved from its target's style toward its source's."""

    moved: float | None  # 1 − to_source / target_to_source; None when that is 0
    to_source: float  # d(sample, source); NaN when either region is empty
    target_to_source: float  # d(target, source); NaN when either region is empty


def score(sample: np.ndarray, target: np.ndarray, mask: np.ndarray, source: Descriptor | None
          ) -> Score:
    """``style_moved`` of ``sample`` generated for ``target``, both measured in ``mask``
    (the target's class region, which the sample keeps) against the source's descriptor."""
    if source is None or not mask.any():
        return Score(None, float("nan"), float("nan"))
    to_source = distance(describe(sample, mask), source)
    before = distance(describe(target, mask), source)
    return Score(1.0 - to_source / before if before > 0 else None, to_source, before)


def summary(moved: Sequence[float | None], sources: Sequence[str]) -> dict[str, Any]:
    """``style_moved`` over samples: mean, median and the mean per source (samples whose
    target had the source's style already left out; None when none is left)."""
    values = np.array([np.nan if m is None else m for m in moved], dtype=np.float64)
    keep = ~np.isnan(values)

    def mean(sel: np.ndarray) -> float | None:
        return float(values[sel & keep].mean()) if (sel & keep).any() else None

    names = np.array(sources)
    return {"style_moved": mean(keep),
            "style_moved_median": float(np.median(values[keep])) if keep.any() else None,
            "style_moved_per_source": {s: mean(names == s) for s in dict.fromkeys(sources)}}

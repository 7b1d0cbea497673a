"""The generator-free class-local transfer (``transfer.method: statistics``).

The source's class region lends the target's class region the three properties that
:mod:`falsecli.method.stylemeasure` calls its style -- the depth spectrum, the lateral
coherence and the amplitude distribution -- by operations that keep the target's reflectors
where they are. Each round (:data:`ROUNDS`) takes three steps, each a no-op when its
property already matches:

1. depth spectrum: a zero-phase gain along depth, the ratio of the source's to the current
   normalised class-run spectrum, measured as the descriptor measures it (the runs
   zero-padded to :data:`~stylemeasure.NFFT`), applied to every class run and cut back to the
   run, re-estimated :data:`SPECTRUM_STEPS` times (scruff's runs are 2-6 samples, so one
   filter cut back to the run falls short of its gain);
2. lateral coherence: each class pixel moved toward (raises the coherence) or away from
   (lowers it) the mean of its class neighbours 1, then 2 traces away, the step solved by a
   1-D search so that the coherence at :data:`~stylemeasure.LAGS` comes closest to the
   source's;
3. amplitude distribution: the class pixels take the source's class-amplitude quantiles at
   their own ranks.

Only the class pixels change. The change is then feathered outward, not blended with a
dilated mask as ``transfer.composite`` blends the generator's image: a pixel within
``composite_feather`` pixels of the class takes its nearest class pixel's change, weighted
linearly from 1 at the class to 0 at ``composite_feather``; ``composite_dilate`` is unused. A
generator paints the whole section and its class edges are uncertain, so its blend needs
margin; this method changes exactly the class, and a dilated blend would only carry its
global amplitude mapping into the surroundings (the outside change it was measured for).

The identity control is the target matched to itself, which returns the target bit for bit.
It costs a few FFTs per sample and needs no generator: the baseline any generator has to beat,
and a repair a CPU user can afford.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from falsecli.core import console
from falsecli.data.dataset import Dataset, Section
from falsecli.method.style import Composite, Samples, fig3_row, pick_targets
from falsecli.method.stylemeasure import LAGS, NFFT, coherence, describe, segments

#: rounds of the three steps (each step disturbs the others' properties a little)
ROUNDS = 3
#: re-estimations of the depth-spectrum gain per round
SPECTRUM_STEPS = 10
#: the range of the coherence step: -2 (away from the neighbours) to 1 (onto their mean)
COHERENCE_STEP = (-2.0, 1.0)


@dataclass(frozen=True)
class ClassStyle:
    """What the transfer takes from a class region: its sorted amplitudes, the shape of its
    depth spectrum (sum 1) and its lateral coherence, as :func:`stylemeasure.describe`
    measures them."""

    amplitudes: np.ndarray
    spectrum: np.ndarray
    coherence: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray) -> ClassStyle:
        image = np.asarray(image, np.float64)
        measured = describe(image, mask)
        return cls(np.sort(image[mask]), measured.spectrum, measured.coherence)


def match_spectrum(image: np.ndarray, mask: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
    """``image`` with its class runs (:func:`stylemeasure.segments`) filtered along depth
    toward the normalised ``spectrum``: a real (zero-phase) gain at the :data:`NFFT`-point
    frequencies, each time the ratio of ``spectrum`` to the runs' current one, cut back to
    the runs; the pixels outside the class are kept."""
    values, (depth, trace), valid = segments(image, mask)
    floor = 1e-3 / len(spectrum)  # no gain from a bin that is empty in the image
    for _ in range(SPECTRUM_STEPS):
        transform = np.fft.rfft(values, axis=1)
        now = np.abs(transform).sum(axis=0)
        gain = (spectrum + floor) / (now / max(now.sum(), 1e-300) + floor)
        # added as a change, which is exactly 0 where the spectra already agree
        change = np.fft.irfft(transform * (gain - 1), n=NFFT, axis=1)
        values = np.where(valid, values + change, 0.0)
    out = image.copy()
    out[depth[valid], trace[valid]] = values[valid]
    return out


def toward_neighbours(image: np.ndarray, mask: np.ndarray, lag: int) -> np.ndarray:
    """Per class pixel, the mean of its class neighbours ``lag`` traces away minus the
    pixel (0 outside the class and where there is no such neighbour)."""
    values = np.where(mask, image, 0.0)
    total, count = np.zeros_like(values), np.zeros_like(values)
    for here, there in ((np.s_[:, lag:], np.s_[:, :-lag]), (np.s_[:, :-lag], np.s_[:, lag:])):
        total[here] += values[there]
        count[here] += mask[there]
    return np.where(mask & (count > 0), total / np.maximum(count, 1) - image, 0.0)


def match_coherence(image: np.ndarray, mask: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``image`` with its class pixels moved toward or away from their class neighbours at
    each of :data:`LAGS` (:func:`toward_neighbours`), each step the one of
    :data:`COHERENCE_STEP` that brings the coherence closest to ``target`` (kept only when
    it does better than no step)."""
    for lag in LAGS:
        direction = toward_neighbours(image, mask, lag)

        def error(step: float) -> float:
            return float(np.abs(coherence(image + step * direction, mask) - target).mean())

        best = optimize.minimize_scalar(error, bounds=COHERENCE_STEP, method="bounded",
                                        options={"xatol": 1e-3})
        if best.fun < error(0.0):
            image = image + best.x * direction
    return image


def quantile_map(values: np.ndarray, own: np.ndarray, to: np.ndarray) -> np.ndarray:
    """``values`` mapped so that the sorted ``own`` take the quantiles of the sorted ``to``
    at their ranks ((i + ½) / n, the Hazen quantiles); linear beyond ``own``'s range with the
    overall slope, so that mapping a region onto itself is the identity everywhere (bit for
    bit: with as many ``to`` as ``own`` the quantiles are ``to`` itself)."""
    ranks = (np.arange(len(own)) + 0.5) * (len(to) / len(own)) - 0.5
    fp = np.interp(ranks, np.arange(len(to)), to)
    span = own[-1] - own[0]
    slope = (fp[-1] - fp[0]) / span if span > 0 else 1.0
    out = np.interp(values, own, fp)
    out = np.where(values < own[0], fp[0] + (values - own[0]) * slope, out)
    return np.where(values > own[-1], fp[-1] + (values - own[-1]) * slope, out)


def feathered(image: np.ndarray, changed: np.ndarray, mask: np.ndarray, feather: int
              ) -> np.ndarray:
    """``image`` plus the change of ``changed`` (which differs from it only in ``mask``),
    carried from each class pixel to the pixels within ``feather`` pixels of the class by
    the nearest class pixel, weighted 1 at the class falling linearly to 0 at ``feather``."""
    _, nearest = ndimage.distance_transform_edt(~mask, return_indices=True)
    change = (changed - image)[tuple(nearest)]
    return image + Composite(0, feather).weights(mask) * change


def match(image: np.ndarray, mask: np.ndarray, source: ClassStyle, feather: int) -> np.ndarray:
    """``image``'s class region (``mask``) given ``source``'s depth spectrum, lateral
    coherence and amplitude distribution, feathered ``feather`` pixels into ``image`` (see the
    module docstring)."""
    image = np.asarray(image, np.float64)
    if not mask.any():
        return image.astype(np.float32)
    out = image
    for _ in range(ROUNDS):
        out = match_spectrum(out, mask, source.spectrum)
        out = match_coherence(out, mask, source.coherence)
        out = np.where(mask, quantile_map(out, np.sort(out[mask]), source.amplitudes), out)
    return feathered(image, out, mask, feather).astype(np.float32)


def generate_samples(ds: Dataset, k: int, sources: Sequence[Section],
                     targets: Sequence[Section], per_source: int, seed: int, feather: int
                     ) -> tuple[Samples, Samples, list[Section]]:
    """``per_source`` transfers per source into random targets, drawn as the generator's
    (:func:`style.generate_samples`: the same seed picks the same targets), each with its
    identity sample (the target matched to itself, also the change's reference). Returns
    the transfers, the identity samples (same order) and each source's first target."""
    rng = np.random.default_rng([seed, 1])
    out, identity, firsts = Samples(), Samples(), []
    with console.progress() as bar:
        task = bar.add_task("transfer: matching", total=len(sources) * per_source, info="")
        for src in sources:
            src_img, src_mask = ds.image(src), ds.label(src) == k
            style, measured = ClassStyle.of(src_img, src_mask), describe(src_img, src_mask)
            chosen = [targets[int(i)] for i in pick_targets(rng, len(targets), per_source)]
            firsts.append(chosen[0])
            for tgt in chosen:
                image, labels = ds.image(tgt), ds.label(tgt)
                mask = labels == k
                itself = match(image, mask, ClassStyle.of(image, mask), feather)
                args = (labels, src.name, tgt.name, image, itself, mask, measured)
                out.add(match(image, mask, style, feather), *args)
                identity.add(itself, *args)
                bar.update(task, advance=1, info=src.name)
    return out, identity, firsts


def figure_rows(ds: Dataset, k: int, sources: Sequence[Section],
                first_targets: Sequence[Section], feather: int) -> list[dict[str, Any]]:
    """Fig. 3 rows: each source's first target matched to that source and to the next one
    (to itself when there is one source only)."""
    styles = [ClassStyle.of(ds.image(s), ds.label(s) == k) for s in sources]
    rows = []
    for si, tgt in enumerate(first_targets):
        image, mask = ds.image(tgt), ds.label(tgt) == k
        other = styles[(si + 1) % len(sources)] if len(sources) > 1 else ClassStyle.of(image,
                                                                                       mask)
        rows.append(fig3_row(ds, sources, si, tgt, match(image, mask, styles[si], feather),
                             match(image, mask, other, feather)))
    return rows

"""The generator-free class-local transfer (``transfer.method: statistics``).

The source's class region lends the target's class region its amplitude spectrum along depth
and its amplitude distribution, the two properties of :mod:`falsecli.method.stylemeasure`
that a trace-wise operation can set while keeping the target's reflectors where they are:

1. a zero-phase filter along depth, the ratio of the source's to the target's normalised
   class-run spectrum (:func:`stylemeasure.depth_spectrum`), applied to every trace, so the
   phase, and with it the target's structure, is kept;
2. quantile mapping: the filtered class pixels take the source's class-amplitude quantiles
   at their own ranks (linear beyond the class's range, for the blend band);
3. the result blended into the target with the feathered mask of ``transfer.composite``
   (``composite_dilate``, ``composite_feather``), so the target is kept beyond it.

The identity control is the target matched to itself, which returns the target (to rounding).
It costs a few FFTs per sample and needs no generator: the baseline any generator has to beat,
and a repair a CPU user can afford.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from falsecli.core import console
from falsecli.data.dataset import Dataset, Section
from falsecli.method.style import Composite, Samples, fig3_row, pick_targets
from falsecli.method.stylemeasure import NFFT, depth_spectrum, describe, segments


@dataclass(frozen=True)
class ClassStyle:
    """What the transfer takes from a class region: its sorted amplitudes and the shape of
    its depth spectrum (sum 1)."""

    amplitudes: np.ndarray
    spectrum: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray) -> ClassStyle:
        spectrum = depth_spectrum(np.asarray(image, np.float64), mask)
        return cls(np.sort(image[mask].astype(np.float64)), spectrum / spectrum.sum())


def run_filter(image: np.ndarray, mask: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``image`` with each class run (:func:`stylemeasure.segments`) filtered along depth by
    the real (zero-phase) ``gain`` at the :data:`NFFT`-point frequencies, cut back to the
    run's length; the pixels outside the class are kept."""
    values, (depth, trace), valid = segments(image, mask)
    filtered = np.fft.irfft(np.fft.rfft(values, axis=1) * gain, n=NFFT, axis=1)
    out = image.astype(np.float64, copy=True)
    out[depth[valid], trace[valid]] = filtered[valid]
    return out


def quantile_map(values: np.ndarray, own: np.ndarray, to: np.ndarray) -> np.ndarray:
    """``values`` mapped so that the sorted ``own`` take the quantiles of the sorted ``to``
    at their ranks ((i + ½) / n); linear beyond ``own``'s range with the overall slope, so
    that mapping a region onto itself is the identity everywhere."""
    fp = np.quantile(to, (np.arange(len(own)) + 0.5) / len(own), method="hazen")
    span = own[-1] - own[0]
    slope = (fp[-1] - fp[0]) / span if span > 0 else 1.0
    out = np.interp(values, own, fp)
    out = np.where(values < own[0], fp[0] + (values - own[0]) * slope, out)
    return np.where(values > own[-1], fp[-1] + (values - own[-1]) * slope, out)


def match(image: np.ndarray, mask: np.ndarray, source: ClassStyle, blend: Composite
          ) -> np.ndarray:
    """``image``'s class region (``mask``) given ``source``'s depth spectrum and amplitude
    distribution, blended into ``image`` by ``blend`` (see the module docstring)."""
    image = np.asarray(image, np.float64)
    floor = 1e-3 / len(source.spectrum)  # no gain from a bin that is empty in the image
    gain = (source.spectrum + floor) / (ClassStyle.of(image, mask).spectrum + floor)
    filtered = run_filter(image, mask, gain)
    mapped = quantile_map(filtered, np.sort(filtered[mask]), source.amplitudes)
    return blend(mapped[None], image[None], mask[None])[0].astype(np.float32)


def generate_samples(ds: Dataset, k: int, sources: Sequence[Section],
                     targets: Sequence[Section], per_source: int, seed: int, blend: Composite
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
                itself = match(image, mask, ClassStyle.of(image, mask), blend)
                args = (labels, src.name, tgt.name, image, itself, mask, measured)
                out.add(match(image, mask, style, blend), *args)
                identity.add(itself, *args)
                bar.update(task, advance=1, info=src.name)
    return out, identity, firsts


def figure_rows(ds: Dataset, k: int, sources: Sequence[Section],
                first_targets: Sequence[Section], blend: Composite) -> list[dict[str, Any]]:
    """Fig. 3 rows: each source's first target matched to that source and to the next one
    (to itself when there is one source only)."""
    styles = [ClassStyle.of(ds.image(s), ds.label(s) == k) for s in sources]
    rows = []
    for si, tgt in enumerate(first_targets):
        image, mask = ds.image(tgt), ds.label(tgt) == k
        other = styles[(si + 1) % len(sources)] if len(sources) > 1 else ClassStyle.of(image,
                                                                                       mask)
        rows.append(fig3_row(ds, sources, si, tgt, match(image, mask, styles[si], blend),
                             match(image, mask, other, blend)))
    return rows

"""Data maps of a training run (Swayamdipta et al., 2020) and its likely label issues.

The trainer (:mod:`falsecli.method.datamaptrack`) keeps, per tracked pixel, running
accumulators of the softmax probability of the pixel's label and of its top wrong class, and
a late-epoch window from epoch ``train.late_from`` on; it writes them to
``tracking/datamap.npz``. This module owns that file (name, reader) and everything computed
from it: confidence and variability, the cartography zones, the label-issue score and mask,
and the connected issue regions. Torch-free, so the heatmap stage and the report read it
without importing torch.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from falsecli.core.errors import FalseCliError
from falsecli.method.history import REDO, TRACKING, TrackedSection, Tracking

#: the accumulators of a finished run, inside its ``tracking/`` folder
DATAMAP = "datamap.npz"
#: per-pixel arrays of DATAMAP and their dtypes
FIELDS = {"label_mean": np.float32, "label_var": np.float32, "wrong_mean": np.float32,
          "wrong_var": np.float32, "late_margin": np.float32, "late_class": np.uint8}
#: ``late_class`` of a pixel whose prediction was not one class through the late window
UNSTABLE = 255
#: cartography zones (docs/definitions.md): variability at or above AMBIGUOUS_STD is
#: ambiguous; below it, confidence at or above EASY_CONFIDENCE is easy, else hard to learn
AMBIGUOUS_STD = 0.2
EASY_CONFIDENCE = 0.5
ZONES = ("easy", "ambiguous", "hard")


@dataclass
class DataMap:
    """The accumulators of one run, flat (P,) in the tracked pixel order.

    ``epochs``: epochs accumulated; ``late_from``: the first epoch of the late window;
    ``late_epochs``: epochs in it (0 when the run stopped before ``late_from``).
    """

    epochs: int
    late_from: int
    late_epochs: int
    label_mean: np.ndarray  # mean over epochs of p(given label): the confidence
    label_var: np.ndarray  # population variance of the same
    wrong_mean: np.ndarray  # mean of the top wrong class's probability
    wrong_var: np.ndarray
    late_margin: np.ndarray  # min over late epochs of p(top wrong) - p(given label)
    late_class: np.ndarray  # the late window's one predicted class, or UNSTABLE

    @property
    def confidence(self) -> np.ndarray:
        return self.label_mean

    @property
    def variability(self) -> np.ndarray:
        """Standard deviation over epochs of p(given label) (Swayamdipta's variability)."""
        return np.sqrt(np.maximum(self.label_var, 0))


def has_datamap(run: Path) -> bool:
    """Whether the run kept data-map accumulators (runs trained before them did not)."""
    return (Path(run) / TRACKING / DATAMAP).exists()


def load_datamap(run: Path, tracking: Tracking) -> DataMap:
    """Read ``<run>/tracking/datamap.npz``, checked against the run's ``tracking``."""
    path = Path(run) / TRACKING / DATAMAP
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = dict(npz.items())
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing — the run predates data maps; {REDO}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FalseCliError(f"{path}: unreadable ({exc or 'empty'}) — {REDO}") from None
    for key, dtype in FIELDS.items():
        a = arrays.get(key)
        if a is None or a.dtype != dtype or a.shape != (tracking.n_pixels,):
            raise FalseCliError(f"{path}: {key} must be {np.dtype(dtype).name} "
                                f"[{tracking.n_pixels}] — {REDO}")
    counts = {k: int(arrays[k]) for k in ("epochs", "late_from", "late_epochs") if k in arrays}
    if len(counts) != 3 or counts["epochs"] != tracking.epochs:
        raise FalseCliError(f"{path}: epochs, late_from and late_epochs missing or not the "
                            f"{tracking.epochs} epochs of the history — {REDO}")
    return DataMap(**counts, **{k: arrays[k] for k in FIELDS})


def zones(confidence: np.ndarray, variability: np.ndarray) -> np.ndarray:
    """uint8 zone index into :data:`ZONES` of every pixel (see the thresholds above)."""
    return np.where(variability >= AMBIGUOUS_STD, 1,
                    np.where(confidence >= EASY_CONFIDENCE, 0, 2)).astype(np.uint8)


def issue_score(dm: DataMap, labelled: np.ndarray) -> np.ndarray:
    """float32 (P,) in [0, 1]: how far, in EVERY late epoch, the network preferred one other
    class over the given label — ``min_t (p_wrong - p_label)`` over the late window, clipped
    at 0; 0 where the late prediction changed class, the pixel is unlabelled or the window is
    empty."""
    if dm.late_epochs == 0:
        return np.zeros(labelled.shape, np.float32)
    stable = labelled & (dm.late_class != UNSTABLE)
    return np.where(stable, np.clip(dm.late_margin, 0, 1), 0).astype(np.float32)


@dataclass(frozen=True)
class Region:
    """One connected region of likely label issues in one section."""

    section: TrackedSection
    rows: tuple[int, int]  # first and last depth sample
    cols: tuple[int, int]  # first and last trace along the section
    given: int
    predicted: int
    pixels: int
    score: float  # mean issue score of its pixels
    where: tuple[np.ndarray, np.ndarray] = field(repr=False, compare=False)  # rows, cols

    @property
    def weight(self) -> float:
        """What regions are ranked by: size times mean score (the summed score)."""
        return self.pixels * self.score


def regions(section: TrackedSection, score: np.ndarray, mask: np.ndarray,
            labels: np.ndarray, predicted: np.ndarray) -> list[Region]:
    """Connected regions (4-connectivity) of ``mask`` in one section's images, split by
    (given class, predicted class) so that each region is one claimed relabelling."""
    out = []
    pairs = np.unique(np.stack([labels[mask], predicted[mask]]), axis=1)
    for given, pred in pairs.T:
        comp, n = ndimage.label(mask & (labels == given) & (predicted == pred))
        for k, box in enumerate(ndimage.find_objects(comp), start=1):
            inside = comp[box] == k
            rows, cols = np.nonzero(inside)
            out.append(Region(section, (box[0].start, box[0].stop - 1),
                              (box[1].start, box[1].stop - 1), int(given), int(pred),
                              int(inside.sum()), float(score[box][inside].mean()),
                              (rows + box[0].start, cols + box[1].start)))
    return out


def rank_regions(found: list[Region]) -> list[Region]:
    """Largest summed score first; ties by section and position, so the order is stable."""
    return sorted(found, key=lambda r: (-r.weight, r.section.offset, r.rows, r.cols))


def section_regions(tracking: Tracking, dm: DataMap, score: np.ndarray, mask: np.ndarray
                    ) -> list[Region]:
    """The connected issue regions of every tracked section, ranked (:func:`rank_regions`)."""
    found: list[Region] = []
    for s in tracking.sections:
        if mask[s.pixels].any():
            found += regions(s, score[s.pixels].reshape(s.shape), mask[s.pixels].reshape(s.shape),
                             np.asarray(tracking.labels[s.pixels]).reshape(s.shape),
                             dm.late_class[s.pixels].reshape(s.shape))
    return rank_regions(found)


#: the columns of the per-class summary (:func:`class_summary`)
CLASS_COLUMNS = ("class", "pixels", "confidence", "variability", "easy", "ambiguous", "hard",
                 "issue_pixels")


def class_summary(tracking: Tracking, dm: DataMap, mask: np.ndarray) -> list[dict[str, object]]:
    """Per class of the labelled tracked pixels: their count, mean confidence and
    variability, the share in each zone and the likely label issues among them (means are
    None for a class with no tracked pixel)."""
    C = len(tracking.classes)
    labelled = tracking.labelled
    labels = np.asarray(tracking.labels)[labelled]
    zone = zones(dm.confidence, dm.variability)[labelled]

    def per_class(weights: np.ndarray) -> np.ndarray:
        return np.bincount(labels, weights.astype(np.float64), minlength=C)[:C]

    n = np.bincount(labels, minlength=C)[:C]
    sums = {"confidence": per_class(dm.confidence[labelled]),
            "variability": per_class(dm.variability[labelled]),
            **{z: per_class(zone == i) for i, z in enumerate(ZONES)}}
    issues = per_class(mask[labelled])
    return [{"class": name, "pixels": int(n[k]),
             **{key: float(v[k] / n[k]) if n[k] else None for key, v in sums.items()},
             "issue_pixels": int(issues[k])} for k, name in enumerate(tracking.classes)]

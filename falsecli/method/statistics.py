"""What the report computes from runs (torch-free): mean and spread over seeds, differences
between methods with 95 % intervals, high-density forgetting regions and each run's
forgetting statistics.

Spread is the sample standard deviation (ddof = 1; undefined, NaN, for one run). A method is
compared with another per seed where both have the seed (a paired t interval on the
differences, at least two common seeds), else by Welch's unpaired t interval. A
*high-density region* is an 8-connected set of at least ``min_region`` pixels of the target
class, each forgotten at least ``region_events`` times: the paper's claim is that transfer
makes such regions disappear where flip and rotate only weaken them.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.method.forgetting import event_maps
from falsecli.method.history import load_tracking

#: the summary metrics of ``eval.json`` the report tabulates
SUMMARY_METRICS = ("pixel_acc", "mean_class_acc", "miou", "fwiou")
#: pixels within this many pixels (Chebyshev) of another class are boundary pixels (C1)
BOUNDARY_PX = 2
LEVEL = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof = 1; NaN for one value) and count."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
    return float(arr.mean()), std, len(arr)


@functools.lru_cache(maxsize=1024)
def _t(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


@dataclass(frozen=True)
class Difference:
    """``a − b`` of a metric between two methods: mean, 95 % interval, how many values."""

    mean: float
    low: float
    high: float
    n: int  # pairs when paired, else the smaller group
    paired: bool

    def sign(self) -> int:
        """+1 / −1 when the interval lies entirely above / below 0, else 0 (inconclusive)."""
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0


def difference(a: Mapping[int, float], b: Mapping[int, float]) -> Difference:
    """``a − b`` for values keyed by seed: paired over the common seeds when there are at
    least two, else Welch's interval over all values; NaN bounds when there are too few
    runs for an interval."""
    common = sorted(set(a) & set(b))
    nan = float("nan")
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common], dtype=np.float64)
        half = _t(len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        return Difference(float(d.mean()), float(d.mean() - half), float(d.mean() + half),
                          len(d), True)
    x, y = np.array(list(a.values()), float), np.array(list(b.values()), float)
    diff = float(x.mean() - y.mean()) if len(x) and len(y) else nan
    if len(x) < 2 or len(y) < 2:
        return Difference(diff, nan, nan, min(len(x), len(y)), False)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = np.sqrt(vx + vy)
    if se == 0:
        return Difference(diff, diff, diff, min(len(x), len(y)), False)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = _t(df) * se
    return Difference(diff, diff - half, diff + half, min(len(x), len(y)), False)


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval of independent values (NaN bounds for fewer than two)."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return float(arr.mean()) if len(arr) else float("nan"), float("nan"), float("nan")
    half = _t(len(arr) - 1) * arr.std(ddof=1) / np.sqrt(len(arr))
    return float(arr.mean()), float(arr.mean() - half), float(arr.mean() + half)


def aggregate(per_run: dict[str, list[dict[str, dict[str, float | None]]]]
              ) -> list[dict[str, Any]]:
    """Long-format rows (method, split, metric, mean, std, n) from per-run ``{split: {metric:
    value}}`` dicts; None values (a class absent from a split) are left out of that mean."""
    rows = []
    for method, results in per_run.items():
        splits = list(dict.fromkeys(s for r in results for s in r))
        for split in splits:
            metrics = list(dict.fromkeys(m for r in results for m in r.get(split, {})))
            for metric in metrics:
                values = [r[split][metric] for r in results
                          if r.get(split, {}).get(metric) is not None]
                if values:
                    mean, std, n = mean_std(values)
                    rows.append({"method": method, "split": split, "metric": metric,
                                 "mean": mean, "std": std, "n": n})
    return rows


def flatten_eval(evaluation: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """``eval.json`` -> ``{split: {"pixel_acc": v, ..., "class_acc/<name>": v}}``."""
    out = {}
    for split, metrics in evaluation.items():
        flat = {m: metrics.get(m) for m in SUMMARY_METRICS}
        flat.update({f"class_acc/{k}": v for k, v in metrics.get("class_acc", {}).items()})
        out[split] = flat
    return out


def regions(mask: np.ndarray, min_size: int) -> list[int]:
    """Areas of the 8-connected regions of ``mask`` with at least ``min_size`` pixels."""
    from scipy import ndimage

    labelled, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    areas = np.bincount(labelled.ravel(), minlength=n + 1)[1:]
    return [int(a) for a in areas if a >= min_size]


def boundary(labels: np.ndarray, ignore_index: int, px: int = BOUNDARY_PX) -> np.ndarray:
    """bool image: labelled pixels with a pixel of another class (ignored pixels do not
    count) within ``px`` pixels (a (2 px + 1)² window)."""
    from scipy import ndimage

    lab = labels.astype(np.int32)
    known = labels != ignore_index
    size = 2 * px + 1
    high = ndimage.maximum_filter(np.where(known, lab, -1), size=size, mode="nearest")
    low = ndimage.minimum_filter(np.where(known, lab, 1 << 20), size=size, mode="nearest")
    return known & ((high != lab) | (low != lab))


def region_stats(heat: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                 target: int, classes: int, region_events: int, min_region: int,
                 sources: Collection[str] = ()) -> dict[str, float]:
    """High-density regions of the target class and of every class (``all_classes/``:
    each class's own regions, so two classes' never merge), and the target's density, over
    the tracked sections; with ``sources``, also over those that were style sources
    (``sources/``) and those that were not (``off_sources/``): transfer learned from the
    sources' look, so only the others test it fairly."""
    scopes = {"": list(heat)}
    if sources:
        scopes.update({"off_sources/": [n for n in heat if n not in sources],
                       "sources/": [n for n in heat if n in sources]})
    out = {}
    for scope, names in scopes.items():
        target_areas, all_areas, events, pixels = [], [], 0.0, 0
        for name in names:
            hot, lab = heat[name] >= region_events, labels[name]
            target_areas += regions(hot & (lab == target), min_region)
            for k in range(classes):
                all_areas += regions(hot & (lab == k), min_region)
            events += float(heat[name][lab == target].sum())
            pixels += int((lab == target).sum())
        out.update({f"{scope}high_density_regions": float(len(target_areas)),
                    f"{scope}high_density_area": float(sum(target_areas)),
                    f"{scope}all_classes/high_density_regions": float(len(all_areas)),
                    f"{scope}all_classes/high_density_area": float(sum(all_areas))})
        if scope:
            out[f"{scope}target_density"] = events / pixels if pixels else float("nan")
    return out


#: a reference region per section: its labelled region image and the reference's heat map
Reference = Mapping[str, tuple[np.ndarray, np.ndarray]]


def reference_regions(run: Path, target: int, epochs: int, region_events: int,
                      min_region: int, leave_out: Collection[str] = ()
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The target class's high-density regions of the run in ``run`` (``train/``, whose
    forgetting chose the sections) on its tracked sections but ``leave_out`` (the style
    sources), each section's as a labelled image (0: none) with that run's heat map, for
    :func:`region_fate`."""
    from scipy import ndimage

    tracking = load_tracking(run)
    heat = tracking.images(event_maps(tracking, epochs, "zero").forgetting)
    labels = tracking.images(np.asarray(tracking.labels))
    out = {}
    for name in (n for n in heat if n not in leave_out):
        found, n = ndimage.label((heat[name] >= region_events) & (labels[name] == target),
                                 structure=np.ones((3, 3), dtype=bool))
        sizes = np.bincount(found.ravel(), minlength=n + 1)
        found[sizes[found] < min_region] = 0
        out[name] = (found, heat[name])
    return out


def region_fate(heat: Mapping[str, np.ndarray], reference: Reference, region_events: int
                ) -> dict[str, float]:
    """What became of each reference region in a run: ``vanished`` (no pixel of it reaches
    ``region_events`` any more), ``weakened`` (some still do, but its mean events fell) or
    ``kept``; the share of each among the reference regions (NaN without any). The paper
    says transfer makes regions vanish where flip and rotate only weaken them."""
    fates = []
    for name, (found, ref) in reference.items():
        if name not in heat:
            continue
        for k in range(1, int(found.max()) + 1):
            pixels = found == k
            if pixels.any():
                h = heat[name][pixels]
                fates.append("vanished" if h.max() < region_events else
                             "weakened" if h.mean() < ref[pixels].mean() else "kept")
    return {f"regions_{fate}": fates.count(fate) / len(fates) if fates else float("nan")
            for fate in ("vanished", "weakened", "kept")}


def margin_relation(run: Path, forgetting: np.ndarray, labelled: np.ndarray
                    ) -> dict[str, float]:
    """How forgetting relates to the final softmax margin (:mod:`falsecli.method.margin`):
    Spearman's rank correlation of the events and the margin over the labelled tracked
    pixels (negative when the most-forgotten pixels end nearest the decision boundary), and
    the mean margin of the pixels forgotten at least once and of the others; nothing for a
    run recorded without margins."""
    from scipy import stats

    from falsecli.method.margin import read_margins

    margin = read_margins(run)
    if margin is None or margin.shape != forgetting.shape:
        return {}
    ok = labelled & np.isfinite(margin)
    m, events = margin[ok].astype(np.float64), forgetting[ok]
    varies = ok.sum() > 2 and np.ptp(events) > 0 and np.ptp(m) > 0  # else ρ is undefined
    rho = stats.spearmanr(events, m).statistic if varies else float("nan")

    def mean(mask: np.ndarray) -> float:
        return float(m[mask].mean()) if mask.any() else float("nan")

    return {"margin_spearman": float(rho), "margin_forgotten": mean(events > 0),
            "margin_not_forgotten": mean(events == 0)}


def forgetting_stats(run: Path, target: int, epochs: int, region_events: int, min_region: int,
                     keep: Sequence[str] = (), sources: Collection[str] = (),
                     reference: Reference | None = None
                     ) -> tuple[dict[str, float], dict[str, np.ma.MaskedArray]]:
    """Forgetting statistics of the run in folder ``run`` over its first ``epochs`` epochs,
    and the heat maps (ignored pixels masked) of the sections named in ``keep``.

    Besides the totals: the target class's events, density and high-density regions
    (:func:`region_stats`, also apart on the style ``sources`` and off them; with a
    ``reference``, the fate of its regions: :func:`region_fate`); each class's density
    (``density/<name>``); :func:`margin_relation`; and the events per pixel within
    :data:`BOUNDARY_PX` of a label boundary and in class interiors, in all and per class
    (``boundary_density/<name>``, ``interior_density/<name>``: claim C1); each class's
    share of pixels never classified right in the window (``never_learned/<name>``).
    """
    tracking = load_tracking(run)
    maps = event_maps(tracking, epochs, "zero")
    forgetting = maps.forgetting
    labels = np.asarray(tracking.labels)
    heat = tracking.images(forgetting)
    section_labels = tracking.images(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    for name in heat:
        edge[tracking.section(name).pixels] = boundary(section_labels[name],
                                                       tracking.ignore_index).ravel()
    labelled = labels != tracking.ignore_index
    inner = labelled & ~edge

    def per_pixel(mask: np.ndarray) -> float:
        return float(forgetting[mask].sum()) / int(mask.sum()) if mask.any() else float("nan")

    stats = {
        "forgetting_events": float(forgetting.sum()),
        "switch_events": float(maps.switch.sum()),
        "never_learned": float(maps.never_learned.sum()),
        "target_events": float(forgetting[labels == target].sum()),
        "target_density": per_pixel(labels == target),
        **region_stats(heat, section_labels, target, len(tracking.classes), region_events,
                       min_region, sources),
        "boundary_density": per_pixel(edge),
        "interior_density": per_pixel(inner),
        **{f"density/{c}": per_pixel(labels == k) for k, c in enumerate(tracking.classes)},
        # C1 within each class: across classes a thin class's own rate passes for boundary
        **{f"{where}_density/{c}": per_pixel(mask & (labels == k))
           for where, mask in (("boundary", edge), ("interior", inner))
           for k, c in enumerate(tracking.classes)},
        **{f"pixels/{c}": float((labels == k).sum()) for k, c in enumerate(tracking.classes)},
        # a pixel never right cannot be forgotten: a class the network never learns has a
        # low density for that reason alone (claim C2 says so)
        **{f"never_learned/{c}": (float(maps.never_learned[labels == k].mean())
                                  if (labels == k).any() else float("nan"))
           for k, c in enumerate(tracking.classes)},
        **(region_fate(heat, reference, region_events) if reference is not None else {}),
        **margin_relation(run, forgetting, labelled),
    }
    # ignored pixels masked: they are no forgetting, and a figure draws them grey
    ignore = tracking.ignore_index
    shown = {name: np.ma.masked_array(heat[name], mask=section_labels[name] == ignore)
             for name in keep if name in heat}
    return stats, shown

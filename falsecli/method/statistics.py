"""What the report computes from the runs: mean and spread over seeds, flattened metrics,
high-density forgetting regions and each run's forgetting statistics (torch-free).

A *high-density region* is an 8-connected set of at least ``min_region`` pixels of the target
class, each forgotten at least ``region_events`` times: the paper's claim is that transfer
makes such regions disappear where flip and rotate only weaken them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from falsecli.method.figures import mask_ignored
from falsecli.method.forgetting import event_maps
from falsecli.method.history import load_tracking

#: the summary metrics of ``eval.json`` the report tabulates
SUMMARY_METRICS = ("pixel_acc", "mean_class_acc", "miou", "fwiou")


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std()), len(values)


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
                    mean, std, n = _mean_std(values)
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


def forgetting_stats(run: Path, target: int, epochs: int, region_events: int, min_region: int
                     ) -> tuple[dict[str, float], dict[str, np.ma.MaskedArray]]:
    """Forgetting statistics of the run in folder ``run`` over its first ``epochs`` epochs,
    and its heat maps (ignored pixels masked)."""
    tracking = load_tracking(run)
    maps = event_maps(tracking, epochs, "zero")
    labels = tracking.labels
    in_class = labels == target
    class_events = int(maps.forgetting[in_class].sum())
    class_pixels = int(in_class.sum())
    heat = tracking.images(maps.forgetting)
    masks = tracking.images(in_class)
    areas = [a for name, h in heat.items()
             for a in regions((h >= region_events) & masks[name], min_region)]
    section_labels = tracking.images(np.asarray(labels))
    heat = {name: mask_ignored(h, section_labels[name], tracking.ignore_index)
            for name, h in heat.items()}
    stats = {
        "forgetting_events": float(maps.forgetting.sum()),
        "switch_events": float(maps.switch.sum()),
        "never_learned": float(maps.never_learned.sum()),
        "target_events": float(class_events),
        "target_density": class_events / class_pixels if class_pixels else float("nan"),
        "high_density_regions": float(len(areas)),
        "high_density_area": float(sum(areas)),
    }
    return stats, heat

"""Evidence for the label-issue ranking: plant label errors on the synthetic volume's tracked
sections, train, and measure how well ``heatmap``'s ranked regions find them.

    python benchmarks/label_issues.py WORKDIR [--patches 12] [--json]

The demo's volume and network (the demo profile: 48 x 48 x 80, 12 epochs, late window from
epoch 7). ``--patches`` blobs on the tracked (validation) sections are relabelled to the class
directly above or below them, the mistake an interpreter makes who picks a horizon a few
samples off. The synthetic labels are otherwise exact, so every other flagged pixel is a
network error, not a label error. Measured:

- regions: a ranked region is a hit when at least half of its pixels are planted ones;
  precision@k over the top k regions (k = the number of patches) and over all of them;
  a patch is found when a hit overlaps it (recall, at k and over all regions);
- pixels: precision and recall of the label-issue mask against the planted pixels (a
  patch also relabels the pixels where crossing tracked sections pass through it);
- the same for a plain baseline: regions of pixels the last epoch predicted wrong, ranked by
  size (what the history offered before the data maps).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from falsecli.core import config
from falsecli.data.synthetic import generate
from falsecli.method.datamaps import Region, issue_score, load_datamap, section_regions
from falsecli.method.history import PRED_LAST, TRACKING, TrackedSection, load_tracking
from falsecli.stages.heatmap import heatmap
from falsecli.stages.pipeline import DEMO
from falsecli.stages.train import train

#: half-height (depth samples) and half-width (traces) of a planted blob
BLOB = (4, 6)
HIT = 0.5


def plant(labels: np.ndarray, val_every: int, n: int, seed: int
          ) -> tuple[np.ndarray, list[tuple[str, int, int, np.ndarray]]]:
    """A copy of ``labels`` (inline x crossline x depth) with ``n`` elliptic blobs on tracked
    sections relabelled to the class above (or, at the top, below) the blob's class at its
    centre; returns it and the patches as (axis, index, new class, bool mask (depth, width))."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    patches: list[tuple[str, int, int, np.ndarray]] = []
    while len(patches) < n:
        axis = ("inline", "crossline")[int(rng.integers(2))]
        size = labels.shape[0 if axis == "inline" else 1]
        index = int(rng.choice(np.arange(0, size, val_every)))
        image = (out[index] if axis == "inline" else out[:, index]).T  # (depth, width)
        depth, width = image.shape
        r, c = int(rng.integers(BLOB[0], depth - BLOB[0])), int(rng.integers(BLOB[1],
                                                                              width - BLOB[1]))
        rows, cols = np.ogrid[:depth, :width]
        blob = ((rows - r) / BLOB[0]) ** 2 + ((cols - c) / BLOB[1]) ** 2 <= 1
        cls = int(image[r, c])
        above = image[:r, c][image[:r, c] != cls]
        below = image[r:, c][image[r:, c] != cls]
        new = int(above[-1]) if above.size else int(below[0]) if below.size else None
        blob &= image == cls
        taken = any(a == axis and i == index and (m & blob).any() for a, i, _, m in patches)
        if new is None or blob.sum() < 20 or taken:
            continue
        image[blob] = new  # a view into ``out``
        patches.append((axis, index, new, blob))
    return out, patches


def score_ranking(ranked: list[tuple[TrackedSection, tuple[np.ndarray, np.ndarray]]],
                  patches: list[tuple[str, int, int, np.ndarray]],
                  changed: dict[str, np.ndarray]) -> dict[str, Any]:
    """Region precision/recall of a ranking (best first) of regions (section, (rows, cols));
    ``changed``: per section, the pixels whose label was planted (on the section itself or
    where a crossing section's patch passes)."""
    k = len(patches)
    found: set[int] = set()
    hits, found_at_k = [], 0
    for rank, (section, (rows, cols)) in enumerate(ranked):
        hit = changed[section.name][rows, cols].mean() >= HIT
        hits.append(hit)
        if hit:
            found |= {j for j, (a, i, _, m) in enumerate(patches)
                      if a == section.axis and i == section.index and m[rows, cols].any()}
        if rank == k - 1:
            found_at_k = len(found)
    if len(ranked) < k:
        found_at_k = len(found)
    return {"regions": len(ranked), f"precision_at_{k}": _share(hits[:k]),
            "precision_all": _share(hits), f"recall_at_{k}": round(found_at_k / k, 3),
            "recall_all": round(len(found) / k, 3)}


def _share(bits: list[bool]) -> float | None:
    return round(float(np.mean(bits)), 3) if bits else None


def _baseline(tracking: Any, pred_last: np.ndarray) -> list[tuple[TrackedSection, Any]]:
    """Regions of last-epoch errors, largest first (no confidence, no stability)."""
    wrong = tracking.labelled & (pred_last != np.asarray(tracking.labels))
    out = []
    for s in tracking.sections:
        comp, _ = ndimage.label(wrong[s.pixels].reshape(s.shape))
        for k in range(1, comp.max() + 1):
            out.append((s, np.nonzero(comp == k)))
    return sorted(out, key=lambda item: -item[1][0].size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--patches", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.workdir, args.patches, args.seed), indent=None if args.json
                     else 1))


def run(work: Path, n_patches: int, seed: int, overrides: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    """Plant, train, draw the data maps and measure; ``overrides`` on top of the demo's
    profile (smaller volumes for a quick check)."""
    t0 = time.perf_counter()
    cfg = config.merge(config.load_defaults(), DEMO)
    cfg = config.merge(cfg, overrides or {})
    syn = cfg["data"]["synthetic"]
    vol = generate(syn["shape"], syn["seed"], syn["noise"])
    labels, patches = plant(vol.labels, cfg["data"]["val_every"], n_patches, seed)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.save(data / "seismic.npy", vol.seismic)
    np.save(data / "labels.npy", labels)
    cfg = config.merge(cfg, {"data": {"source": "files", "seismic": str(data / "seismic.npy"),
                                      "labels": str(data / "labels.npy"), "test": []},
                             "heatmap": {"figures": 0, "sections": _sections(patches)}})
    train(cfg, work, force=True)
    summary = heatmap(cfg, work, force=True)
    tracking = load_tracking(work / "train")
    dm = load_datamap(work / "train", tracking)
    score = issue_score(dm, tracking.labelled)
    mask = score >= cfg["heatmap"]["issue_margin"]
    regions: list[Region] = section_regions(tracking, dm, score, mask)
    original = {s.name: (vol.labels[s.index] if s.axis == "inline" else
                         vol.labels[:, s.index]).T for s in tracking.sections}
    changed = {name: image != original[name]
               for name, image in tracking.images(np.asarray(tracking.labels)).items()}
    planted = tracking.flatten(changed, work)
    pred_last = np.load(work / "train" / TRACKING / PRED_LAST)
    return {"patches": n_patches, "planted_pixels": int(planted.sum()),
            "late_window": summary["datamaps"]["late_window"],
            "ranking": score_ranking([(r.section, r.where) for r in regions], patches, changed),
            "pixels": {"flagged": int(mask.sum()),
                       "precision": _share(list(planted[mask])),
                       "recall": _share(list(mask[planted]))},
            "baseline_last_epoch_errors": score_ranking(_baseline(tracking, pred_last), patches,
                                                        changed),
            "top": [{"section": r.section.name, "pixels": r.pixels, "score": round(r.score, 3)}
                    for r in regions[:3]],
            "seconds": round(time.perf_counter() - t0, 1)}


def _sections(patches: list[tuple[str, int, int, np.ndarray]]) -> list[str]:
    """The first planted sections, drawn by heatmap (at most 3)."""
    names = [f"{a}_{i:04d}" for a, i, _, _ in patches]
    return list(dict.fromkeys(names))[:3]


if __name__ == "__main__":
    main()

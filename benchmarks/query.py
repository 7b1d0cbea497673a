"""What `falsecli query` costs on an F3-sized pool (issue 14): seconds and peak memory.

    python benchmarks/query.py [--epochs 60] [--json]

Writes, in the format the train stage writes, the tracking history of F3's 880 training
sections (320 inlines of 255 x 701, 560 crosslines of 255 x 401: 114.5 M pixels), 20 of them
labelled and 860 in the pool, over 60 epochs of random switch bits (counting costs the same
whatever the bits; the switch file is 0.86 GB), with their confidence.json. Then times, for
each strategy, what the query computes: reading and validating the history, the switch
score of every pool section, the softmax statistics, the strategy and the gap rule. The
CSV of 860 rows and the figure of the chosen sections (their seismic comes from the
training data) are not included. Peak memory is the peak RSS above the RSS before reading.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core.config import load_defaults
from falsecli.core.rules import STRATEGIES
from falsecli.core.files import write_json
from falsecli.data.dataset import Section
from falsecli.method.history import (CONFIDENCE, CORRECT, LABELS, SECTIONS_JSON, SWITCH,
                                     TRACKING, RowFile, load_tracking, write_confidence)
from falsecli.method.query import choose
from falsecli.method.tracking import offsets
from falsecli.stages.query import pool_stats

#: F3: 401 inlines x 701 crosslines x 255 samples, every 5th inline and crossline is val
F3 = (401, 701, 255)
LABELLED = 20
GOALS = {"seconds": 5.0, "mb": 1024.0}


def _mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024


def _history(run: Path, epochs: int) -> list[Section]:
    """The tracked val and pool sections of an F3 run with a random 60-epoch history."""
    n_il, n_xl, depth = F3
    train = [Section(f"{axis}_{i:04d}", "pool", "train", axis, i, (depth, width))
             for axis, count, width in (("inline", n_il, n_xl), ("crossline", n_xl, n_il))
             for i in range(count) if i % 5]
    labelled = {s.name for s in train[::len(train) // LABELLED][:LABELLED]}
    sections = [s for s in train if s.name not in labelled]
    n_pixels = sum(s.shape[0] * s.shape[1] for s in sections)
    folder = run / TRACKING
    folder.mkdir(parents=True)
    np.save(folder / LABELS, np.full(n_pixels, 255, np.uint8))
    width = (n_pixels + 7) // 8
    rng = np.random.default_rng(0)
    for name in (CORRECT, SWITCH):
        rows = RowFile(folder / name, width)
        rows.create()
        for t in range(epochs):
            rows.append(np.zeros(width, np.uint8) if name == CORRECT or t == 0
                        else rng.integers(0, 256, width, dtype=np.uint8))
    write_json(folder / SECTIONS_JSON, {
        "classes": load_defaults()["data"]["classes"], "ignore_index": 255,
        "n_pixels": n_pixels, "epochs": epochs,
        "sections": [{**s.to_json(), "offset": o} for s, o in zip(sections, offsets(sections))]})
    write_confidence(folder / CONFIDENCE, [s.name for s in sections],
                     rng.random((len(sections), 3)))
    return [s for s in train if s.name in labelled]


def run(epochs: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        labelled = [(s.axis, s.index) for s in _history(Path(tmp), epochs)]
        made = time.perf_counter() - t0
        for strategy in STRATEGIES:
            rss = _mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            t0 = time.perf_counter()
            tracking = load_tracking(Path(tmp))
            t1 = time.perf_counter()
            pool = pool_stats(Path(tmp), tracking, True)
            t2 = time.perf_counter()
            choice = choose(pool, strategy, 8, min_gap=3, labelled=labelled, seed=0)
            seconds = time.perf_counter() - t0
            phases = {"load_s": round(t1 - t0, 3), "scores_s": round(t2 - t1, 3),
                      "choose_s": round(seconds - (t2 - t0), 3)}
            extra = _mb("VmHWM") - rss
            out.append({"name": "query_f3", "strategy": strategy, "seconds": round(seconds, 3),
                        "peak_mb": round(extra, 1), **phases, "pool": len(pool),
                        "epochs": epochs,
                        "pixels": tracking.n_pixels, "chosen": len(choice.chosen),
                        "met": seconds <= GOALS["seconds"] and extra <= GOALS["mb"],
                        "history_written_s": round(made, 1)})
            del tracking, pool, choice
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    for row in run(args.epochs):
        print(json.dumps(row) if args.json else
              f"{row['name']} {row['strategy']:<17} {row['seconds']:6.2f} s "
              f"{row['peak_mb']:7.1f} MB  (load {row['load_s']} s, scores {row['scores_s']} s, "
              f"choose {row['choose_s']} s)  pool {row['pool']}, {row['pixels']:,} px, "
              f"{row['epochs']} epochs  {'met' if row['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()

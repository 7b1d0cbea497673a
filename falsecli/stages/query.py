"""``falsecli query``: which unlabelled training sections to label next.

Ranks the pool sections of a run (``query.run``; the run must have tracked ``pool``) by
``query.strategy`` (:mod:`falsecli.method.query`) and chooses ``query.budget`` of them under
the gap rule. Writes ``query/`` for ``train`` and ``<run>/query/`` for the other runs, so that
every round of ``falsecli al`` keeps the query that followed it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console, layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import read_json, write_json, write_text
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run
from falsecli.data.geometry import NUMBERS, Geometry, recorded, section_numbers
from falsecli.method.history import (CONFIDENCE, CONFIDENCE_STATS, TRACKING, Tracking,
                                     load_confidence, load_tracking)
from falsecli.method.query import Choice, PoolStats, check_strategy, choose, switch_counts

POOL_CSV = "pool.csv"
CHOSEN_JSON = "chosen.json"
CHOSEN_FIGURE = "figures/chosen.png"
#: strategies that rank by the last epoch's softmax
NEEDS_CONFIDENCE = ("entropy", "margin", "least_confidence")


def pool_stats(run: Path, tracking: Tracking, need_confidence: bool) -> PoolStats:
    """The pool sections of a run's history with their switch score (events per pixel over
    every recorded epoch) and, when the run wrote them, their softmax statistics."""
    pool = [s for s in tracking.sections if s.split == "pool"]
    if not pool:
        raise FalseCliError(f"query: {run} tracked no pool section — train it with "
                            "train.track including pool and some training sections "
                            "unlabelled (train.labelled, or labels all ignore_index)")
    names = [s.name for s in pool]
    sizes = np.array([s.size for s in pool], dtype=np.float64)
    confidence = None
    if need_confidence or (Path(run) / TRACKING / CONFIDENCE).is_file():
        confidence = load_confidence(run, names)
    return PoolStats(names, [s.axis for s in pool], np.array([s.index for s in pool]),
                     switch_counts(tracking.switch_rows(), pool) / sizes, confidence)


def query(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Choose ``query.budget`` pool sections of ``query.run``; write ``pool.csv`` (every pool
    section), ``chosen.json`` and ``figures/chosen.png``."""
    from falsecli.data.dataset import load_dataset

    q = cfg["query"]
    check_strategy(q["strategy"])
    run, workdir = q["run"], Path(workdir)
    name = layout.query_folder(run)
    source = Stage(workdir, run)
    manifest = source.require(name)
    tracking = load_tracking(source.path)
    pool = pool_stats(source.path, tracking, q["strategy"] in NEEDS_CONFIDENCE)
    ds = load_dataset(manifest["config"])
    in_pool = set(pool.names)
    labelled = [s for s in ds.sections("train") if s.name not in in_pool]
    try:
        choice = choose(pool, q["strategy"], q["budget"], min_gap=q["min_gap"],
                        labelled=[(s.axis, s.index) for s in labelled], seed=q["seed"])
    except FalseCliError as exc:
        raise FalseCliError(f"{name}: {exc} (--budget, query.budget)") from None
    chosen = [pool.names[i] for i in choice.chosen]
    with stage_run(workdir, name, cfg, upstream=[source], force=force) as out:
        write_text(out.out(POOL_CSV), _pool_csv(pool, choice, recorded(manifest)))
        record = {"run": run, "strategy": q["strategy"], "budget": q["budget"],
                  "min_gap": q["min_gap"], "seed": q["seed"], "epochs": tracking.epochs,
                  "pool": len(pool), "labelled": len(labelled),
                  "chosen": [{"section": n, "score": float(choice.scores[i]), "gap": g}
                             for n, i, g in zip(chosen, choice.chosen, choice.gaps)],
                  "details": choice.details}
        write_json(out.out(CHOSEN_JSON), record)
        _figure(out.out(CHOSEN_FIGURE), ds, tracking, choice, pool, q["strategy"], run)
        out.extra.update(run=run, strategy=q["strategy"], chosen=chosen)
    relaxed = sum(g < q["min_gap"] for g in choice.gaps)
    if relaxed:
        console.log(f"{name}: {relaxed} of {len(chosen)} sections needed a gap below "
                    f"query.min_gap={q['min_gap']} (too few admissible sections left)")
    return {"stage": name, "run": run, "strategy": q["strategy"], "chosen": chosen,
            "record": record, "outputs": [str(out.path / rel) for rel in out.outputs]}


def _pool_csv(pool: PoolStats, choice: Choice, geometries: dict[str, Geometry]) -> str:
    """pool.csv: every pool section with its survey line numbers, scores and order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["section", *NUMBERS, "axis", "index", "switch", *CONFIDENCE_STATS,
                     "score", "order", "chosen"])
    place = np.empty(len(pool), dtype=np.int64)
    place[choice.order] = np.arange(len(pool))
    taken = dict(zip(choice.chosen, range(1, len(choice.chosen) + 1)))
    for i, name in enumerate(pool.names):
        conf = ([f"{v:.6g}" for v in pool.confidence[i]] if pool.confidence is not None
                else [""] * len(CONFIDENCE_STATS))
        numbers = section_numbers(geometries, "pool", pool.axes[i], int(pool.indices[i]))
        writer.writerow([name, *numbers.values(), pool.axes[i], int(pool.indices[i]),
                         f"{pool.switch[i]:.6g}", *conf, f"{choice.scores[i]:.6g}",
                         int(place[i]) + 1, taken.get(i, "")])
    return buf.getvalue()


def _figure(path: Path, ds: Any, tracking: Tracking, choice: Choice, pool: PoolStats,
            strategy: str, run: str) -> None:
    """The chosen sections' seismic and per-pixel switch events."""
    from falsecli.present.figures import query_figure, save_figure

    by_name = {s.name: s for s in ds.sections("train")}
    seismic, switch, captions = {}, {}, {}
    for i, gap in zip(choice.chosen, choice.gaps):
        name = pool.names[i]
        section = tracking.section(name)
        first = section.offset // 8  # only the bytes that hold the section are unpacked
        packed = np.asarray(tracking.switch[:, first:(section.offset + section.size + 7) // 8])
        skip = section.offset - 8 * first
        bits = np.unpackbits(packed, axis=1)[:, skip:skip + section.size]
        switch[name] = bits.sum(0, dtype=np.uint16).reshape(section.shape)
        seismic[name] = np.asarray(ds.raw(by_name[name]), dtype=np.float32)
        captions[name] = f"score {choice.scores[i]:.3g}, gap {gap}"
    frames = {name: ds.train.geometry.frame(by_name[name].axis, by_name[name].index)
              for name in seismic}
    save_figure(query_figure(seismic, switch, captions, frames=frames,
                             title=f"{strategy}: the {len(seismic)} sections chosen from the "
                                   f"pool of {run}"), path)


def load_chosen(workdir: Path, run: str) -> list[str]:
    """The sections the query of ``run`` chose, in the order taken."""
    path = Stage(Path(workdir), layout.query_folder(run)).path / CHOSEN_JSON
    record = read_json(path, f"redo it with 'falsecli query --run {run} --force'")
    try:
        return [str(c["section"]) for c in record["chosen"]]
    except (KeyError, TypeError):
        raise FalseCliError(f"{path}: no list of chosen sections — redo it with "
                            f"'falsecli query --run {run} --force'") from None


def print_query(summary: dict[str, Any]) -> None:
    """The chosen section names, one per line (scripts: ``for s in $(falsecli query)``)."""
    for name in summary["chosen"]:
        print(name)

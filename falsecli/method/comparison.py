"""Which runs the report compares and what it measures on them (torch-free): run collection,
like-with-like selection, per-run metrics and forgetting statistics, each method's Fig. 5 maps,
the differences between methods and the inputs of the paper's claims.

Only like is compared with like: every run records a fingerprint of its data and tracked
sections (:mod:`falsecli.data.provenance`); a run whose fingerprint differs from ``train/``'s,
whose epoch count differs from the compared runs', or that repeats a (method, seed) already
counted is left out with one line saying why. Forgetting statistics are computed from each
run's tracking history over the one epoch window all compared runs share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import layout
from falsecli.core.config import Config, class_id
from falsecli.core.manifest import Stage
from falsecli.data.provenance import differences
from falsecli.method import claims as cl
from falsecli.method.runfolder import read_eval, read_metrics
from falsecli.method.statistics import (aggregate, difference, flatten_eval, forgetting_stats,
                                         reference_regions)

#: the retrain folder of each method (train/ is a baseline run too), in report order
METHODS = {"baseline": "none", "flip": "flip", "rotate": "rotate", "transfer": "transfer",
           "transfer-identity": "transfer-identity"}
#: the tracked-section statistics compared between methods besides the accuracies
COMPARED_STATS = ("forgetting_events", "target_density", "high_density_regions",
                  "high_density_area")


@dataclass
class Run:
    """One complete training run and what the report reads from it."""

    method: str
    stage: Stage
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def seed(self) -> int:
        return int(self.manifest["config"]["train"]["seed"])

    @property
    def epochs(self) -> int:
        return int(self.manifest["config"]["train"]["epochs"])

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """What the run was trained and tracked on (data, tracked sections, epochs) and how
        (:func:`signature`); None for a run from before fingerprints."""
        recorded = self.manifest.get("fingerprint")
        return None if recorded is None else {**recorded, "training": signature(self.manifest)}

    def stale(self) -> list[str]:
        """The upstream stages (e.g. ``transfer``) redone or gone since this run read them."""
        return [name for name, digest in self.manifest.get("inputs", {}).items()
                if not (up := Stage(self.stage.workdir, name)).is_complete()
                or up.digest() != digest]

    def eval(self) -> dict[str, Any]:
        return read_eval(self.stage.path)

    def curve(self) -> list[dict[str, Any]]:
        return read_metrics(self.stage.path)


#: the train keys that do not change what a run learns, or that tell methods and seeds
#: apart (the fingerprint's data, tracked sections and epochs are compared on their own)
NOT_TRAINING = ("seed", "aug", "device", "compile", "track", "labelled", "epochs",
                "eval_batch_size", "keep_every", "checkpoint_every", "late_from")


def signature(manifest: dict[str, Any]) -> dict[str, Any]:
    """How a run was trained, everything but its method and seed: the model and every
    ``train`` key that changes what it learns (learning rate, batch size, class weights,
    optimiser settings, precision, rotation range, batch limit), from the config it ran
    with — so runs recorded before this existed are compared by it too."""
    cfg = manifest["config"]
    return {"model": cfg.get("model"),
            **{k: v for k, v in cfg["train"].items() if k not in NOT_TRAINING}}


def collect_runs(workdir: Path) -> list[Run]:
    """Every complete training run: ``train/`` first, then each method's seeds in order."""
    runs: list[Run] = []
    train = Stage(workdir, layout.TRAIN)
    if (manifest := train.manifest()) is not None:
        runs.append(Run("baseline", train, manifest))
    for method, aug in METHODS.items():
        for run in layout.runs(workdir, layout.RETRAIN, aug):
            stage = Stage(workdir, run.name)
            if (manifest := stage.manifest()) is not None:
                runs.append(Run(method, stage, manifest))
    return runs


@dataclass
class Selection:
    """The runs the report compares, the ones it left out (one line each) and the epoch
    window every compared run is measured over."""

    runs: list[Run]
    left_out: list[str] = field(default_factory=list)
    window: int = 0

    def by_method(self) -> dict[str, list[Run]]:
        """The compared runs per method, in report order, methods without runs left out."""
        grouped = {m: [r for r in self.runs if r.method == m] for m in METHODS}
        return {m: rs for m, rs in grouped.items() if rs}


def select_runs(runs: list[Run]) -> Selection:
    """Like with like: the runs whose data and tracked sections match ``train/``'s (else the
    first run's), trained for the epochs most of the retraining runs have (``train/``'s when
    there are none), one run per (method, seed)."""
    out = Selection([])
    reference = next((r.fingerprint for r in runs if r.fingerprint is not None), None)
    same = []
    for r in runs:
        if r.fingerprint is None:
            out.left_out.append(f"{r.name}: it records no fingerprint of its data (made by an "
                                "older falsecli) — redo it with --force")
            continue
        diff = differences({k: v for k, v in reference.items() if k != "epochs"},
                           {k: v for k, v in r.fingerprint.items() if k != "epochs"})
        if diff:
            out.left_out.append(f"{r.name}: trained or tracked on other data, or trained "
                                f"otherwise, than {runs[0].name} ({'; '.join(diff[:2])})")
            continue
        if stale := r.stale():
            out.left_out.append(f"{r.name}: stale — {', '.join(s + '/' for s in stale)} was "
                                "redone after it trained on it; redo the run with --force")
            continue
        same.append(r)
    retrained = [r.epochs for r in same if r.name != "train"] or [r.epochs for r in same]
    if not retrained:
        return out
    counts = Counter(retrained)
    out.window = max(counts, key=lambda e: (counts[e], e))
    seen: dict[tuple[str, int], str] = {}
    for r in same:
        if r.epochs != out.window:
            out.left_out.append(f"{r.name}: {r.epochs} epochs, the compared runs "
                                f"{out.window} — accuracies and forgetting after other "
                                "training lengths are not comparable")
        elif (r.method, r.seed) in seen:
            out.left_out.append(f"{r.name}: seed {r.seed} of {r.method} is already counted "
                                f"({seen[r.method, r.seed]})")
        else:
            seen[r.method, r.seed] = r.name
            out.runs.append(r)
    return out


def target_class(workdir: Path, cfg: Config, classes: list[str]) -> int:
    """The class the workflow targeted: transfer's, else rank's (as they ran, ``--class``
    included), else ``rank.class``."""
    value = cfg["rank"]["class"]
    for name in ("rank", "transfer"):
        manifest = Stage(workdir, name).manifest()
        if manifest is not None:
            value = manifest["config"][name]["class"]
    return class_id({"data": {"classes": classes}}, value)


@dataclass
class Measured:
    """What the report measured on the compared runs."""

    rows: list[dict[str, Any]]  # table.csv
    results: dict[str, list[cl.Result]]  # per method, per run
    heat: dict[str, dict[str, np.ndarray]]  # Fig. 5: per method, mean map per shown section
    heat_runs: dict[str, list[str]]  # the runs each method's Fig. 5 maps average
    pixels: dict[str, int]  # tracked pixels per class
    chooser: int | None = None  # train/'s seed: the run whose ranking chose the sections
    sources: list[str] = field(default_factory=list)  # the style sources transfer/ used


def measure(by_method: dict[str, list[Run]], classes: list[str], target: int, window: int,
            rep: dict[str, Any], shown: list[str], sources: Sequence[str] = (),
            chooser: Run | None = None) -> Measured:
    """Every run's metrics and forgetting statistics, and each method's mean heat maps of
    the ``shown`` sections over its runs other than those with the seed of ``chooser``
    (``train/``, compared or not: its forgetting chose the sections and the style sources,
    so its maps are at their worst by selection, and every method's run with its seed shares
    its initialisation and batch order); a method with no other run gets no column. The
    fate of ``chooser``'s high-density regions off the ``sources`` is measured in every run
    (when it tracked at least the compared epochs)."""
    results: dict[str, list[cl.Result]] = {}
    evals: dict[str, list[dict[str, Any]]] = {}
    stats: dict[str, list[dict[str, Any]]] = {}
    heat: dict[str, dict[str, np.ndarray]] = {}
    heat_runs: dict[str, list[str]] = {}
    pixels: dict[str, int] = {}
    seed = None if chooser is None else chooser.seed
    reference = None if chooser is None or chooser.epochs < window else reference_regions(
        chooser.stage.path, target, window, rep["region_events"], rep["min_region"], sources)
    for method, rs in by_method.items():
        drawn = [r for r in rs if r.seed != seed]
        if drawn:
            heat_runs[method] = [r.name for r in drawn]
        sums: dict[str, np.ma.MaskedArray] = {}
        for r in rs:
            flat = flatten_eval(r.eval())
            s, h = forgetting_stats(r.stage.path, target, window, rep["region_events"],
                                    rep["min_region"], keep=shown if r in drawn else (),
                                    sources=set(sources), reference=reference)
            # the tracked pixels per class are the same in every compared run
            pixels = {c: int(s.pop(f"pixels/{c}")) for c in classes}
            evals.setdefault(method, []).append(flat)
            stats.setdefault(method, []).append({"tracked": s})
            values = {f"{sp}/{m}": v for sp, ms in flat.items() for m, v in ms.items()
                      if v is not None}
            values.update({f"tracked/{k}": v for k, v in s.items()})
            results.setdefault(method, []).append(cl.Result(r.seed, values))
            for name, m in h.items():
                sums[name] = m.astype(np.float64) if name not in sums else sums[name] + m
        if drawn:
            heat[method] = {name: m / len(drawn) for name, m in sums.items()}
    training = {m: [{"train": {"steps_per_epoch": r.manifest.get("steps_per_epoch"),
                               "train_samples": r.manifest.get("train_samples")}} for r in rs]
                for m, rs in by_method.items()}
    rows = aggregate(evals) + aggregate(stats) + aggregate(training)
    return Measured(rows, results, heat, heat_runs, pixels, seed, list(sources))


def comparisons(results: dict[str, list[cl.Result]], classes: list[str], target: int
                ) -> list[dict[str, Any]]:
    """Each method − baseline (and transfer − transfer-identity), per seed where seeds match:
    target-class accuracy, mean class accuracy and mIoU on every split, and the forgetting
    statistics."""
    if "baseline" not in results:
        return []
    splits = list(dict.fromkeys(k.split("/")[0] for r in results["baseline"] for k in r.values
                                if k.endswith("/miou")))
    metrics = [(sp, m) for sp in splits for m in (f"class_acc/{classes[target]}",
                                                   "mean_class_acc", "miou")]
    metrics += [("tracked", m) for m in COMPARED_STATS]
    pairs = [(m, "baseline") for m in results if m != "baseline"]
    if "transfer" in results and "transfer-identity" in results:
        pairs.append(("transfer", "transfer-identity"))
    rows = []
    for method, control in pairs:
        for split, metric in metrics:
            key = f"{split}/{metric}"
            a, b = cl.by_seed(results[method], key), cl.by_seed(results[control], key)
            if a and b:
                d = difference(a, b)
                rows.append({"method": method, "control": control, "split": split,
                             "metric": metric, "difference": d.mean, "low": d.low,
                             "high": d.high, "n": d.n, "paired": int(d.paired)})
    return rows


def claims(m: Measured, classes: list[str], target: int, rep: dict[str, Any],
           transfer: list[dict[str, Any]], identity: list[dict[str, Any]]) -> list[cl.Claim]:
    """C1–C5 from the compared runs (C1, C2 on the baseline; C3, for the target class and
    for all, without ``train/``'s seed and on the tracked sections that were not style
    sources, the sources' numbers beside),
    and the rows of ``transfer/changes.csv`` of the transfer samples and of their identity
    samples (C5a, C5b). C4 is judged on a test volume only: val holds the style sources,
    whose labels shaped the transfer."""
    results = m.results
    base = results.get("baseline", [])
    tests = [k.split("/")[0] for k in (base[0].values if base else {})
             if k.endswith("/miou") and not k.startswith("val/")]
    unchosen = {k: kept for k, rs in results.items()
                if (kept := [r for r in rs if r.seed != m.chooser])}
    c4 = (cl.c4_accuracy(results, classes, classes[target], tests[0],
                         rep["equivalence_margin"]) if tests else
          cl.Claim("C4", f"transfer raises {classes[target]} accuracy and keeps the other "
                   "classes", "no test volume: val holds the style sources, whose labels "
                   "shaped the transfer, so it cannot judge it", "not measured"))
    scope = "tracked/off_sources" if m.sources else "tracked"
    return [cl.c1_boundaries(base, m.pixels), cl.c2_thin_classes(base, classes, m.pixels),
            cl.c3_regions(unchosen, scope, m.sources),
            cl.c3_regions(unchosen, f"{scope}/all_classes", m.sources), c4,
            *cl.c5_claims(transfer, identity, rep["surroundings_tolerance"])]

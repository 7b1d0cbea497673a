"""``falsecli al``: the active-learning loop simulated on a fully labelled volume.

For every strategy of ``al.strategies`` and seed of ``al.seeds``: round 0 trains from scratch
on ``al.initial`` training sections spread evenly over inlines and crosslines; then, for
``al.rounds`` rounds, the last run's pool is queried (``query.budget`` sections under
``query.min_gap``), those sections' labels are revealed and the next run trains from scratch
on the enlarged set. Labels are hidden per section through ``train.labelled``: a revealed
inline's pixels are labelled only as part of that inline, never on the crosslines through it.

Each round is a normal run folder, ``al/<strategy>/seed<k>/round<r>/`` (trained by the train
stage, so ``heatmap --run`` works on it), with its query in ``round<r>/query/``; every
round's run reads the query before it as its upstream. ``al/curves.csv`` is rewritten after
every round from the complete rounds on disk. Run again, ``al`` skips complete rounds,
continues an interrupted training from its checkpoint and redoes a round whose query changed.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console, layout
from falsecli.core.config import Config, class_id, remember_config, run_signature
from falsecli.core.errors import FalseCliError
from falsecli.core.files import write_csv
from falsecli.core.jobs import Job
from falsecli.core.parallel import SERIAL, Parallel, run_jobs
from falsecli.core.manifest import Stage
from falsecli.data.dataset import Section
from falsecli.method import curves
from falsecli.method.runfolder import read_eval

CURVES_CSV = "curves.csv"
#: the columns of curves.csv and their types
CURVE_COLUMNS = {"strategy": str, "seed": int, "round": int, "labelled": int,
                 **{f"{split}_{m}": float for split in ("val", "test")
                    for m in ("miou", "mean_class_acc", "target_acc")}}
#: the query seed of round r of seed k is QUERY_SEED * k + r (every draw its own stream)
QUERY_SEED = 1000


def initial_sections(train: list[Section], k: int, seed: int) -> list[str]:
    """``k`` training sections spread evenly: ``ceil(k/2)`` inlines and ``floor(k/2)``
    crosslines, on each axis at equal steps through its training sections from one seeded
    random offset within the first step."""
    rng = np.random.default_rng(seed)
    out = []
    for axis, n in (("inline", (k + 1) // 2), ("crossline", k // 2)):
        secs = [s for s in train if s.axis == axis]
        if n > len(secs):
            raise FalseCliError(f"al.initial is {k}, but the volume has only {len(secs)} "
                                f"training {axis}s for its {n}; use a smaller --initial")
        step = len(secs) / max(n, 1)
        start = rng.random() * step
        out += [secs[int(start + j * step)].name for j in range(n)]
    return out


def round_config(cfg: Config, labelled: list[str], seed: int) -> Config:
    """The training config of one round: the labelled sections, the seed, the pool tracked."""
    out = copy.deepcopy(cfg)
    out["train"]["labelled"] = sorted(labelled)
    out["train"]["seed"] = seed
    out["train"]["track"] = list(dict.fromkeys([*cfg["train"]["track"], "pool"]))
    return out


def query_config(cfg: Config, run: str, strategy: str, seed: int, r: int) -> Config:
    out = copy.deepcopy(cfg)
    out["query"].update(run=run, strategy=strategy, seed=QUERY_SEED * seed + r)
    return out


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    return out


def _differs(done: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first setting that differs, as ``key: old -> new``, or None."""
    old, new = _leaves(done), _leaves(wanted)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} now"
    return None


def _what(cfg: Config, kind: str) -> dict[str, Any]:
    """What makes a round's result: its training run's signature and length, or its query."""
    if kind == "train":
        return {**run_signature(cfg), "epochs": cfg["train"]["epochs"]}
    return dict(cfg["query"])


def _step(stage: Stage, wanted: Config, kind: str, upstream: list[Stage], force: bool,
          do: Any) -> str:
    """Skip a complete, fresh round step made with the same settings; redo a stale one (its
    upstream changed); refuse one made with other settings. Else do it."""
    redo = force
    if not force and stage.is_complete():
        if stage.is_fresh([u.name for u in upstream]):
            diff = _differs(_what(stage.manifest()["config"], kind), _what(wanted, kind))
            if diff is None:
                return "skipped"
            raise FalseCliError(f"al: {stage.name} was made with other settings ({diff}) — "
                                "use --force to redo the study, or a new workdir")
        redo = True
    do(redo)
    return "redone" if redo else "done"


def al(cfg: Config, workdir: Path, *, force: bool = False, parallel: Parallel = SERIAL
       ) -> dict[str, Any]:
    """Run every round of every strategy and seed, the (strategy, seed) chains side by side
    with ``parallel`` (``--jobs``); write ``al/curves.csv``. Interrupted rounds always
    continue, so there is no ``resume``."""
    from falsecli.data.dataset import load_dataset
    from falsecli.method.query import check_strategy

    workdir = Path(workdir)
    a = cfg["al"]
    for strategy in a["strategies"]:
        check_strategy(strategy)
    base = copy.deepcopy(cfg)
    base["train"]["labelled"] = None
    train_sections = load_dataset(base).sections("train")
    need = a["initial"] + a["rounds"] * cfg["query"]["budget"]
    if need > len(train_sections):
        raise FalseCliError(
            f"al: {a['initial']} initial sections + {a['rounds']} rounds x budget "
            f"{cfg['query']['budget']} = {need} labelled sections, but the volume has only "
            f"{len(train_sections)} training sections; use fewer --rounds or a smaller --budget")
    # the workdir's settings are the study's, not those of its first round's (which a later
    # `falsecli train` here would otherwise inherit, train.labelled included)
    remember_config(workdir, cfg)
    chains = [Job(f"{strategy} seed {seed}", rounds,
                  (cfg, workdir, strategy, seed, initial_sections(train_sections,
                                                                  a["initial"], seed), force))
              for seed in a["seeds"] for strategy in a["strategies"]]
    done = [row for rows in run_jobs(chains, parallel, "al", cfg["train"]["device"]).values()
            for row in rows]
    path = write_curves(workdir, cfg)
    rows = read_curves(workdir)
    lines = [f"al: {sum(d['status'] != 'skipped' for d in done)} of {len(done)} rounds "
             f"trained, {len(rows)} rows in {path}"]
    header, body, last = curves.table(rows)
    lines += ["  ".join(header)] + ["  ".join(row) for row in body]
    return {"stage": layout.AL, "runs": done, "lines": lines, "areas_up_to_round": last,
            "outputs": [str(path)]}


def rounds(cfg: Config, workdir: Path, strategy: str, seed: int, initial: list[str],
           force: bool) -> list[dict[str, Any]]:
    """One strategy and seed: train, query, reveal, round after round (each round's
    sections depend on the one before, so a chain runs in one process)."""
    from falsecli.stages.query import load_chosen, query
    from falsecli.stages.train import train

    labelled, upstream, done = list(initial), [], []
    for r in range(cfg["al"]["rounds"] + 1):
        name = layout.round_name(strategy, seed, r)
        rcfg = round_config(cfg, labelled, seed)
        console.log(f"al: {name} ({len(labelled)} labelled sections)")
        status = _step(Stage(workdir, name), rcfg, "train", upstream, force,
                       lambda redo: train(rcfg, workdir, stage=name, force=redo,
                                          resume=not redo, upstream=upstream))
        done.append({"run": name, "status": status, "labelled": len(labelled)})
        write_curves(workdir, cfg)
        if r == cfg["al"]["rounds"]:
            break
        qcfg = query_config(cfg, name, strategy, seed, r)
        qstage = Stage(workdir, layout.query_folder(name))
        _step(qstage, qcfg, "query", [Stage(workdir, name)], force,
              lambda redo: query(qcfg, workdir, force=redo))
        labelled += load_chosen(workdir, name)
        upstream = [qstage]
    return done


def _target(cfg: Config, classes: list[str]) -> str:
    return classes[class_id({"data": {"classes": classes}}, cfg["al"]["class"])]


def complete_rounds(workdir: Path) -> list[Stage]:
    """Every complete round on disk, in folder order (strategy, seed, round)."""
    stages = [Stage(workdir, run.name) for run in layout.runs(workdir, layout.AL)]
    return [stage for stage in stages if stage.is_complete()]


def _rows(workdir: Path, cfg: Config) -> list[dict[str, Any]]:
    """One row per complete round on disk, in folder order."""
    rows = []
    for stage in complete_rounds(workdir):
        run, manifest = layout.parse_run(stage.name), stage.manifest()
        results = read_eval(stage.path)
        target = _target(cfg, manifest["config"]["data"]["classes"])
        row: dict[str, Any] = {"strategy": run.method, "seed": run.seed, "round": run.round,
                               "labelled": len(manifest["config"]["train"]["labelled"] or [])}
        tests = [k for k in results if k != "val"]
        for split, key in (("val", "val"), ("test", tests[0] if tests else None)):
            scores = results.get(key, {}) if key else {}
            row[f"{split}_miou"] = scores.get("miou")
            row[f"{split}_mean_class_acc"] = scores.get("mean_class_acc")
            row[f"{split}_target_acc"] = scores.get("class_acc", {}).get(target)
        rows.append(row)
    return rows


def write_curves(workdir: Path, cfg: Config) -> Path:
    """``al/curves.csv`` from every complete round (rewritten atomically)."""
    path = Path(workdir) / layout.AL / CURVES_CSV
    write_csv(path, CURVE_COLUMNS, _rows(workdir, cfg))
    return path


def read_curves(workdir: Path) -> list[dict[str, Any]]:
    """The rows of ``al/curves.csv``, typed (an empty cell, a split not scored: None)."""
    path = Path(workdir) / layout.AL / CURVES_CSV
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if list(reader.fieldnames or []) != list(CURVE_COLUMNS):
                raise ValueError(f"the columns must be {', '.join(CURVE_COLUMNS)}")
            return [{c: (cast(row[c]) if row[c] else None) for c, cast in CURVE_COLUMNS.items()}
                    for row in reader]
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing — run 'falsecli al -w {workdir}' first") from None
    except (OSError, ValueError, csv.Error) as exc:
        raise FalseCliError(f"{path}: unreadable ({exc}) — run 'falsecli al -w {workdir}' "
                            "again: it rewrites the file from the rounds") from None


@dataclass
class Learning:
    """What the report shows of ``falsecli al``: the learning curves (per panel, a split and
    metric: strategy -> labelled sections, mean, std over seeds) with their titles, and the
    areas table (header, one row per strategy) up to round ``last``, the last every curve
    reached, and the per-seed paired differences of area against random and entropy."""

    bands: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
    titles: dict[str, str]
    header: list[str]
    body: list[list[str]]
    last: int
    paired: tuple[list[str], list[list[str]]]  # header, rows: strategy − reference per seed


def learning_report(workdir: Path) -> Learning | None:
    """The learning curves and their areas from ``al/curves.csv``; None without rounds."""
    if not (Path(workdir) / layout.AL / CURVES_CSV).is_file():
        return None
    rows = read_curves(workdir)
    if not rows:
        return None
    bands = {f"{s}_{m}": curves.band(rows, f"{s}_{m}") for s, m in curves.PANELS}
    titles = {f"{s}_{m}": f"{s}: {curves.METRIC_NAMES[m]}" for s, m in curves.PANELS}
    header, body, last = curves.table(rows)
    return Learning({k: v for k, v in bands.items() if v}, titles, header, body, last,
                    curves.differences(rows))

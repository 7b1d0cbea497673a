"""The names of a workdir's folders: the one module that spells them.

A training run lives in ``train/``, ``retrain/<aug>/seed<k>/`` or
``al/<strategy>/seed<k>/round<r>/``; the heat maps, query and traces of a run live beside its
files (``heatmap/``, ``query/``, ``trace/<section>/`` for ``train``, else
``<run>/heatmap/``...). Parsing and formatting both live here, with the one error a mistyped
run name gets, so that the stages, ``show``, the hints and the help texts cannot drift apart.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from falsecli.core.errors import FalseCliError, did_you_mean
from falsecli.core.rules import AUGS, STRATEGIES

TRAIN = "train"
RETRAIN = "retrain"
AL = "al"
HEATMAP = "heatmap"
QUERY = "query"
TRACE = "trace"
#: the workdir's own folder: ``locks/<stage>.lock`` (outside the stage folders, which a redo
#: swaps) and ``redo/<stage>/``, where a redo builds its result beside the complete one
STATE = ".falsecli"
#: every form of a run's name, for help texts and errors
RUN_FORMS = f"{TRAIN} or {RETRAIN}/<aug>/seed<k> or {AL}/<strategy>/seed<k>/round<r>"
RUN_EXAMPLE = f"{RETRAIN}/transfer/seed0"
#: the per-run stage folders, for help texts
PER_RUN_FORMS = f"<run>/{HEATMAP}, <run>/{QUERY}, <run>/{TRACE}/<section>"

_NUMBER = r"(0|[1-9]\d*)"
_RUN = re.compile(
    rf"{TRAIN}"
    rf"|{RETRAIN}/(?P<aug>{'|'.join(map(re.escape, AUGS))})/seed(?P<rseed>{_NUMBER})"
    rf"|{AL}/(?P<strategy>{'|'.join(map(re.escape, STRATEGIES))})/seed(?P<aseed>{_NUMBER})"
    rf"/round(?P<round>{_NUMBER})")
#: a per-run stage folder: ``[<run>/]heatmap``, ``[<run>/]query``, ``[<run>/]trace/<section>``
_PER_RUN = re.compile(rf"(?:(?P<run>.+)/)?(?P<stage>{HEATMAP}|{QUERY}|{TRACE}/(?P<section>[^/]+))")


@dataclass(frozen=True)
class Run:
    """A training run's folder: ``kind`` is train, retrain or al; ``method`` the augmentation
    (retrain) or the query strategy (al)."""

    kind: str
    method: str | None = None
    seed: int | None = None
    round: int | None = None

    @property
    def name(self) -> str:
        if self.kind == RETRAIN:
            return retrain_name(self.method, self.seed)
        if self.kind == AL:
            return round_name(self.method, self.seed, self.round)
        return TRAIN


def retrain_name(aug: str, seed: int) -> str:
    """The folder of one retraining run: ``retrain/<aug>/seed<k>``."""
    return f"{RETRAIN}/{aug}/seed{seed}"


def round_name(strategy: str, seed: int, r: int) -> str:
    """The folder of round ``r`` of active learning: ``al/<strategy>/seed<k>/round<r>``."""
    return f"{AL}/{strategy}/seed{seed}/round{r}"


def is_run(name: str) -> bool:
    """Whether ``name`` is the folder name of a training run."""
    return _match(name) is not None


def _match(text: str) -> Run | None:
    m = _RUN.fullmatch(text)
    if m is None:
        return None
    if m["aug"] is not None:
        return Run(RETRAIN, m["aug"], int(m["rseed"]))
    if m["strategy"] is not None:
        return Run(AL, m["strategy"], int(m["aseed"]), int(m["round"]))
    return Run(TRAIN)


def parse_run(text: str, key: str = "--run", workdir: Path | None = None) -> Run:
    """The run named ``text`` (a trailing slash, as shell completion writes it, is dropped);
    else the one error for a bad run name: ``key``, the value, every form of a name and the
    closest run in ``workdir``."""
    run = _match(text.rstrip("/")) if text.strip("/") else None
    if run is None:
        hint = nearest_run(text, workdir) if workdir is not None else ""
        raise FalseCliError(f"{key} is {text!r}; it must be {RUN_FORMS}, e.g. "
                            f"{RUN_EXAMPLE}{hint}")
    return run


def nearest_run(name: str, workdir: Path) -> str:
    """``"; did you mean 'retrain/flip/seed0'?"`` for the run in ``workdir`` closest to
    ``name``, else ``""``."""
    return did_you_mean(name, [r.name for r in runs(workdir) if r.name != name])


def runs(workdir: Path, kind: str | None = None, method: str | None = None) -> list[Run]:
    """The run folders in ``workdir`` (complete or not), of ``kind`` and ``method`` if given,
    in order: train, then retraining runs, then active-learning rounds; numbers by value."""
    root = Path(workdir)
    found = [_match(str(p.relative_to(root))) for pattern in (TRAIN, f"{RETRAIN}/*/*",
                                                             f"{AL}/*/*/*")
             for p in root.glob(pattern) if p.is_dir()]
    order = (TRAIN, RETRAIN, AL)
    return sorted((r for r in found if r is not None and kind in (None, r.kind)
                   and method in (None, r.method)),
                  key=lambda r: (order.index(r.kind), r.method or "", r.seed or 0, r.round or 0))


def _beside(run: str, folder: str) -> str:
    return folder if run == TRAIN else f"{run}/{folder}"


def heatmap_folder(run: str) -> str:
    """Where the heat maps of ``run`` go: ``heatmap`` for train, else ``<run>/heatmap``."""
    return _beside(run, HEATMAP)


def query_folder(run: str) -> str:
    """Where the query of ``run`` goes: ``query`` for train, else ``<run>/query``."""
    return _beside(run, QUERY)


def trace_folder(run: str, section: str) -> str:
    """Where the trace of ``section`` in ``run`` goes: beside the run's heat maps."""
    return _beside(run, f"{TRACE}/{section}")


def command(name: str) -> str:
    """The command, with its options, that writes the stage folder ``name`` (for the "run X
    first" and "redo it" hints): ``retrain --aug flip --seeds 0``, ``heatmap --run ...``."""
    run = _match(name)
    if run is not None:
        return f"{RETRAIN} --aug {run.method} --seeds {run.seed}" if run.kind == RETRAIN \
            else run.kind
    per_run = _PER_RUN.fullmatch(name)
    if per_run is None:
        return name.split("/")[0]
    flag = f" --run {per_run['run']}" if per_run["run"] else ""
    if per_run["section"] is not None:
        return f"{TRACE}{flag} --section {per_run['section']}"
    return per_run["stage"] + flag


def what(name: str) -> str:
    """What the stage folder ``name`` holds, in a few words: a training run, heat maps..."""
    if _match(name) is not None:
        return "training run"
    per_run = _PER_RUN.fullmatch(name)
    if per_run is not None and per_run["stage"] == HEATMAP:
        return "heat maps"
    return f"complete {name.split('/')[0]} stage"


def default_workdir() -> Path:
    """``$FALSECLI_WORKDIR``, else ``./falsecli-work``."""
    return Path(os.environ.get("FALSECLI_WORKDIR") or "falsecli-work")


def _flat(name: str) -> str:
    return name.replace("/", "+")


def lock_file(workdir: Path, name: str) -> Path:
    """The lock of stage ``name``: in the workdir's own folder, not in the stage folder that a
    redo swaps."""
    return Path(workdir) / STATE / "locks" / (_flat(name) + ".lock")


def redo_folder(workdir: Path, name: str) -> Path:
    """Where a redo of stage ``name`` builds the new result while the complete one stays."""
    return Path(workdir) / STATE / "redo" / _flat(name)

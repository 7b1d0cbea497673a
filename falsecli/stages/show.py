"""``falsecli show``: what the workdir holds, or one stage's result, without redoing anything.

Reads only manifests and the stages' own result files (through their owners' readers), so
it is instant and safe beside a running stage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from falsecli.core import console, layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError, did_you_mean
from falsecli.core.manifest import MANIFEST, Stage

#: the workflow's order, for listing the stages of a workdir
ORDER = (layout.TRAIN, layout.HEATMAP, "rank", "transfer", layout.RETRAIN, layout.QUERY,
         layout.AL, "report")


def _stages(workdir: Path) -> list[str]:
    """Every stage folder below ``workdir`` that has a manifest, in workflow order, numbers
    in names by value (``round2`` before ``round10``)."""
    names = [str(p.parent.relative_to(workdir)) for p in Path(workdir).rglob(MANIFEST)]
    top = {name: i for i, name in enumerate(ORDER)}

    def key(name: str) -> tuple[int, list[tuple[int, int | str]]]:
        parts = re.split(r"(\d+)", name)
        return (top.get(name.split("/")[0], len(ORDER)),
                [(1, int(p)) if p.isdigit() else (0, p) for p in parts])

    return sorted(names, key=key)


def _state(stage: Stage) -> dict[str, Any]:
    manifest = stage.manifest()
    if manifest is None:
        return {"stage": stage.name, "status": "incomplete", "path": str(stage.path)}
    return {"stage": stage.name, "status": "fresh" if stage.is_fresh() else "stale",
            "finished": manifest.get("finished"), "wall_seconds": manifest.get("wall_seconds"),
            "path": str(stage.path),
            "outputs": [str(stage.path / rel) for rel in manifest.get("outputs", [])]}


def show(cfg: Config, workdir: Path, stage: str | None = None) -> dict[str, Any]:
    """The stages of ``workdir`` with their state, or ``stage``'s result as the stage's own
    command prints it (rank: its table). A stale stage read an upstream result that has
    changed since; ``falsecli run`` redoes it."""
    workdir = Path(workdir)
    present = _stages(workdir)
    if stage is None:
        if not present:
            raise FalseCliError(f"no stage in {workdir} — run 'falsecli train -w {workdir}' "
                                "(or 'falsecli demo') first")
        return {"stage": "show", "workdir": str(workdir),
                "stages": [_state(Stage(workdir, name)) for name in present]}
    stage = stage.strip("/")
    if stage not in present:
        listed = ", ".join(present) or "none"
        raise FalseCliError(f"no stage '{stage}' in {workdir}{did_you_mean(stage, present)} "
                            f"(present: {listed})")
    state = _state(Stage(workdir, stage))
    if stage == "rank" and state["status"] != "incomplete":
        from falsecli.stages.rank import ranking_summary

        return {**state, **ranking_summary(cfg, workdir)}
    return state


def print_show(summary: dict[str, Any]) -> None:
    """A table of the stages, or one stage's state and outputs (rank: its table)."""
    if "top" in summary:
        from falsecli.stages.rank import print_ranking

        print_ranking(summary)
        return
    if "stages" not in summary:
        finished = f", finished {summary['finished']} in {summary['wall_seconds']:.0f} s" \
            if summary.get("finished") else ""
        console.stdout.print(f"{summary['stage']}: {summary['status']}{finished}")
        for path in summary.get("outputs", []):
            print(path)
        return
    from rich.table import Table

    table = Table(title=f"stages in {summary['workdir']} (stale: an input changed since; "
                        "'falsecli run' redoes it)")
    for column in ("stage", "status", "finished", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for row in summary["stages"]:
        seconds = row.get("wall_seconds")
        table.add_row(row["stage"], row["status"], row.get("finished") or "",
                      "" if seconds is None else f"{seconds:.0f}")
    console.stdout.print(table)

"""``falsecli run`` and ``falsecli demo``: every stage in order, skipping the fresh ones.

Each stage module declares its :class:`~falsecli.stages.Step` (the folders it writes and the
stages it reads); the pipeline treats them all alike. A folder is skipped when it is fresh
(complete, and it read exactly the upstream results that are on disk now); a stale one is
redone, an interrupted one continues (``resume``, offered to the steps that ``resumes``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from falsecli.core import config, console
from falsecli.core.config import Config
from falsecli.core.jobs import Job
from falsecli.core.parallel import SERIAL, Parallel, run_jobs
from falsecli.core.manifest import Stage
from falsecli.stages import Step

#: the demo profile: the whole workflow (baseline, flip, rotate, transfer and its
#: transfer-identity control over 2 seeds, report) in about 10 minutes on 2 CPU cores;
#: docs/results.md ("The demo") documents it. The control is what C3/C4 need to tell the style
#: swap from merely more images and more steps.
DEMO: dict[str, Any] = {
    "data": {"synthetic": {"shape": [48, 48, 80], "test_shape": [16, 48, 80]}},
    "model": {"output_stride": 8, "aspp_channels": 64},
    "train": {"epochs": 12, "batch_size": 8, "lr": 0.002, "device": "auto", "late_from": 7},
    "rank": {"min_pixels": 40},
    "transfer": {"iterations": 300, "crop": [48, 48], "batch_size": 4, "channels": 16,
                 "style_dim": 16, "sources": 4, "per_source": 16},
    "retrain": {"augs": ["none", "flip", "rotate", "transfer", "transfer-identity"],
                "seeds": [0, 1], "epochs": None},
    # 12 epochs leave fewer repeated events than the paper's 60: count regions of >= 10
    # scruff pixels forgotten at least twice
    "report": {"sections": 4, "region_events": 2, "min_region": 10},
}


#: the study profile of the report-trust work (docs/results.md, "The paper's claims,
#: measured"): the demo's networks on a smaller volume for 12 epochs, 4 seeds of every method
#: and the transfer-identity control, in about 17 minutes on 2 CPU cores
STUDY: dict[str, Any] = {
    **DEMO,
    "data": {"synthetic": {"shape": [40, 40, 64], "test_shape": [16, 40, 64]}},
    "transfer": {**DEMO["transfer"], "crop": [40, 40]},
    "retrain": {**DEMO["retrain"], "seeds": [0, 1, 2, 3]},
}
#: the named profiles of ``falsecli demo --profile``
PROFILES: dict[str, dict[str, Any]] = {"demo": DEMO, "study": STUDY}


def demo_config(profile: str = "demo") -> Config:
    """Packaged defaults with a named profile on top (user's --config/--set still apply)."""
    return config.merge(config.load_defaults(), PROFILES[profile])


def steps() -> list[Step]:
    """The workflow's stages in order (imported here: most of them need torch)."""
    from falsecli.stages import heatmap, rank, report, retrain, train, transfer

    return [m.STEP for m in (train, heatmap, rank, transfer, retrain, report)]


def run(cfg: Config, workdir: Path, *, force: bool = False, parallel: Parallel = SERIAL
        ) -> dict[str, Any]:
    """Run every stage; skip the fresh folders, redo the stale ones, continue interrupted ones
    (of the stages that can: ``Step.resumes``). With ``parallel`` (``--jobs``) the folders run
    side by side, each as soon as the steps it waits for (``Step.after``) are done: the
    baseline, flip and rotate runs beside the generator's training.

    The summary has one entry per stage; a stage that writes several folders (retrain) lists
    each folder under ``runs``.
    """
    workdir = Path(workdir)
    cfg = copy.deepcopy(cfg)
    cfg["heatmap"]["run"] = "train"
    planned, folders = plan(cfg, workdir, force)
    results = run_jobs(planned, parallel, "run", cfg["train"]["device"])
    done: dict[str, Any] = {}
    for step in steps():
        rows = [row for name in folders[step.name] for row in results[name]]
        status = "done" if any(r["status"] != "skipped" for r in rows) else "skipped"
        done[step.name] = ({**rows[0], "status": status} if step.plan is None
                           else {"status": status, "runs": rows})
    from falsecli.stages.report import REPORT_HTML, REPORT_MD

    outputs = [str(Stage(workdir, "report").path / name) for name in (REPORT_HTML, REPORT_MD)]
    return {"stage": "run", "workdir": str(workdir), "stages": done, "outputs": outputs}


def plan(cfg: Config, workdir: Path, force: bool = False
         ) -> tuple[list[Job], dict[str, list[str]]]:
    """The workflow's folders as jobs, each after the folders it reads, and each step's
    folders."""
    planned: list[Job] = []
    folders: dict[str, list[str]] = {}
    for k, step in enumerate(steps()):
        folders[step.name] = []
        for name, step_cfg in step.folders(cfg, workdir).items():
            # each folder waits for what it reads: retrain's baseline runs for train/ alone
            before = ([s.name for s in steps()[:k]] if step.after is None
                      else step.after(step_cfg))
            wait_for = tuple(f for s in before for f in folders.get(s, []))
            folders[step.name].append(name)
            planned.append(Job(name, run_folder, (step.name, name, step_cfg, workdir, force),
                               after=wait_for))
    return planned, folders


def run_folder(step_name: str, name: str, cfg: Config, workdir: Path, force: bool
               ) -> list[dict[str, Any]]:
    """One stage folder of the workflow: skipped when fresh, else run (continued when its
    stage resumes); its result rows (retrain: one per run)."""
    step = next(s for s in steps() if s.name == step_name)
    stage = Stage(workdir, name)
    if not force and stage.is_fresh(step.upstream(cfg, workdir)):
        console.log(f"run: {name} is complete, skipped")
        return [{"run": name, "status": "skipped"}]
    resume = {"resume": True} if step.resumes else {}
    summary = step.run(cfg, workdir, force=force or stage.is_complete(), **resume)
    # a stage that writes several folders reports each one under "runs"
    return summary["runs"] if step.plan else [{"run": name, "status": "done", **summary}]

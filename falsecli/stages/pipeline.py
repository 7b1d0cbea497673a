"""``falsecli run`` and ``falsecli demo``: all six stages in order, skipping complete ones.

A stage counts as done when it is fresh (:meth:`Stage.is_fresh`: complete, and the upstream
manifests it recorded are still the ones on disk); a stale stage runs again, and so does the
report when a training run appeared that it has not seen.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from falsecli.core import config, console
from falsecli.core.config import Config
from falsecli.core.workdir import Stage, retrain_name

#: the demo profile: the whole workflow (baseline, flip, rotate, transfer over 2 seeds, report)
#: in at most ~10 minutes on 2 CPU cores; README's "Demo profile" documents it
DEMO: dict[str, Any] = {
    "data": {"synthetic": {"shape": [48, 48, 80], "test_shape": [16, 48, 80]}},
    "model": {"output_stride": 8, "aspp_channels": 64},
    "train": {"epochs": 12, "batch_size": 8, "lr": 0.002, "device": "auto"},
    "rank": {"min_pixels": 40},
    "transfer": {"iterations": 300, "crop": [48, 48], "batch_size": 4, "channels": 16,
                 "style_dim": 16, "sources": 4, "per_source": 16},
    "retrain": {"seeds": [0, 1], "epochs": None},
    # 12 epochs leave fewer repeated events than the paper's 60: count regions of >= 10
    # scruff pixels forgotten at least twice
    "report": {"sections": 4, "region_events": 2, "min_region": 10},
}


def demo_config() -> Config:
    """Packaged defaults with the demo profile on top (user's --config/--set still apply)."""
    return config.merge(config.load_defaults(), DEMO)


def _report_is_current(workdir: Path) -> bool:
    """The report's runs are still every complete run (a new seed or method is not one of
    its recorded inputs, so :func:`_fresh` cannot see it)."""
    from falsecli.stages.report import collect_runs

    manifest = Stage(workdir, "report").manifest()
    return manifest is not None and manifest.get("runs") == [r.name for r in collect_runs(workdir)]


def run(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Run train, heatmap, rank, transfer, retrain and report; skip the fresh ones."""
    from falsecli.stages.heatmap import heatmap
    from falsecli.stages.rank import rank
    from falsecli.stages.report import report
    from falsecli.stages.retrain import repeats_train, retrain, run_config
    from falsecli.stages.train import train
    from falsecli.stages.transfer import transfer

    workdir = Path(workdir)
    cfg = copy.deepcopy(cfg)
    cfg["heatmap"]["run"] = "train"
    runs = [retrain_name(a, s) for a in cfg["retrain"]["augs"] for s in cfg["retrain"]["seeds"]
            if not (a == "none" and repeats_train(workdir, run_config(cfg, a, s)))]
    steps: list[tuple[str, list[str], Callable[..., dict[str, Any]]]] = [
        ("train", ["train"], train),
        ("heatmap", ["heatmap"], heatmap),
        ("rank", ["rank"], rank),
        ("transfer", ["transfer"], transfer),
        ("retrain", runs, retrain),
        ("report", ["report"], report),
    ]
    done: dict[str, Any] = {}
    for name, stages, fn in steps:
        todo = stages if force else [s for s in stages if not Stage(workdir, s).is_fresh()]
        if not todo and name == "report" and not _report_is_current(workdir):
            todo = stages
        if not todo:
            console.log(f"run: {name} is complete, skipped")
            done[name] = {"status": "skipped"}
            continue
        console.log(f"run: {name}")
        if name == "retrain":  # redoes its stale runs itself, resumes interrupted ones
            done[name] = {"status": "done", **retrain(cfg, workdir, force=force, resume=True)}
            continue
        stale = not force and any(Stage(workdir, s).is_complete() for s in stages)
        # an interrupted training continues where it stopped
        extra = {"resume": True} if name == "train" else {}
        done[name] = {"status": "done", **fn(cfg, workdir, force=force or stale, **extra)}
    outputs = [str(workdir / "report" / "report.html"), str(workdir / "report" / "report.md")]
    return {"stage": "run", "workdir": str(workdir), "stages": done, "outputs": outputs}

"""Stage 5: train from scratch per method and seed, into ``retrain/<aug>/seed<k>/``.

Each run has exactly the layout of ``train/`` (same data, same tracked sections), so the
report can compare heat maps pixel for pixel. ``transfer`` is the paper's method: the pool of
training sections enlarged with ``transfer/samples.npz``; ``none`` gives more baseline seeds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from falsecli import console
from falsecli.config import Config
from falsecli.workdir import Stage, retrain_name


def run_config(cfg: Config, aug: str, seed: int) -> Config:
    """The training config of one retraining run."""
    out = copy.deepcopy(cfg)
    out["train"]["aug"] = "none" if aug == "transfer" else aug
    out["train"]["seed"] = seed
    out["train"]["epochs"] = cfg["retrain"]["epochs"] or cfg["train"]["epochs"]
    return out


#: training keys that do not change the result (where and how fast it runs)
_RUNTIME_KEYS = ("device", "amp", "compile", "eval_batch_size")


def _outcome(cfg: Config) -> tuple[Any, ...]:
    """What determines a run's result: the data, the model and the training recipe."""
    train = {k: v for k, v in cfg["train"].items() if k not in _RUNTIME_KEYS}
    return cfg["data"], cfg["model"], train


def repeats_train(workdir: Path, run_cfg: Config) -> bool:
    """Whether ``train/`` is already this very run (a baseline seed equal to train's)."""
    manifest = Stage(workdir, "train").manifest()
    return manifest is not None and _outcome(manifest["config"]) == _outcome(run_cfg)


def retrain(cfg: Config, workdir: Path, *, force: bool = False, resume: bool = True
            ) -> dict[str, Any]:
    """Train every (method, seed) of ``retrain.augs`` x ``retrain.seeds``; complete runs are
    skipped unless ``force``, interrupted ones resume unless ``resume`` is false."""
    from falsecli.train import train

    workdir = Path(workdir)
    transfer = Stage(workdir, "transfer")
    if "transfer" in cfg["retrain"]["augs"]:
        transfer.require("retrain --aug transfer")
    runs = []
    for aug in cfg["retrain"]["augs"]:
        for seed in cfg["retrain"]["seeds"]:
            name = retrain_name(aug, seed)
            if Stage(workdir, name).is_complete() and not force:
                console.log(f"retrain: {name} is complete, skipped")
                runs.append({"run": name, "status": "skipped"})
                continue
            run_cfg = run_config(cfg, aug, seed)
            if aug == "none" and repeats_train(workdir, run_cfg):
                console.log(f"retrain: {name} would repeat train/ (same data, model, seed and "
                            "epochs): skipped, the report counts train/")
                runs.append({"run": name, "status": "same as train"})
                continue
            extra = transfer.path / "samples.npz" if aug == "transfer" else None
            summary = train(run_cfg, workdir, stage=name, force=force,
                            resume=resume, extra_samples=extra,
                            upstream=[transfer] if extra else [])
            runs.append({"run": name, "status": "trained", **summary})
    outputs = [str(workdir / r["run"] / "manifest.json") for r in runs
               if r["status"] != "same as train"]
    return {"stage": "retrain", "runs": runs, "outputs": outputs}

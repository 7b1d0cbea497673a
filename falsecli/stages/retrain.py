"""Stage 5: train from scratch per method and seed, into ``retrain/<aug>/seed<k>/``.

Each run has exactly the layout of ``train/`` (same data, same tracked sections), so the
report can compare heat maps pixel for pixel. ``transfer`` is the paper's method: the pool of
training sections enlarged with ``transfer/samples.npz``; ``transfer-identity`` its control,
the pool enlarged with as many samples generated from the same targets with their own style
codes (``transfer/samples_identity.npz``; :data:`falsecli.stages.transfer.METHOD_SAMPLES`
maps each method to its file), so that the style swap is separated from the effect of more
(generated) images and more steps per epoch; ``none`` gives more baseline seeds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from falsecli.core import console
from falsecli.core.config import Config, run_signature
from falsecli.core.errors import FalseCliError
from falsecli.core.jobs import Job
from falsecli.core.parallel import SERIAL, Parallel, run_jobs
from falsecli.core.layout import retrain_name
from falsecli.core.manifest import Stage
from falsecli.core.rules import GENERATED
from falsecli.stages import Step


def run_config(cfg: Config, aug: str, seed: int) -> Config:
    """The training config of one retraining run."""
    out = copy.deepcopy(cfg)
    out["train"]["aug"] = "none" if aug in GENERATED else aug
    out["train"]["seed"] = seed
    out["train"]["epochs"] = cfg["retrain"]["epochs"] or cfg["train"]["epochs"]
    return out


def repeats_train(workdir: Path, run_cfg: Config) -> bool:
    """Whether ``train/`` is already this very run (a baseline seed equal to train's): same
    data, model and training recipe, and as many epochs."""
    manifest = Stage(workdir, "train").manifest()
    if manifest is None:
        return False
    done = manifest["config"]
    return (run_signature(done) == run_signature(run_cfg)
            and done["train"]["epochs"] == run_cfg["train"]["epochs"])


def check_same_data(cfg: Config, workdir: Path) -> None:
    """Refuse runs on other data than ``train/``'s (other volumes' contents, classes, split
    or holdout): the report would compare them with train/ and its heat maps."""
    from falsecli.data.dataset import load_dataset
    from falsecli.data.provenance import data_fingerprint, differences

    manifest = Stage(workdir, "train").manifest()
    if manifest is None or "fingerprint" not in manifest:
        return
    diff = differences(manifest["fingerprint"]["data"], data_fingerprint(load_dataset(cfg)))
    if diff:
        raise FalseCliError(f"retrain: the data differ from those train/ was trained on "
                            f"({'; '.join(diff[:3])}) — retrain in a new workdir, or "
                            "'falsecli train --force' on these data first")


def plan(cfg: Config, workdir: Path) -> dict[str, Config]:
    """Every run of ``retrain.augs`` x ``retrain.seeds``, each with the config that trains
    exactly that run. (A baseline seed that would repeat ``train/`` is told when it runs:
    train/ may not exist yet when the workflow plans.)"""
    out = {}
    for aug in cfg["retrain"]["augs"]:
        for seed in cfg["retrain"]["seeds"]:
            one = copy.deepcopy(cfg)
            one["retrain"].update(augs=[aug], seeds=[seed])
            out[retrain_name(aug, seed)] = one
    return out


def upstream(cfg: Config, workdir: Path) -> list[str]:
    """Runs on generated samples read ``transfer/``; the others read only the data."""
    return ["transfer"] if set(GENERATED) & set(cfg["retrain"]["augs"]) else []


def retrain(cfg: Config, workdir: Path, *, force: bool = False, resume: bool = False,
            parallel: Parallel = SERIAL) -> dict[str, Any]:
    """Train every (method, seed) of ``retrain.augs`` x ``retrain.seeds``, side by side with
    ``parallel`` (``--jobs``). Fresh runs are skipped unless ``force``; stale ones (their
    transfer samples were redone) start over; interrupted ones continue with ``resume`` (the
    policy of :func:`train`)."""
    workdir = Path(workdir)
    generated = [a for a in cfg["retrain"]["augs"] if a in GENERATED]
    if generated:
        Stage(workdir, "transfer").require(f"retrain --aug {generated[0]}")
    check_same_data(cfg, workdir)
    runs = [Job(retrain_name(aug, seed), _retrain_one, (cfg, workdir, aug, seed, force, resume))
            for aug in cfg["retrain"]["augs"] for seed in cfg["retrain"]["seeds"]]
    rows = list(run_jobs(runs, parallel, "retrain", cfg["train"]["device"]).values())
    outputs = [str(Stage(workdir, r["run"]).manifest_path) for r in rows
               if r["status"] != "same as train"]
    return {"stage": "retrain", "runs": rows, "outputs": outputs}


def _retrain_one(cfg: Config, workdir: Path, aug: str, seed: int, force: bool, resume: bool
                 ) -> dict[str, Any]:
    """One (method, seed) run: skipped when fresh, else trained (or told it repeats train/)."""
    from falsecli.stages.train import train
    from falsecli.stages.transfer import METHOD_SAMPLES

    name = retrain_name(aug, seed)
    stage = Stage(workdir, name)
    if not force and stage.is_fresh():
        console.log(f"retrain: {name} is complete, skipped")
        return {"run": name, "status": "skipped"}
    redo = force or stage.is_complete()  # complete but stale: its transfer was redone
    run_cfg = run_config(cfg, aug, seed)
    if aug == "none" and repeats_train(workdir, run_cfg):
        console.log(f"retrain: {name} would repeat train/ (same data, model, seed and "
                    "epochs): skipped, the report counts train/")
        return {"run": name, "status": "same as train"}
    transfer = Stage(workdir, "transfer")
    extra = transfer.path / METHOD_SAMPLES[aug] if aug in GENERATED else None
    summary = train(run_cfg, workdir, stage=name, force=redo, resume=resume and not redo,
                    extra_samples=extra, upstream=[transfer] if extra else [])
    return {"run": name, "status": "trained", **summary}


#: a run waits for train/ (it must not repeat it, and trains on its data) and, when it
#: trains on generated samples, for transfer/
STEP = Step("retrain", retrain, upstream, plan, resumes=True,
            after=lambda cfg: ["train", *upstream(cfg, Path())])

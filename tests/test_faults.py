"""Fault injection: falsecli killed with SIGKILL at several points of train, retrain, transfer
and ``heatmap --force`` (after a checkpoint, during an artifact write, during the manifest
write; ``tests/faults.py`` does the killing).

After each kill: nothing complete is lost (a redo leaves the old result byte for byte); the
next run completes, and its result equals an uninterrupted run's bit for bit (CPU); no
temporary file, checkpoint or unfinished redo remains. Each chain resumes a run killed at one
point, kills the resumed run at the next point, and so on, to stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, sets_args
from typer.testing import CliRunner

from falsecli.cli import app
from falsecli.core.files import is_temp
from falsecli.core.layout import STATE
from falsecli.core.manifest import Stage

ROOT = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).with_name("faults.py")
SMALL = TINY + ["data.synthetic.shape=[12,13,29]", "data.synthetic.test_shape=[6,13,29]",
                "train.epochs=2", "transfer.checkpoint_every=2", "heatmap.figures=1"]
ARGS = [*sets_args(SMALL), "--quiet"]
RETRAIN = ["retrain", "--aug", "flip", "--seeds", "0"]


def cli(*args: object) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def killed(point: str, *args: object) -> None:
    """Run the CLI in a subprocess that SIGKILLs itself at ``point``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(FAULTS), point, "--", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder``, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def leftovers(workdir: Path) -> list[str]:
    """Temporary files, checkpoints of complete stages, unfinished redos."""
    found = [str(p) for p in workdir.rglob("*") if is_temp(p.name)
             or (p.name == "checkpoint.pt" and (p.parent / "manifest.json").exists())]
    redo = workdir / STATE / "redo"
    return found + ([str(p) for p in redo.iterdir()] if redo.is_dir() else [])


def same_run(a: Path, b: Path) -> None:
    """Two training runs are the same bit for bit (timings aside)."""
    def rows(run: Path) -> list[dict]:
        out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in out]

    assert rows(a) == rows(b)
    assert (a / "eval.json").read_text() == (b / "eval.json").read_text()
    for name in ("labels.npy", "correct.npy", "switch.npy", "pred_last.npy"):
        assert (a / "tracking" / name).read_bytes() == (b / "tracking" / name).read_bytes()
    ma, mb = (torch.load(r / "model.pt", weights_only=True)["state_dict"] for r in (a, b))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


def same_arrays(a: Path, b: Path) -> None:
    with np.load(a) as x, np.load(b) as y:
        assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), a


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Uninterrupted train, heatmap, rank, transfer and one retraining run."""
    work = tmp_path_factory.mktemp("reference")
    for command in (["train"], ["heatmap"], ["rank"], ["transfer"], RETRAIN):
        cli(*command, "-w", work, *ARGS)
    return work


def upstream_of(reference: Path, tmp_path: Path, *stages: str) -> Path:
    """A workdir holding copies of the reference's ``stages``."""
    work = tmp_path / "w"
    for stage in stages:
        shutil.copytree(reference / stage, work / stage)
    return work


def test_train_killed_anywhere_resumes_to_the_same_run(reference, tmp_path) -> None:
    work = tmp_path / "w"
    killed("checkpoint.pt:1:after", "train", "-w", work, *ARGS)
    assert (work / "train" / "checkpoint.pt").is_file()
    assert not Stage(work, "train").is_complete()
    killed("model.pt:1:during", "train", "-w", work, *ARGS, "--resume")
    killed("manifest.json:1:during", "train", "-w", work, *ARGS, "--resume")
    assert not Stage(work, "train").is_complete() and leftovers(work)  # half-written files
    cli("train", "-w", work, *ARGS, "--resume")
    same_run(reference / "train", work / "train")
    assert leftovers(work) == []


def test_train_force_killed_keeps_the_old_run(reference, tmp_path) -> None:
    work = upstream_of(reference, tmp_path, "train")
    before = snapshot(work / "train")
    for point in ("checkpoint.pt:1:after", "manifest.json:1:during"):
        killed(point, "train", "-w", work, *ARGS, "--force")
        assert snapshot(work / "train") == before, point
    cli("train", "-w", work, *ARGS, "--force")  # the leftover redo goes; the redo completes
    same_run(reference / "train", work / "train")
    assert snapshot(work / "train")["manifest.json"] != before["manifest.json"]
    assert leftovers(work) == []


def test_retrain_killed_resumes_and_a_killed_redo_keeps_the_heat_maps(reference,
                                                                          tmp_path) -> None:
    work = tmp_path / "w"
    run = work / "retrain" / "flip" / "seed0"
    killed("checkpoint.pt:1:after", *RETRAIN, "-w", work, *ARGS)
    cli(*RETRAIN, "-w", work, *ARGS, "--resume")
    same_run(reference / "retrain" / "flip" / "seed0", run)
    assert leftovers(work) == []

    cli("heatmap", "--run", "retrain/flip/seed0", "-w", work, *ARGS)
    before = snapshot(run)
    # killed after the new run was swapped in, before the old run's heat maps were moved over
    # (train's test kills a redo before the swap: the old run stays)
    killed("call:_adopt:1", *RETRAIN, "-w", work, *ARGS, "--force")
    assert not (run / "heatmap").exists() and leftovers(work)
    cli(*RETRAIN, "-w", work, *ARGS, "--force")
    same_run(reference / "retrain" / "flip" / "seed0", run)
    # the heat maps of the old run were carried over, untouched (stale: the run was redone)
    assert snapshot(run / "heatmap") == {k.removeprefix("heatmap/"): v for k, v in
                                         before.items() if k.startswith("heatmap/")}
    assert leftovers(work) == []


def test_transfer_killed_anywhere_resumes_to_the_same_samples(reference, tmp_path) -> None:
    work = upstream_of(reference, tmp_path, "train", "heatmap", "rank")
    killed("checkpoint.pt:1:after", "transfer", "-w", work, *ARGS)
    killed("samples.npz:1:during", "transfer", "-w", work, *ARGS, "--resume")
    killed("manifest.json:1:during", "transfer", "-w", work, *ARGS)
    cli("transfer", "-w", work, *ARGS)
    a, b = reference / "transfer", work / "transfer"
    same_arrays(a / "samples.npz", b / "samples.npz")
    ga, gb = (torch.load(t / "generator.pt", weights_only=True) for t in (a, b))
    for part in ("encoder", "generator"):
        assert all(torch.equal(ga[part][k], gb[part][k]) for k in ga[part]), part
    ma, mb = (json.loads((t / "metrics.json").read_text()) for t in (a, b))
    assert mb["training"]["generator"] == "reused"  # generator.pt was whole when killed
    for m in (ma, mb):
        del m["training"]["generator"], m["training"]["seconds"]
    assert ma == mb
    assert leftovers(work) == []


def test_heatmap_force_killed_keeps_the_old_maps(reference, tmp_path) -> None:
    work = upstream_of(reference, tmp_path, "train", "heatmap")
    before = snapshot(work / "heatmap")
    for point in ("forgetting.npz:1:during", "manifest.json:1:during"):
        killed(point, "heatmap", "-w", work, *ARGS, "--force")
        assert snapshot(work / "heatmap") == before, point
        cli("rank", "-w", work, *ARGS, "--force")  # the old maps are still usable
    cli("heatmap", "-w", work, *ARGS, "--force")
    for name in ("forgetting.npz", "switch.npz", "never_learned.npz"):
        same_arrays(reference / "heatmap" / name, work / "heatmap" / name)
    assert (work / "heatmap" / "summary.csv").read_bytes() == before["summary.csv"]
    assert leftovers(work) == []

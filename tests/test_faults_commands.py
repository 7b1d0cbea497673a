"""Fault injection for the commands beside the stages: predict, export, trace, query, al,
a killed ``--force`` redo, and a real full disk under predict and export.

Each command is SIGKILLed at named points (tests/faults.py), then run again as it was: the
result equals an uninterrupted run's (bit for bit on CPU; predict's summary but its
timings), nothing complete is lost, and no orphan is left (no ``.<out>.partial``/``.lock``
beside an output folder, no temporary file, no unfinished redo). A killed ``train --force``
continues with ``--force --resume`` from the redo's own checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, sets_args, shared
from test_faults import cli, killed, leftovers, same_run, snapshot
from test_malformed import fill, tmpfs
from typer.testing import CliRunner

from falsecli.cli import app
from falsecli.core.layout import STATE

SMALL = TINY + ["data.synthetic.shape=[12,13,29]", "data.synthetic.test_shape=[6,13,29]",
                "train.epochs=2", "train.keep_every=1", "heatmap.figures=0",
                "predict.batch_size=4", "transfer.checkpoint_every=2", "trace.top=2"]
ARGS = [*sets_args(SMALL), "--quiet"]
PREDICT = ("predict", "--format", "segy")
TRACE = ("trace", "--section", "inline_0000")
AL = ("al", "--initial", 4, "--budget", 2, "--seeds", 0, "--epochs", 2, "--rounds", 1,
      "--strategies", "switch")
ROUND0 = "al/switch/seed0/round0"
#: predict's summary values that are timings
TIMINGS = ("predict_seconds", "voxels_per_s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Uninterrupted train, heatmap, rank, transfer, predict, export and trace in ``w``; al
    in ``al``."""
    root = shared(tmp_path_factory.mktemp("reference"))
    work = root / "w"
    for command in (["train"], ["heatmap"], ["rank"], ["transfer"],
                    [*PREDICT, "--out", root / "p"], ["export", "--out", root / "e"], TRACE):
        cli(*command, "-w", work, *ARGS)
    cli(*AL, "-w", root / "al", *ARGS)
    return root


def upstream(reference: Path, tmp_path: Path, *stages: str) -> Path:
    """A workdir holding copies of the reference's ``stages``."""
    work = tmp_path / "w"
    for stage in stages:
        shutil.copytree(reference / "w" / stage, work / stage)
    return work


def orphans(out: Path) -> list[str]:
    """What a build of the folder ``out`` may leave beside it: ``.<out>.partial`` and
    ``.<out>.lock``, ``.<out>.old``."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def same_prediction(a: Path, b: Path) -> None:
    """Two prediction folders are equal file for file (the summary but its timings)."""
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        if name.endswith("predict.json"):
            ja, jb = (json.loads(s[name]) for s in (sa, sb))
            for vol in (*ja["volumes"], *jb["volumes"]):
                for key in (*TIMINGS, "outputs"):
                    del vol[key]
            assert {**ja, "model": ""} == {**jb, "model": ""}  # the model's path aside
        else:
            assert sa[name] == sb[name], name


def test_predict_killed_anywhere_then_again(reference, tmp_path) -> None:
    work, out = upstream(reference, tmp_path, "train"), tmp_path / "p"
    for point in ("call:falsecli.method.inference.probabilities:2", "facies.sgy:1:during",
                  "predict.json:1:during"):
        killed(point, *PREDICT, "--out", out, "-w", work, *ARGS)
        assert not out.exists() and ".p.partial" in orphans(out), point  # what a kill leaves
    cli(*PREDICT, "--out", out, "-w", work, *ARGS)  # finds the killed build and removes it
    same_prediction(reference / "p", out)
    assert orphans(out) == []


def test_predict_force_killed_keeps_the_old_result(reference, tmp_path) -> None:
    work, out = upstream(reference, tmp_path, "train"), tmp_path / "p"
    shutil.copytree(reference / "p", out)
    before = snapshot(out)
    killed("call:falsecli.method.inference.probabilities:2", *PREDICT, "--force", "--out", out,
           "-w", work, *ARGS)
    assert snapshot(out) == before
    # killed after the new folder was swapped in, before the old one went: the new is whole
    killed("call:_recover_out:2", *PREDICT, "--force", "--out", out, "-w", work, *ARGS)
    same_prediction(reference / "p", out)
    assert (out / "predict.json").read_bytes() != before["predict.json"]
    assert ".p.partial" in orphans(out)
    cli(*PREDICT, "--force", "--out", out, "-w", work, *ARGS)
    same_prediction(reference / "p", out)
    assert orphans(out) == []


def test_export_killed_anywhere_then_again(reference, tmp_path) -> None:
    work, out = upstream(reference, tmp_path, "train", "heatmap"), tmp_path / "e"
    for point in ("forgetting.sgy:1:during", "export.json:1:during"):
        killed(point, "export", "--out", out, "-w", work, *ARGS)
        assert not out.exists(), point
    cli("export", "--out", out, "-w", work, *ARGS)
    assert snapshot(out) == snapshot(reference / "e")
    assert orphans(out) == []
    killed("switch.sgy:1:during", "export", "--force", "--out", out, "-w", work, *ARGS)
    assert snapshot(out) == snapshot(reference / "e")
    cli("export", "--force", "--out", out, "-w", work, *ARGS)
    assert snapshot(out) == snapshot(reference / "e") and orphans(out) == []


def test_trace_killed_anywhere_then_again(reference, tmp_path) -> None:
    work = upstream(reference, tmp_path, "train")
    folder = "trace/inline_0000"
    killed("manifest.json:1:during", *TRACE, "-w", work, *ARGS)  # its results all written
    cli(*TRACE, "-w", work, *ARGS)
    for name in ("influence.csv", "epochs.csv", "query.json"):
        assert (work / folder / name).read_bytes() == \
            (reference / "w" / folder / name).read_bytes(), name
    before = snapshot(work / folder)
    killed("epochs.csv:1:during", *TRACE, "--force", "-w", work, *ARGS)
    assert snapshot(work / folder) == before  # a killed redo leaves the complete trace
    assert leftovers(work)
    cli(*TRACE, "--force", "-w", work, *ARGS)
    assert leftovers(work) == []


def test_query_killed_anywhere_then_again(reference, tmp_path) -> None:
    work = tmp_path / "w"
    shutil.copytree(reference / "al" / ROUND0, work / ROUND0,
                    ignore=shutil.ignore_patterns("query"))
    args = ("query", "--run", ROUND0, "--set", "query.strategy=switch", "--set",
            "query.budget=2", "--set", "query.seed=0", "-w", work, *ARGS)
    for point in ("pool.csv:1:during", "chosen.png:1:after", "manifest.json:1:during"):
        killed(point, *args)
    cli(*args)
    for name in ("pool.csv", "chosen.json"):
        assert (work / ROUND0 / "query" / name).read_bytes() == \
            (reference / "al" / ROUND0 / "query" / name).read_bytes(), name
    assert leftovers(work) == []


def test_al_killed_mid_round_then_again(reference, tmp_path) -> None:
    work = tmp_path / "al"
    killed("chosen.json:1:during", *AL, "-w", work, *ARGS)  # in round 0's query
    killed("checkpoint.pt:1:after", *AL, "-w", work, *ARGS)  # in round 1's training
    assert (work / "al/switch/seed0/round1/checkpoint.pt").is_file()
    cli(*AL, "-w", work, *ARGS)
    for r in (0, 1):
        same_run(reference / "al" / f"al/switch/seed0/round{r}", work / f"al/switch/seed0/round{r}")
    assert (work / "al/curves.csv").read_bytes() == (reference / "al/al/curves.csv").read_bytes()
    assert leftovers(work) == []


def test_a_killed_force_redo_resumes(reference, tmp_path) -> None:
    """``train --force`` killed after its first epoch: the old run stays; ``--force
    --resume`` continues the redo from its checkpoint (its first epoch is not trained again:
    its metrics row, timing included, is the killed run's) to the uninterrupted run."""
    work = upstream(reference, tmp_path, "train")
    before = snapshot(work / "train")
    killed("checkpoint.pt:1:after", "train", "--force", "-w", work, *ARGS)
    assert snapshot(work / "train") == before
    redo = work / STATE / "redo" / "train"
    first = (redo / "metrics.jsonl").read_text().splitlines()[0]
    cli("train", "--force", "--resume", "-w", work, *ARGS)
    assert (work / "train" / "metrics.jsonl").read_text().splitlines()[0] == first
    same_run(reference / "w" / "train", work / "train")
    assert leftovers(work) == []


def test_a_killed_transfer_redo_resumes_the_generator_fit(reference, tmp_path) -> None:
    """``transfer --force`` killed in the generator's fit (its checkpoint at step 2 of 4):
    the old transfer stays; ``--force --resume`` fits on from step 2 to the uninterrupted
    run's generator and samples."""
    work = upstream(reference, tmp_path, "train", "heatmap", "rank", "transfer")
    before = snapshot(work / "transfer")
    killed("checkpoint.pt:1:after", "transfer", "--force", "-w", work, *ARGS)
    assert snapshot(work / "transfer") == before
    result = CliRunner().invoke(app, ["transfer", "--force", "--resume", "-w", str(work),
                                      *sets_args(SMALL), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["generator"] == "resumed"
    assert snapshot(work / "transfer")["samples.npz"] == before["samples.npz"]
    ga, gb = (torch.load(w / "transfer" / "generator.pt", weights_only=True)
              for w in (reference / "w", work))
    for part in ("encoder", "generator"):
        assert all(torch.equal(ga[part][k], gb[part][k]) for k in ga[part]), part
    assert leftovers(work) == []


# ---------------------------------------------------------------- a full disk


def refused(*args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@contextlib.contextmanager
def nearly_full(fs: Path, left: int):
    """The file system ``fs`` full but ``left`` bytes; freed again afterwards."""
    filler = fill(fs)
    os.truncate(filler, filler.stat().st_size - left)
    try:
        yield
    finally:
        filler.unlink()


def test_every_file_mapped_for_writing_is_reserved_first() -> None:
    """A file the package creates for a writable memory map has its space reserved
    (``files.reserve``) within the next lines, before any write into the map: else a full
    disk is a bus error, not a line."""
    root = Path(__file__).resolve().parents[1] / "falsecli"
    unreserved = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            mapped = "open_memmap(" in line or ("np.memmap(" in line and "+" in line)
            if mapped and not any("reserve(" in later for later in lines[i:i + 4]):
                unreserved.append(f"{path.relative_to(root)}:{i + 1}")
    assert unreserved == []


@pytest.mark.parametrize("left", [0, 96 * 1024])
def test_predict_onto_a_full_disk_is_one_line(reference, tmp_path, left) -> None:
    """A volume whose outputs (1 MB a result) do not fit: with 96 kB left, the result
    files are created (sparse) and would be mapped; writing into the mapping would be a bus
    error (SIGBUS, exit 135, no word) without their space reserved first."""
    volume = np.random.default_rng(0).normal(size=(8, 64, 512)).astype(np.float32)
    np.save(tmp_path / "big.npy", volume)
    work = upstream(reference, tmp_path, "train")
    with tmpfs(tmp_path / "fs", "4m") as fs, nearly_full(fs, left):
        out = fs / "p"
        line = refused("predict", "--input", tmp_path / "big.npy", "--out", out, "-w", work,
                       *ARGS)
        assert "No space left on device" in line and "free some space" in line, line
        # the output as the user will look for it, and (where a file was reserved) the space
        assert str(out) in line and ".partial" not in line, line
        assert left == 0 or (f"{out}/big/" in line and " needed, " in line), line
        assert sorted(p.name for p in fs.iterdir()) == ["filler"]  # no orphan
    assert snapshot(work / "train") == snapshot(reference / "w" / "train")


def test_export_onto_a_full_disk_is_one_line(reference, tmp_path) -> None:
    work = upstream(reference, tmp_path, "train", "heatmap")
    with tmpfs(tmp_path / "fs", "1m") as fs:
        with nearly_full(fs, 4096):
            line = refused("export", "--out", fs / "e", "-w", work, *ARGS)
            assert "No space left on device" in line and "free some space" in line, line
            assert sorted(p.name for p in fs.iterdir()) == ["filler"]
        cli("export", "--out", fs / "e", "-w", work, *ARGS)  # once there is space
        assert snapshot(fs / "e") == snapshot(reference / "e")

"""Malformed inputs through the real CLI: damaged artifacts, bad config files, odd workdir
states. Each must fail with exit code 1 and exactly one line on stderr, without a traceback
(nor click's bare "Aborted!"), and leave what was complete as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, sets_args, shared
from typer.testing import CliRunner

from falsecli.cli import app
from falsecli.core.files import save_npz
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = TINY + ["data.synthetic.shape=[12,13,29]", "data.synthetic.test_shape=[6,13,29]",
                "train.epochs=2", "heatmap.figures=0"]
ARGS = [*sets_args(SMALL), "--quiet"]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workdir with complete train, heatmap and rank stages."""
    work = shared(tmp_path_factory.mktemp("base"))
    for command in ("train", "heatmap", "rank"):
        result = run(command, "-w", work, *ARGS)
        assert result.exit_code == 0, result.output
    return work


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` read-only for this process: a read-only bind mount when running as root
    (root ignores permissions), else the permission bits."""
    if os.geteuid() != 0:
        for p in [p for p in path.rglob("*") if p.is_file()]:
            put(p, p.read_bytes())  # own files: the base's hard links keep their modes
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    for cmd in (["mount", "--bind", path, path], ["mount", "-o", "remount,bind,ro", path]):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", path], capture_output=True)
            pytest.skip("running as root without the right to mount: no read-only workdir")
    try:
        yield
    finally:
        # lazily: the failed command may still map a file of it (np.load's mmap)
        subprocess.run(["umount", "-l", path], check=True)


def put(path: Path, data: bytes) -> None:
    """Replace ``path`` (the base's files are hard links: never write through them)."""
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def cut(path: Path) -> None:
    put(path, path.read_bytes()[: path.stat().st_size // 2])


def npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


#: spoils a copy of the base workdir; ``stack`` holds what must last until the command ran
Damage = Callable[[Path, contextlib.ExitStack], None]


@dataclass(frozen=True)
class Case:
    """A malformed input: ``damage`` spoils a copy of the base workdir, then the command
    ``args`` (``{w}`` is that copy; ``-w {w}`` is added unless given) must fail in one line
    on stderr that contains ``needle``."""

    name: str
    damage: Damage
    args: tuple[str, ...]
    needle: str


def nothing(work: Path, stack: contextlib.ExitStack) -> None:
    """The input is malformed by the command line alone."""


def replaced(rel: Path | str, data: bytes) -> Damage:
    """The workdir's file ``rel`` replaced by ``data``."""
    return lambda work, stack: put(work / rel, data)


def truncated(rel: Path | str) -> Damage:
    """The workdir's file ``rel`` cut to half its size."""
    return lambda work, stack: cut(work / rel)


def json_with(rel: Path | str, key: str, value: object) -> Damage:
    """The workdir's JSON object ``rel`` with ``key`` set to ``value``."""
    def damage(work: Path, stack: contextlib.ExitStack) -> None:
        data = json.loads((work / rel).read_text())
        put(work / rel, json.dumps({**data, key: value}).encode())
    return damage


def json_without(rel: Path | str, key: str) -> Damage:
    """The workdir's JSON object ``rel`` without ``key``."""
    def damage(work: Path, stack: contextlib.ExitStack) -> None:
        data = json.loads((work / rel).read_text())
        put(work / rel, json.dumps({k: v for k, v in data.items() if k != key}).encode())
    return damage


def interrupted_with(checkpoint: bytes) -> Damage:
    """Training interrupted (no manifest), leaving ``checkpoint`` as its checkpoint.pt."""
    def damage(work: Path, stack: contextlib.ExitStack) -> None:
        (work / T / "manifest.json").unlink()
        put(work / T / "checkpoint.pt", checkpoint)
    return damage


def transfer_with(samples: bytes) -> Damage:
    """A complete transfer stage whose samples.npz holds ``samples``."""
    def damage(work: Path, stack: contextlib.ExitStack) -> None:
        with stage_run(work, "transfer", {}) as out:
            put(out.out("samples.npz"), samples)
    return damage


def correct_as_int64(work: Path, stack: contextlib.ExitStack) -> None:
    """correct.npy of the right values and the wrong dtype."""
    put(work / TR / "correct.npy", npy(np.load(work / TR / "correct.npy").astype(np.int64)))


def float_forgetting_maps(work: Path, stack: contextlib.ExitStack) -> None:
    """forgetting.npz holding float32 maps of the right shapes."""
    maps = {k: v.astype(np.float32) for k, v in np.load(work / H / "switch.npz").items()}
    (work / H / "forgetting.npz").unlink()
    save_npz(work / H / "forgetting.npz", **maps)


def heatmap_folder_a_file(work: Path, stack: contextlib.ExitStack) -> None:
    shutil.rmtree(work / H)
    put(work / H, b"x")


def read_only_workdir(work: Path, stack: contextlib.ExitStack) -> None:
    stack.enter_context(read_only(work))


def train_locked_by_another(work: Path, stack: contextlib.ExitStack) -> None:
    """Hold train's lock as another process resuming it would, with a checkpoint there."""
    stage = Stage(work, "train")
    stage.lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = stack.enter_context(open(stage.lock_path, "a+"))
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    (stage.path / "manifest.json").unlink()
    shutil.copy(stage.path / "model.pt", stage.path / "checkpoint.pt")


def other_class_samples() -> bytes:
    """samples of a survey with 10 classes: label 9 is not one of ours."""
    import io

    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((2, 29, 12), np.float32),
             labels=np.full((2, 29, 12), 9, np.uint8))
    return buf.getvalue()


class Foreign:
    """Pickled into a checkpoint: weights-only loading must refuse it."""


def pickled() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"model": Foreign()}, buf)
    return buf.getvalue()


T, H = Path("train"), Path("heatmap")
TR = T / "tracking"
HEAT, RANK = ("heatmap", "--force"), ("rank", "--force")
RETRAIN = ("retrain", "--aug", "transfer", "--seeds", "0")
YAML = ("train", "-c", "{w}/c.yaml")
CASES = [
    # ---- damaged artifacts
    Case("empty correct.npy", replaced(TR / "correct.npy", b""), HEAT,
         "correct.npy: not a readable .npy file"),
    Case("empty switch.npy", replaced(TR / "switch.npy", b""), HEAT,
         "switch.npy: not a readable .npy file"),
    Case("empty labels.npy", replaced(TR / "labels.npy", b""), HEAT,
         "labels.npy: not a readable .npy file"),
    Case("truncated correct.npy", truncated(TR / "correct.npy"), HEAT, "correct.npy"),
    Case("correct.npy int64", correct_as_int64, HEAT, "correct.npy: expected uint8"),
    Case("sections.json not JSON", replaced(TR / "sections.json", b"{"), HEAT,
         "sections.json: unreadable or not JSON"),
    Case("sections.json a list", replaced(TR / "sections.json", b"[]"), HEAT,
         "sections.json: must be an object"),
    Case("sections.json n_pixels text", json_with(TR / "sections.json", "n_pixels", "many"),
         HEAT, "sections.json: must be an object"),
    Case("sections.json ignore_index 300", json_with(TR / "sections.json", "ignore_index", 300),
         HEAT, "ignore_index must be 0-255"),
    Case("train manifest a list", replaced(T / "manifest.json", b"[1]"), HEAT,
         "a JSON list, not a manifest"),
    Case("train manifest {} then train", replaced(T / "manifest.json", b"{}"), ("train",),
         "redo it with --force"),
    Case("train manifest cut then train", truncated(T / "manifest.json"), ("train",),
         "manifest.json: unreadable or not JSON"),
    Case("train manifest status running", json_with(T / "manifest.json", "status", "running"),
         HEAT, "status is 'running'"),
    Case("empty forgetting.npz", replaced(H / "forgetting.npz", b""), RANK,
         "forgetting.npz: unreadable"),
    Case("float forgetting maps", float_forgetting_maps, RANK, "is float32, not uint16"),
    Case("heatmap manifest without epochs", json_without(H / "manifest.json", "epochs"), RANK,
         "not a heatmap manifest"),
    Case("empty ranking.csv", replaced(Path("rank") / "ranking.csv", b""), ("transfer",),
         "ranking.csv: no column class"),
    Case("ranking.csv bad number", replaced(
        Path("rank") / "ranking.csv",
        b"class,rank,section,density,events,class_pixels\nscruff,one,inline_0000,1,1,1\n"),
         ("transfer",), "ranking.csv: line 2"),
    Case("empty metrics.jsonl", replaced(T / "metrics.jsonl", b"{\n"), ("report",),
         "metrics.jsonl: missing or unreadable"),
    Case("eval.json cut", truncated(T / "eval.json"), ("report",),
         "eval.json: unreadable or not JSON"),
    Case("pickled checkpoint", interrupted_with(pickled()), ("train", "--resume"),
         "pickled Python objects besides tensors, which could run code, so it will not be "
         "loaded"),
    Case("empty checkpoint", interrupted_with(b""), ("train", "--resume"),
         "checkpoint.pt: not a falsecli checkpoint (empty or cut short)"),
    Case("empty samples.npz", transfer_with(b""), RETRAIN, "samples.npz: not a samples file"),
    Case("samples of 10 classes", transfer_with(other_class_samples()), RETRAIN,
         "label ids [9] are not classes 0..5"),
    # ---- config files
    Case("yaml syntax error", replaced("c.yaml", b"train:\n  epochs: [1, 2\n"), YAML,
         "c.yaml:3:1: expected ','"),
    Case("yaml tab indent", replaced("c.yaml", b"train:\n\tepochs: 2\n"), YAML,
         "c.yaml:2:1: found character"),
    Case("yaml top-level list", replaced("c.yaml", b"- 1\n"), YAML,
         "the top level must be a mapping"),
    Case("config is a folder", nothing, ("train", "-c", "{w}/train"),
         "cannot read it (Is a directory)"),
    Case("config not UTF-8", replaced("c.yaml", b"\xff\xfe\x00"), YAML,
         "cannot read it (not UTF-8 text)"),
    Case("seismic is a folder", nothing,
         ("inspect", "--set", "data.source=files", "--set", "data.seismic={w}/train", "--set",
          "data.labels={w}/train"), "train: a folder, not a volume file"),
    # ---- workdir states
    Case("workdir is a file", replaced("f", b"x"), ("train", "-w", "{w}/f"),
         "the workdir is a file"),
    Case("stage folder is a file", heatmap_folder_a_file, ("heatmap",), "a file is in the way"),
    Case("read-only, complete", read_only_workdir, ("train",), "train: already complete"),
    Case("read-only, --force", read_only_workdir, HEAT,
         "Read-only file system — check its permissions"),
    Case("plain train while another resumes", train_locked_by_another, ("train",),
         "another falsecli process is writing"),
]


def fails_in_one_line(base: Path, tmp_path: Path, case: Case, sets: list[str]) -> Path:
    """Run ``case`` on a copy of the workdir ``base`` with ``sets`` (``{w}`` in its
    arguments and needle is the copy): exit 1, one line on stderr holding the needle, no
    traceback, the complete training run neither retrained nor touched. Returns the copy."""
    work = tmp_path / "w"
    shutil.copytree(base, work, copy_function=os.link)
    with contextlib.ExitStack() as stack:
        case.damage(work, stack)
        args = [str(a).format(w=work) for a in case.args]
        before = {p: p.stat().st_mtime_ns for p in (work / T).rglob("*") if p.is_file()} \
            if (work / T / "model.pt").exists() else {}
        result = run(*args[:1], *([] if "-w" in args else ["-w", work]), *args[1:], *sets)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1, (result.exit_code, result.output)
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.output and "Aborted" not in result.output
        assert case.needle.format(w=work) in lines[0], lines[0]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists())
    return work


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_one_line(base, tmp_path, case: Case) -> None:
    fails_in_one_line(base, tmp_path, case, ARGS)


def test_every_stage_of_the_workflow_has_a_malformed_case() -> None:
    """Each stage reads what an earlier one wrote (train: its checkpoint and config files):
    a stage added to the workflow needs a case of a damaged input of its own."""
    from falsecli.stages.pipeline import steps

    assert {step.name for step in steps()} <= {case.args[0] for case in CASES}


# ---------------------------------------------------------------- a full disk


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small file system of its own at ``path`` (root only)."""
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the injected ENOSPC test covers it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=True)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for block in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * block)
    return filler


def refused_in_one_line(*args: object, needle: str) -> None:
    result = run(*args, *ARGS)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert needle in lines[0] and "Traceback" not in result.output, lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_really_full_disk_loses_nothing_complete(base, tmp_path) -> None:
    """ENOSPC from the kernel (a full tmpfs), for a redo of heat maps and of training: one
    line, the complete results untouched, no half-built redo; once space is freed the redo
    completes."""
    with tmpfs(tmp_path / "fs", "80m") as fs:
        work = fs / "w"
        for stage in ("train", "heatmap", ".falsecli"):
            shutil.copytree(base / stage, work / stage)
        before = {s: snapshot(work / s) for s in ("train", "heatmap")}
        filler = fill(fs)
        for command in ("heatmap", "train"):
            refused_in_one_line(command, "--force", "-w", work,
                                needle="No space left on device — free some space")
            assert {s: snapshot(work / s) for s in before} == before, command
            assert not any((work / ".falsecli" / "redo").iterdir())
        filler.unlink()
        assert run("heatmap", "--force", "-w", work, *ARGS).exit_code == 0
        assert snapshot(work / "heatmap")["manifest.json"] != before["heatmap"]["manifest.json"]
        assert not any((work / ".falsecli" / "redo").iterdir())


def test_an_injected_full_disk_loses_nothing_complete(base, tmp_path, monkeypatch) -> None:
    """The same without root: numpy's array writer fails as a full disk makes it fail."""
    work = tmp_path / "w"
    shutil.copytree(base, work)
    before = snapshot(work / "heatmap")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", full)
    refused_in_one_line("heatmap", "--force", "-w", work,
                        needle="forgetting.npz: No space left on device — free some space")
    assert snapshot(work / "heatmap") == before
    assert not any((work / ".falsecli" / "redo").iterdir())
    assert not [p for p in work.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("encoder, said", [
    (torch.zeros(2), "config, encoder, generator and training must be mappings"),
    ({"w": torch.zeros(2)}, "its weights do not fit the generator"),
])
def test_a_generator_of_the_wrong_structure_is_trained_again(base, tmp_path, encoder,
                                                             said) -> None:
    """A loadable generator.pt of the right training config that is not ours (wrong
    mappings, or weights of another shape), left by an interrupted transfer: said in one
    line and ignored, never a traceback; transfer trains the generator again and replaces
    it."""
    from falsecli.core import checkpoint
    from falsecli.core.config import resolve
    from falsecli.stages.transfer import GENERATOR, generator_config

    work = tmp_path / "w"
    shutil.copytree(base, work, copy_function=os.link)
    path = work / "transfer" / GENERATOR
    path.parent.mkdir()
    checkpoint.save(path, {"config": generator_config(resolve(sets=SMALL)), "training": {},
                           "encoder": encoder, "generator": {}})
    result = run("transfer", "-w", work, *sets_args(SMALL), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["generator"] == "trained"
    ignored = [line for line in result.stderr.splitlines() if "ignoring" in line]
    assert len(ignored) == 1 and str(path) in ignored[0] and said in ignored[0], result.stderr
    assert "it is trained again" in ignored[0] and "Traceback" not in result.stderr
    stored = torch.load(path, weights_only=True)
    assert isinstance(stored["encoder"], dict) and stored["generator"]


def test_an_unreadable_input_is_one_line(tmp_path) -> None:
    """Permission denied on the seismic file. Root reads anything, so as root the command runs
    without the capabilities that bypass file permissions."""
    seismic = tmp_path / "s.npy"
    np.save(seismic, np.zeros((4, 4, 4), np.float32))
    seismic.chmod(0)
    args = ["inspect", "--set", "data.source=files", "--set", f"data.seismic={seismic}",
            "--set", f"data.labels={seismic}"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        proc = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                               sys.executable, "-m", "falsecli", *args], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        code, stderr = proc.returncode, proc.stderr
    else:
        result = run(*args)
        code, stderr = result.exit_code, result.stderr
    assert code == 1 and stderr.strip().splitlines() == [
        f"falsecli inspect: {seismic}: Permission denied — check its permissions (a workdir "
        "must be writable) or use another path"]

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
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, sets_args
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
    work = tmp_path_factory.mktemp("base")
    for command in ("train", "heatmap", "rank"):
        result = run(command, "-w", work, *ARGS)
        assert result.exit_code == 0, result.output
    return work


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` read-only for this process: a read-only bind mount when running as root
    (root ignores permissions), else the permission bits."""
    if os.geteuid() != 0:
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


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    put(path, json.dumps(change(data)).encode())


def with_key(data: dict, key: str, value: object) -> dict:
    data[key] = value
    return data


def fake_transfer(work: Path, samples: bytes) -> None:
    """A complete transfer stage whose samples.npz holds ``samples``."""
    with stage_run(work, "transfer", {}) as out:
        put(out.out("samples.npz"), samples)


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


def hold_lock(work: Path, name: str, stack: contextlib.ExitStack) -> None:
    """Hold ``name``'s lock as another process would, with a checkpoint in its folder."""
    stage = Stage(work, name)
    stage.lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = stack.enter_context(open(stage.lock_path, "a+"))
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    (stage.path / "manifest.json").unlink()
    shutil.copy(stage.path / "model.pt", stage.path / "checkpoint.pt")


T, H = Path("train"), Path("heatmap")
TR = T / "tracking"
#: case id -> (setup(work, stack) returning the CLI arguments, what stderr must contain)
CASES: dict[str, tuple[Callable[[Path, contextlib.ExitStack], list], str]] = {
    # ---- damaged artifacts
    "empty correct.npy": (lambda w, s: (put(w / TR / "correct.npy", b""), ["heatmap", "--force"])[1],
                          "correct.npy: not a readable .npy file"),
    "empty switch.npy": (lambda w, s: (put(w / TR / "switch.npy", b""), ["heatmap", "--force"])[1],
                         "switch.npy: not a readable .npy file"),
    "empty labels.npy": (lambda w, s: (put(w / TR / "labels.npy", b""), ["heatmap", "--force"])[1],
                         "labels.npy: not a readable .npy file"),
    "truncated correct.npy": (lambda w, s: (cut(w / TR / "correct.npy"), ["heatmap", "--force"])[1],
                              "correct.npy"),
    "correct.npy int64": (lambda w, s: (put(w / TR / "correct.npy", npy(np.load(
        w / TR / "correct.npy").astype(np.int64))), ["heatmap", "--force"])[1],
        "correct.npy: expected uint8"),
    "sections.json not JSON": (lambda w, s: (put(w / TR / "sections.json", b"{"), ["heatmap", "--force"])[1],
                               "sections.json: unreadable or not JSON"),
    "sections.json a list": (lambda w, s: (put(w / TR / "sections.json", b"[]"), ["heatmap", "--force"])[1],
                             "sections.json: must be an object"),
    "sections.json n_pixels text": (lambda w, s: (edit_json(w / TR / "sections.json", lambda d: with_key(
        d, "n_pixels", "many")), ["heatmap", "--force"])[1], "sections.json: must be an object"),
    "sections.json ignore_index 300": (lambda w, s: (edit_json(w / TR / "sections.json", lambda d: with_key(
        d, "ignore_index", 300)), ["heatmap", "--force"])[1], "ignore_index must be 0-255"),
    "train manifest a list": (lambda w, s: (put(w / T / "manifest.json", b"[1]"), ["heatmap", "--force"])[1],
                              "a JSON list, not a manifest"),
    "train manifest {} then train": (lambda w, s: (put(w / T / "manifest.json", b"{}"), ["train"])[1],
                                     "redo it with --force"),
    "train manifest cut then train": (lambda w, s: (cut(w / T / "manifest.json"), ["train"])[1],
                                      "manifest.json: unreadable or not JSON"),
    "train manifest status running": (lambda w, s: (edit_json(w / T / "manifest.json", lambda d: with_key(
        d, "status", "running")), ["heatmap", "--force"])[1], "status is 'running'"),
    "empty forgetting.npz": (lambda w, s: (put(w / H / "forgetting.npz", b""), ["rank", "--force"])[1],
                             "forgetting.npz: unreadable"),
    "float forgetting maps": (lambda w, s: (save_npz(_fresh(w / H / "forgetting.npz"), **{
        k: v.astype(np.float32) for k, v in np.load(w / H / "switch.npz").items()}),
        ["rank", "--force"])[1], "is float32, not uint16"),
    "heatmap manifest without epochs": (lambda w, s: (edit_json(w / H / "manifest.json", lambda d: {
        k: v for k, v in d.items() if k != "epochs"}), ["rank", "--force"])[1], "not a heatmap manifest"),
    "empty ranking.csv": (lambda w, s: (put(w / "rank" / "ranking.csv", b""), ["transfer"])[1],
                          "ranking.csv: no column class"),
    "ranking.csv bad number": (lambda w, s: (put(w / "rank" / "ranking.csv",
        b"class,rank,section,density,events,class_pixels\nscruff,one,inline_0000,1,1,1\n"),
        ["transfer"])[1], "ranking.csv: line 2"),
    "empty metrics.jsonl": (lambda w, s: (put(w / T / "metrics.jsonl", b"{\n"), ["report"])[1],
                            "metrics.jsonl: missing or unreadable"),
    "eval.json cut": (lambda w, s: (cut(w / T / "eval.json"), ["report"])[1],
                      "eval.json: unreadable or not JSON"),
    "pickled checkpoint": (lambda w, s: ((w / T / "manifest.json").unlink(),
                                         put(w / T / "checkpoint.pt", pickled()),
                                         ["train", "--resume"])[2],
                           "pickled Python objects besides tensors, which could run code, so it "
                           "will not be loaded"),
    "empty checkpoint": (lambda w, s: ((w / T / "manifest.json").unlink(),
                                       put(w / T / "checkpoint.pt", b""), ["train", "--resume"])[2],
                         "checkpoint.pt: not a falsecli checkpoint (empty or cut short)"),
    "empty samples.npz": (lambda w, s: (fake_transfer(w, b""),
                                        ["retrain", "--aug", "transfer", "--seeds", "0"])[1],
                          "samples.npz: not a samples file"),
    "samples of 10 classes": (lambda w, s: (fake_transfer(w, other_class_samples()),
                                            ["retrain", "--aug", "transfer", "--seeds", "0"])[1],
                              "label ids [9] are not classes 0..5"),
    # ---- config files
    "yaml syntax error": (lambda w, s: (put(w / "c.yaml", b"train:\n  epochs: [1, 2\n"),
                                        ["train", "-c", w / "c.yaml"])[1], "c.yaml:3:1: expected ','"),
    "yaml tab indent": (lambda w, s: (put(w / "c.yaml", b"train:\n\tepochs: 2\n"),
                                      ["train", "-c", w / "c.yaml"])[1], "c.yaml:2:1: found character"),
    "yaml top-level list": (lambda w, s: (put(w / "c.yaml", b"- 1\n"), ["train", "-c", w / "c.yaml"])[1],
                            "the top level must be a mapping"),
    "config is a folder": (lambda w, s: ["train", "-c", w / T], "cannot read it (Is a directory)"),
    "config not UTF-8": (lambda w, s: (put(w / "c.yaml", b"\xff\xfe\x00"), ["train", "-c", w / "c.yaml"])[1],
                         "cannot read it (not UTF-8 text)"),
    "seismic is a folder": (lambda w, s: ["inspect", "--set", "data.source=files", "--set",
                                          f"data.seismic={w / T}", "--set", f"data.labels={w / T}"],
                            "train: a folder, not a volume file"),
    # ---- workdir states
    "workdir is a file": (lambda w, s: (put(w / "f", b"x"), ["train", "-w", w / "f"])[1],
                          "the workdir is a file"),
    "stage folder is a file": (lambda w, s: (shutil.rmtree(w / H), put(w / H, b"x"), ["heatmap"])[2],
                               "a file is in the way"),
    "read-only, complete": (lambda w, s: (s.enter_context(read_only(w)), ["train"])[1],
                            "train: already complete"),
    "read-only, --force": (lambda w, s: (s.enter_context(read_only(w)), ["heatmap", "--force"])[1],
                           "Read-only file system — check its permissions"),
    "plain train while another resumes": (lambda w, s: (hold_lock(w, "train", s), ["train"])[1],
                                          "another falsecli process is writing"),
}


def _fresh(path: Path) -> Path:
    path.unlink()
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_one_line(base, tmp_path, case) -> None:
    work = tmp_path / "w"
    shutil.copytree(base, work, copy_function=os.link)
    with contextlib.ExitStack() as stack:
        setup, needle = CASES[case]
        args = [str(a) for a in setup(work, stack)]
        before = {p: p.stat().st_mtime_ns for p in (work / T).rglob("*") if p.is_file()} \
            if (work / T / "model.pt").exists() else {}
        result = run(*args[:1], *([] if "-w" in args else ["-w", work]), *args[1:], *ARGS)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1, (result.exit_code, result.output)
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.output and "Aborted" not in result.output
        assert needle in lines[0], lines[0]
    # the complete training run was neither retrained nor touched
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists())


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25


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


def test_a_generator_of_the_wrong_structure_is_trained_again(tiny_cfg, tmp_path) -> None:
    """A loadable generator.pt that is not ours (wrong mappings, or weights of another shape)
    is said and ignored, never a traceback: transfer trains the generator again."""
    from falsecli.core import checkpoint
    from falsecli.stages import transfer as tr

    path = tmp_path / "generator.pt"
    keys = {"config": tr.generator_config(tiny_cfg), "training": {}}
    checkpoint.save(path, {**keys, "encoder": torch.zeros(2), "generator": {}})
    assert tr._stored_generator(path) is None
    checkpoint.save(path, {**keys, "encoder": {"w": torch.zeros(2)}, "generator": {}})
    stored = tr._stored_generator(path)
    assert stored is not None and not tr._load_weights(tr._new_model(tiny_cfg), stored, path)


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

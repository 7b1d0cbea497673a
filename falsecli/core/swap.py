"""Writing a stage: its lock, and a redo built beside the complete result and swapped in.

A stage is written under an exclusive lock. A redo of a complete stage builds the new result
in ``<workdir>/.falsecli/redo/`` and exchanges it with the old folder in one step (Linux
``renameat2``) only once its manifest is written, so a failed or killed redo leaves the old
result; :func:`stage_run` cleans up after a killed writer before it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from falsecli.core.config import remember_config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import exchange, fs_error, is_temp, make_dir
from falsecli.core.layout import TRAIN
from falsecli.core.manifest import MANIFEST, Stage, StageRun


class StageComplete(FalseCliError):
    """Raised when a complete stage would be redone without ``--force``."""


@contextlib.contextmanager
def lock(stage: Stage) -> Iterator[None]:
    """An exclusive advisory lock on the stage, released when the process dies. The lock file
    lives in ``<workdir>/.falsecli/locks/``, not in the stage folder that a redo swaps."""
    make_dir(stage.lock_path.parent)
    try:
        fh = open(stage.lock_path, "a+")
    except OSError as exc:
        raise fs_error(exc, stage.lock_path) from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise stage.busy_error() from None
        yield
    finally:
        fh.close()


def _refuse_complete(stage: Stage) -> None:
    """Refuse to redo a complete stage without --force (a corrupt manifest says so itself);
    reads only, so it works on a read-only workdir."""
    stage.manifest()
    raise StageComplete(f"{stage.name}: already complete in {stage.path} — use --force to redo it")


def _nested(stage: Stage, folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` (a version of ``stage``'s folder) that are stages of their own
    (a retraining run's heat maps): they have a manifest or have been locked as a stage."""
    if not folder.is_dir():
        return []
    return [child for child in folder.iterdir() if child.is_dir() and (
        (child / MANIFEST).exists()
        or Stage(stage.workdir, f"{stage.name}/{child.name}").lock_path.exists())]


def _clean(stage: Stage, folder: Path, *, everything: bool) -> None:
    """Remove the temporary files killed writes left in ``folder`` (``everything``: all but
    nested stages), never entering a nested stage, which has its own lock."""
    nested = set(_nested(stage, folder))

    def walk(path: Path) -> None:
        for child in path.iterdir():
            if child in nested:
                continue
            if everything:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            elif child.is_dir():
                walk(child)
            elif is_temp(child.name):
                child.unlink()

    if folder.is_dir():
        walk(folder)


def _old(stage: Stage) -> Path:
    return stage.redo_path.with_name(stage.redo_path.name + ".old")


def _swap_in(stage: Stage, new: Path) -> None:
    """Make the complete result in ``new`` the stage folder, then drop the old one; nested
    stages of the old folder (a run's heat maps) move into the new one, where their manifests'
    inputs tell whether they still match it. Where the folders cannot be exchanged in one step
    the old folder is renamed aside first; :func:`_recover` undoes a kill between the two."""
    if not exchange(stage.path, new):
        os.replace(stage.path, _old(stage))
        os.replace(new, stage.path)
        os.replace(_old(stage), new)
    _adopt(stage, new)


def _adopt(stage: Stage, old: Path) -> None:
    """Move the nested stages of ``old`` that the stage folder lacks into it, then remove
    ``old``."""
    for child in _nested(stage, old):
        if not (stage.path / child.name).exists():
            os.replace(child, stage.path / child.name)
    shutil.rmtree(old)


def _recover(stage: Stage) -> None:
    """Clean up after a process killed while writing ``stage`` (called under its lock): put
    back a complete folder renamed aside, and drop an unfinished redo."""
    for leftover in (_old(stage), stage.redo_path):
        if not leftover.exists():
            continue
        if stage.path.exists():
            _adopt(stage, leftover)
        else:  # killed between the two renames of a swap: the old folder goes back
            os.replace(leftover, stage.path)


@contextlib.contextmanager
def stage_run(
    workdir: Path,
    name: str,
    config: dict[str, Any],
    *,
    upstream: list[Stage] = (),  # type: ignore[assignment]
    force: bool = False,
    keep: bool = False,
    seed: int | None = None,
    device: str | None = None,
) -> Iterator[StageRun]:
    """Open stage ``name`` for writing.

    Refuses when an upstream stage is incomplete, when another process holds the stage, or
    when the stage is complete (or has a corrupt manifest) and ``force`` is false. With
    ``force`` a complete stage is rebuilt in ``<workdir>/.falsecli/redo/`` and swapped in
    only when its manifest is written, so a failed or killed redo leaves the old result. An
    incomplete stage is written in place, emptied first unless ``keep`` (training resumes from
    its checkpoint). Leftovers of killed writes go before the run starts and after it ends.
    """
    stage = Stage(Path(workdir), name)
    if stage.workdir.exists() and not stage.workdir.is_dir():
        raise FalseCliError(f"{stage.workdir}: the workdir is a file, not a folder — choose "
                            "another -w")
    inputs = {up.name: (up.require(name), up.digest())[1] for up in upstream}
    if stage.manifest_path.exists() and not force:
        _refuse_complete(stage)
    with lock(stage):
        try:
            _recover(stage)
        except OSError as exc:
            raise fs_error(exc) from None
        redo = stage.manifest_path.exists()
        if redo and not force:
            _refuse_complete(stage)
        folder = stage.redo_path if redo else stage.path
        make_dir(folder)
        try:
            _clean(stage, folder, everything=not keep or redo)
        except OSError as exc:
            raise fs_error(exc) from None
        run = StageRun(stage, config, inputs, seed=seed, device=device, folder=folder)
        try:
            yield run
            run.finish()
        except BaseException:
            if redo:  # a failed redo: the complete result stays, the half-built one goes
                shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            if redo:
                _swap_in(stage, folder)
            run.folder = stage.path
            _clean(stage, stage.path, everything=False)
        except OSError as exc:
            raise fs_error(exc) from None
        # once complete (a refused or failed stage leaves the workdir's settings alone);
        # train/ defines the workdir's data and model: a forced retraining rewrites them
        remember_config(Path(workdir), config, replace=name == TRAIN)

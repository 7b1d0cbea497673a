"""Writing a stage: its lock, and a redo built beside the complete result and swapped in.

A stage is written under an exclusive lock. A redo of a complete stage builds the new result
in ``<workdir>/.falsecli/redo/`` and exchanges it with the old folder in one step (Linux
``renameat2``) only once its manifest is written, so a failed or killed redo leaves the old
result; :func:`stage_run` cleans up after a killed writer before it starts (and keeps a
killed redo that resumes). :func:`out_folder` does the same for a folder of the user's
choosing (predict's and export's ``--out``), beside it rather than in a workdir.
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
from falsecli.core.files import UMASK, exchange, fs_error, is_temp, make_dir
from falsecli.core.layout import TRAIN
from falsecli.core.manifest import MANIFEST, Stage, StageRun


class StageComplete(FalseCliError):
    """Raised when a complete stage would be redone without ``--force``."""


@contextlib.contextmanager
def lock_file(path: Path, busy: FalseCliError, *, remove: bool = False) -> Iterator[None]:
    """An exclusive advisory lock on the file ``path``, released when the process dies;
    ``busy`` is raised when another process holds it. ``remove``: the lock file goes when
    the lock is released (a lock beside a user's folder must not stay there); a process
    that locked a file another one removed meanwhile holds nothing, and is refused too."""
    make_dir(path.parent)
    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise fs_error(exc, path) from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        if remove and not _same_file(path, fh):
            raise busy
        try:
            yield
        finally:
            if remove:
                path.unlink(missing_ok=True)
    finally:
        fh.close()


def _same_file(path: Path, fh: Any) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def lock(stage: Stage) -> Iterator[None]:
    """An exclusive lock on the stage. The lock file lives in ``<workdir>/.falsecli/locks/``,
    not in the stage folder that a redo swaps."""
    with lock_file(stage.lock_path, stage.busy_error()):
        yield


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


def _recover(stage: Stage, keep_redo: bool) -> None:
    """Clean up after a process killed while writing ``stage`` (called under its lock): put
    back a complete folder renamed aside, and drop an unfinished redo unless ``keep_redo``
    (it resumes)."""
    for leftover in (_old(stage), stage.redo_path):
        if not leftover.exists() or (keep_redo and leftover == stage.redo_path
                                     and stage.manifest_path.exists()):
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
    its checkpoint); so is the redo of a complete stage (``force`` and ``keep``: a killed
    redo resumes). Leftovers of killed writes go before the run starts and after it ends.
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
            _recover(stage, keep_redo=keep)
        except OSError as exc:
            raise fs_error(exc) from None
        redo = stage.manifest_path.exists()
        if redo and not force:
            _refuse_complete(stage)
        folder = stage.redo_path if redo else stage.path
        make_dir(folder)
        try:
            _clean(stage, folder, everything=not keep)
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


# ---------------------------------------------------------------- folders of the user's choosing


def partial_path(out: Path) -> Path:
    """Where the result for the folder ``out`` is built: one name per ``out``, so that the
    next run of the command finds what a killed one left."""
    return out.with_name(f".{out.name}.partial")


def _aside(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def _out_lock(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def out_folder(out: Path, command: str) -> Iterator[Path]:
    """Build the folder ``out`` (not a workdir stage: predict's and export's ``--out``) in
    :func:`partial_path` beside it, under a lock beside it, and swap it in as a whole at the
    end; a failed build is removed. A killed build's partial folder (and a complete folder
    renamed aside by a swap the kill interrupted) are cleaned up, or put back, by the next run
    of the command for ``out``, before it starts; the lock file goes when the run ends."""
    out = Path(os.path.abspath(out))  # '--out .' has a name to build beside, too
    busy = FalseCliError(f"{command}: another falsecli process is writing {out} — wait for it "
                         "to finish, or choose another --out")
    partial = partial_path(out)
    with lock_file(_out_lock(out), busy, remove=True):
        try:
            _recover_out(out)
            partial.mkdir()
        except OSError as exc:
            raise fs_error(exc, out) from None
        try:
            try:
                yield partial
            except FalseCliError as exc:  # name the files as the user will find them
                raise FalseCliError(str(exc).replace(str(partial), str(out))) from None
            os.chmod(partial, 0o777 & ~UMASK)
            if not (out.exists() and exchange(partial, out)):  # exchanged: partial is the old
                if out.exists():
                    os.replace(out, _aside(out))
                os.replace(partial, out)
            _recover_out(out)
        except OSError as exc:  # the disk is full, the folder read-only...
            where = str(exc.filename or out).replace(str(partial), str(out))
            raise fs_error(exc, where) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def _recover_out(out: Path) -> None:
    """Drop what a killed :func:`out_folder` left beside ``out``; put back a complete folder
    that a killed swap had renamed aside."""
    aside = _aside(out)
    if aside.exists():
        if out.exists():
            shutil.rmtree(aside)
        else:
            os.replace(aside, out)
    shutil.rmtree(partial_path(out), ignore_errors=True)

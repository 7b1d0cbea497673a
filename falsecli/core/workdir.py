"""The working directory: fixed stage paths, atomic writes, locks and manifests.

Every stage writes only below ``<workdir>/<stage>/`` and writes ``manifest.json`` last, so a
stage directory without a complete manifest is never mistaken for a result, whatever killed
the process that wrote it. Scripts can predict every path from the stage name alone.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import datetime as _dt
import errno
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import yaml

from falsecli import __version__
from falsecli.core.errors import FalseCliError

MANIFEST = "manifest.json"
#: the resolved config of a stage, beside its manifest: rerun it with ``-c <stage>/config.yaml``
CONFIG_YAML = "config.yaml"
#: the workdir's own folder: ``locks/<stage>.lock`` (outside the stage folders, which a redo
#: swaps) and ``redo/<stage>/``, where a redo builds its result beside the complete one
STATE = ".falsecli"
#: the keys every manifest has, and their types (a manifest without them is not trusted)
MANIFEST_KEYS = {"stage": str, "status": str, "config": dict, "inputs": dict, "outputs": list}
#: the temporary files of :func:`atomic_path` (a killed write leaves one behind)
_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?")
#: the manifest field holding the digest of a stage's output contents (:func:`content_digest`)
DIGEST = "digest"
#: the command that produces each top-level stage, for "run X first" hints
PRODUCER = {"train": "train", "heatmap": "heatmap", "rank": "rank", "transfer": "transfer",
            "report": "report"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def default_workdir() -> Path:
    """``$FALSECLI_WORKDIR``, else ``./falsecli-work``."""
    return Path(os.environ.get("FALSECLI_WORKDIR") or "falsecli-work")


def retrain_name(aug: str, seed: int) -> str:
    """Stage name of one retraining run: ``retrain/<aug>/seed<k>``."""
    return f"retrain/{aug}/seed{seed}"


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix,
                                   dir=path.parent)
    except OSError as exc:
        raise fs_error(exc, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from co-workers
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # the disk is full, the folder read-only...
            raise fs_error(exc, path) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (and what
    was there) as a whole, so a killed writer never leaves a half-written folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if not (path.exists() and _exchange(tmp, path)):  # exchanged: tmp holds the old one
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fs_error(exc: OSError, path: Path | str | None = None) -> FalseCliError:
    """One line for a failed file operation: the path, the system's reason, and the fix."""
    where = path if path is not None else (exc.filename or "a file")
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = ("free some space, then run the command again (an interrupted training "
               "continues with --resume); complete results were kept")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "check its permissions (a workdir must be writable) or use another path"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file is in the way of a folder; choose another path (-w for the workdir)"
    elif exc.errno == errno.EISDIR:
        fix = "it is a folder; give the path of a file"
    else:
        fix = "check the path and the disk"
    return FalseCliError(f"{where}: {reason} — {fix}")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A CSV table with a header of ``columns``, atomically (None is written empty, floats
    as Python's shortest round-trip form)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(workdir: Path, stage: str, name: str, columns: Mapping[str, Callable[[str], Any]]
             ) -> list[dict[str, Any]]:
    """The rows of the CSV table ``<workdir>/<stage>/<name>``, each value converted by its
    column's type; errors name the file and the command that rewrites it."""
    path = Path(workdir) / stage / name
    redo = f"redo it with 'falsecli {stage} --force -w {workdir}'"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise FalseCliError(f"{path}: no column {missing[0]} — {redo}")
            rows = [_typed(row, columns) for row in reader]
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing — run 'falsecli {stage} -w {workdir}' "
                            "first") from None
    except OSError as exc:
        raise FalseCliError(f"{path}: unreadable ({exc.strerror}) — {redo}") from None
    except (ValueError, csv.Error) as exc:
        raise FalseCliError(f"{path}: line {reader.line_num}: {exc} — {redo}") from None
    return rows


def _typed(row: dict[str, str | None], columns: Mapping[str, Callable[[str], Any]]
           ) -> dict[str, Any]:
    """One CSV row converted by ``columns``; ValueError names the first empty column."""
    empty = [c for c in columns if not row[c]]
    if empty:
        raise ValueError(f"no {empty[0]}")
    return {c: cast(row[c]) for c, cast in columns.items()}


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` (``np.load`` reads it) but at zlib level 1: at F3 scale
    level 6 takes ~10x longer than computing the heat maps, for ~1.5x smaller files."""

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, array in arrays.items():
                # a fixed entry date: equal arrays give equal bytes, so content digests
                # (Stage.digest) see no change when a stage rewrites the same result
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(entry, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)

    save_with(path, write)


def save_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Atomic write through any ``writer(tmp_path)`` (``torch.save``, ``fig.savefig``...)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_config(path: Path, cfg: Mapping[str, Any]) -> None:
    """A resolved config as YAML that ``-c`` reads back as the very same config."""
    write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None))


def remembered_config(workdir: Path) -> Path:
    """``<workdir>/config.yaml``: the settings of the workdir, written when its first stage
    completes (and by every training of ``train/``); later commands there start from them."""
    return Path(workdir) / CONFIG_YAML


def remember_config(workdir: Path, cfg: Mapping[str, Any], *, replace: bool = False) -> None:
    """Write the workdir's settings unless it has them already (or ``replace``)."""
    path = remembered_config(workdir)
    if replace or not path.is_file():
        write_config(path, cfg)


def read_json(path: Path, fix: str = "") -> Any:
    """The JSON document at ``path``; errors name the file and end with ``fix``."""
    tail = f" — {fix}" if fix else ""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing{tail}") from None
    except (OSError, ValueError) as exc:
        raise FalseCliError(f"{path}: unreadable or not JSON ({exc}){tail}") from None


# ---------------------------------------------------------------- stages


def versions() -> dict[str, str | None]:
    """Versions recorded in every manifest, read from package metadata so that stages which
    need no torch (heatmap, rank, report) do not pay for importing it."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": version("torch"),
            "torchvision": version("torchvision"), "numpy": version("numpy"),
            "segyio": version("segyio"), "cuda": _torch_cuda()}


def _torch_cuda() -> str | None:
    """The CUDA version torch was built with, from torch/version.py when torch isn't loaded."""
    if "torch" in sys.modules:
        return sys.modules["torch"].version.cuda
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    match = re.search(r"^cuda\b[^=]*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def content_digest(root: Path, outputs: Iterable[str]) -> str:
    """sha256 over the sorted relative paths and the bytes of the files ``outputs`` under
    ``root``: the same results give the same digest, whenever and however often written."""
    total = hashlib.sha256()
    for rel in sorted(set(outputs)):
        path = Path(root) / rel
        if not path.is_file():
            continue
        total.update(rel.encode() + b"\0")
        with open(path, "rb") as fh:
            total.update(hashlib.file_digest(fh, "sha256").digest())
    return total.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Stage:
    """One stage directory: ``train``, ``heatmap``, ..., or ``retrain/<aug>/seed<k>``."""

    workdir: Path
    name: str

    @property
    def path(self) -> Path:
        return Path(self.workdir) / self.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any] | None:
        """The manifest if the stage is complete, None if it has none. A manifest that cannot
        be read or lacks the keys of one is an error: the result it stands for is not trusted,
        nor replaced, until the user redoes the stage with --force."""
        path = self.manifest_path
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problem = f"unreadable or not JSON ({exc.strerror if isinstance(exc, OSError) else exc})"
        else:
            problem = _manifest_problem(data)
        if problem:
            raise FalseCliError(f"{path}: {problem} — the stage's result cannot be trusted; "
                                f"redo it with --force (falsecli {self._command()} --force "
                                f"-w {self.workdir})")
        return data

    def is_complete(self) -> bool:
        return self.manifest() is not None

    def is_fresh(self, upstream: Iterable[str] | None = None) -> bool:
        """Complete, and the content of every upstream stage it read is unchanged (a stage
        whose upstream was redone with other results is stale; one redone with the same
        results is not). With ``upstream``, it must also have read exactly those stages (a
        report is stale once a new run appears)."""
        manifest = self.manifest()
        if manifest is None:
            return False
        inputs = manifest.get("inputs", {})
        if upstream is not None and set(inputs) != set(upstream):
            return False
        for name, digest in inputs.items():
            upstream = Stage(self.workdir, name)
            if not upstream.is_complete() or upstream.digest() != digest:
                return False
        return True

    def digest(self) -> str:
        """The digest of the stage's output files' contents, recorded in its manifest when
        it completed (timestamps and wall times do not count). Manifests written before
        content digests existed fall back to the digest of the manifest itself."""
        manifest = self.manifest()
        if manifest is not None and manifest.get(DIGEST):
            return manifest[DIGEST]
        return hashlib.sha256(self.manifest_path.read_bytes()).hexdigest()

    def _command(self) -> str:
        """The command (with its options) that writes this stage."""
        parts = self.name.split("/")
        if parts[0] == "retrain" and len(parts) == 3:
            return f"retrain --aug {parts[1]} --seeds {parts[2].removeprefix('seed')}"
        if parts[-1] == "heatmap" and len(parts) > 1:
            return f"heatmap --run {'/'.join(parts[:-1])}"
        return PRODUCER.get(parts[0], parts[0])

    def require(self, for_stage: str) -> dict[str, Any]:
        """The manifest of this upstream stage, or an error saying which command to run."""
        manifest = self.manifest()
        if manifest is None:
            parts = self.name.split("/")
            if parts[0] == "retrain" and len(parts) == 3:
                what = "training run"
            elif parts[-1] == "heatmap" and len(parts) > 1:
                what = "heat maps"
            else:
                what = "training run" if parts[0] == "train" else f"complete {parts[0]} stage"
            raise FalseCliError(
                f"{for_stage}: no {what} in {self.path} — run "
                f"'falsecli {self._command()} -w {self.workdir}' first"
            )
        return manifest

    @property
    def lock_path(self) -> Path:
        return Path(self.workdir) / STATE / "locks" / (self.name.replace("/", "+") + ".lock")

    @property
    def redo_path(self) -> Path:
        """Where a redo builds the new result while the complete one stays in :attr:`path`."""
        return Path(self.workdir) / STATE / "redo" / self.name.replace("/", "+")

    def busy(self) -> bool:
        """Whether another process holds this stage's lock (it is writing the stage)."""
        try:
            fh = open(self.lock_path, "rb")
        except OSError:
            return False
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        return False

    def busy_error(self) -> FalseCliError:
        return FalseCliError(f"{self.name}: another falsecli process is writing {self.path} — "
                             "wait for it to finish")


def _manifest_problem(data: Any) -> str | None:
    """What makes ``data`` not a complete stage's manifest, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not a manifest"
    for key, kind in MANIFEST_KEYS.items():
        if not isinstance(data.get(key), kind):
            return f"no {key} ({kind.__name__}), so not a falsecli manifest"
    if data["status"] != "complete":
        return f"status is {data['status']!r}, not 'complete'"
    return None


@dataclass
class StageRun:
    """A stage being written: collects outputs, writes the manifest last on success.

    Files go to :attr:`path`: the stage folder itself, or, when a complete result is being
    redone, a folder beside it that replaces it only once the new result is whole.
    """

    stage: Stage
    config: dict[str, Any]
    inputs: dict[str, str]
    seed: int | None = None
    device: str | None = None
    #: config.yaml from the start, so that summaries a stage builds before finishing list it
    outputs: list[str] = field(default_factory=lambda: [CONFIG_YAML])
    extra: dict[str, Any] = field(default_factory=dict)
    started: str = field(default_factory=_now)
    #: the folder being written; the stage folder once the run is complete
    folder: Path | None = None
    #: files (relative) the run needs only while unfinished, removed after the manifest
    scratch: set[str] = field(default_factory=set)
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def path(self) -> Path:
        return self.folder if self.folder is not None else self.stage.path

    def out(self, relpath: str) -> Path:
        """Register ``relpath`` as an output and return its absolute path (parents created)."""
        if relpath not in self.outputs:
            self.outputs.append(relpath)
        path = self.path / relpath
        _make_dir(path.parent)
        return path

    def temp(self, relpath: str) -> Path:
        """The path of a file the unfinished run keeps (a checkpoint): removed right after the
        manifest, while the stage is still locked."""
        self.scratch.add(relpath)
        return self.path / relpath

    def finish(self) -> dict[str, Any]:
        """Write the resolved config as YAML (to rerun or diff the stage), then the manifest,
        last, because its presence is what marks the stage complete; then drop the scratch
        files, which a complete stage no longer needs."""
        write_config(self.out(CONFIG_YAML), self.config)
        manifest = {
            "stage": self.stage.name, "status": "complete", "falsecli_version": __version__,
            "config": self.config, "inputs": self.inputs, "outputs": sorted(self.outputs),
            "seed": self.seed, "device": self.device, "versions": versions(),
            "started": self.started, "finished": _now(),
            "wall_seconds": round(time.perf_counter() - self._t0, 3), **self.extra,
            DIGEST: content_digest(self.path, self.outputs),
        }
        write_json(self.path / MANIFEST, manifest)
        for rel in self.scratch:
            (self.path / rel).unlink(missing_ok=True)
        return manifest


class StageComplete(FalseCliError):
    """Raised when a complete stage would be redone without ``--force``."""


def _make_dir(path: Path) -> None:
    """``mkdir -p``, with a one-line error (a file in the way, a read-only workdir)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fs_error(exc, exc.filename or path) from None


@contextlib.contextmanager
def lock(stage: Stage) -> Iterator[None]:
    """An exclusive advisory lock on the stage, released when the process dies. The lock file
    lives in ``<workdir>/.falsecli/locks/``, not in the stage folder that a redo swaps."""
    _make_dir(stage.lock_path.parent)
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
            elif _TEMP.fullmatch(child.name):
                child.unlink()

    if folder.is_dir():
        walk(folder)


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` in one step (Linux renameat2 RENAME_EXCHANGE); False where
    the system or file system cannot."""
    func = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if func is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _old(stage: Stage) -> Path:
    return stage.redo_path.with_name(stage.redo_path.name + ".old")


def _swap_in(stage: Stage, new: Path) -> None:
    """Make the complete result in ``new`` the stage folder, then drop the old one; nested
    stages of the old folder (a run's heat maps) move into the new one, where their manifests'
    inputs tell whether they still match it. Where the folders cannot be exchanged in one step
    the old folder is renamed aside first; :func:`_recover` undoes a kill between the two."""
    if not _exchange(stage.path, new):
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
        _make_dir(folder)
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
        remember_config(Path(workdir), config, replace=name == "train")

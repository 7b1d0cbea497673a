"""The working directory: fixed stage paths, atomic writes, locks and manifests.

Every stage writes only below ``<workdir>/<stage>/`` and writes ``manifest.json`` last, so a
stage directory without a complete manifest is never mistaken for a result, whatever killed
the process that wrote it. Scripts can predict every path from the stage name alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import importlib.metadata
import importlib.util
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
LOCK = ".lock"
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from co-workers
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise FalseCliError(f"{path}: unreadable or not JSON ({exc})") from None


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
        """The manifest if the stage is complete, else None."""
        if not self.manifest_path.is_file():
            return None
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if data.get("status") == "complete" else None

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

    def require(self, for_stage: str) -> dict[str, Any]:
        """The manifest of this upstream stage, or an error saying which command to run."""
        manifest = self.manifest()
        if manifest is None:
            parts = self.name.split("/")
            if parts[0] == "retrain" and len(parts) == 3:
                what = "training run"
                cmd = f"retrain --aug {parts[1]} --seeds {parts[2].removeprefix('seed')}"
            elif parts[-1] == "heatmap" and len(parts) > 1:
                what = "heat maps"
                cmd = f"heatmap --run {'/'.join(parts[:-1])}"
            else:
                what = "training run" if parts[0] == "train" else f"complete {parts[0]} stage"
                cmd = PRODUCER.get(parts[0], parts[0])
            raise FalseCliError(
                f"{for_stage}: no {what} in {self.path} — run "
                f"'falsecli {cmd} -w {self.workdir}' first"
            )
        return manifest


@dataclass
class StageRun:
    """A stage being written: collects outputs, writes the manifest last on success."""

    stage: Stage
    config: dict[str, Any]
    inputs: dict[str, str]
    seed: int | None = None
    device: str | None = None
    #: config.yaml from the start, so that summaries a stage builds before finishing list it
    outputs: list[str] = field(default_factory=lambda: [CONFIG_YAML])
    extra: dict[str, Any] = field(default_factory=dict)
    started: str = field(default_factory=_now)
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def path(self) -> Path:
        return self.stage.path

    def out(self, relpath: str) -> Path:
        """Register ``relpath`` as an output and return its absolute path (parents created)."""
        if relpath not in self.outputs:
            self.outputs.append(relpath)
        path = self.path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finish(self) -> dict[str, Any]:
        """Write the resolved config as YAML (to rerun or diff the stage), then the manifest,
        last, because its presence is what marks the stage complete."""
        write_config(self.out(CONFIG_YAML), self.config)
        manifest = {
            "stage": self.stage.name, "status": "complete", "falsecli_version": __version__,
            "config": self.config, "inputs": self.inputs, "outputs": sorted(self.outputs),
            "seed": self.seed, "device": self.device, "versions": versions(),
            "started": self.started, "finished": _now(),
            "wall_seconds": round(time.perf_counter() - self._t0, 3), **self.extra,
            DIGEST: content_digest(self.path, self.outputs),
        }
        write_json(self.stage.manifest_path, manifest)
        return manifest


class StageComplete(FalseCliError):
    """Raised when a complete stage would be redone without ``--force``."""


@contextlib.contextmanager
def lock(path: Path, what: str) -> Iterator[None]:
    """An exclusive advisory lock on ``path/.lock``; released when the process dies."""
    path.mkdir(parents=True, exist_ok=True)
    fh = open(path / LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FalseCliError(
                f"{what}: another falsecli process is writing {path} — wait for it to finish"
            ) from None
        yield
    finally:
        fh.close()


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
    when the stage is complete and ``force`` is false. With ``force`` the old manifest goes
    first (so a killed redo cannot look complete) and, unless ``keep``, the old files too.
    ``keep`` leaves existing files in place: training uses it to resume from a checkpoint.
    """
    stage = Stage(Path(workdir), name)
    inputs = {up.name: (up.require(name), up.digest())[1] for up in upstream}
    with lock(stage.path, name):
        if stage.is_complete() and not force:
            raise StageComplete(
                f"{name}: already complete in {stage.path} — use --force to redo it"
            )
        with contextlib.suppress(FileNotFoundError):
            stage.manifest_path.unlink()
        if not keep:
            for child in stage.path.iterdir():
                if child.name == LOCK:
                    continue
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        run = StageRun(stage, config, inputs, seed=seed, device=device)
        yield run
        run.finish()
        # once complete (a refused or failed stage leaves the workdir's settings alone);
        # train/ defines the workdir's data and model: a forced retraining rewrites them
        remember_config(Path(workdir), config, replace=name == "train")

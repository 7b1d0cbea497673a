"""Stage folders and their manifests: what makes a result complete, fresh and trusted.

Every stage writes ``manifest.json`` last, so a stage folder without a complete manifest is
never mistaken for a result, whatever killed the process that wrote it. The manifest records
the config, the digests of the upstream results it read and of its own outputs, and the
versions it ran with.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from falsecli import __version__
from falsecli.core import layout
from falsecli.core.config import CONFIG_YAML, write_config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import make_dir, write_json

MANIFEST = "manifest.json"
#: the keys every manifest has, and their types (a manifest without them is not trusted)
MANIFEST_KEYS = {"stage": str, "status": str, "config": dict, "inputs": dict, "outputs": list}
#: the manifest field holding the digest of a stage's output contents (:func:`content_digest`)
DIGEST = "digest"


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
    """One stage folder of ``workdir``, by its name (:mod:`falsecli.core.layout`)."""

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
                                f"redo it with --force (falsecli {layout.command(self.name)} "
                                f"--force -w {self.workdir})")
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

    def require(self, for_stage: str) -> dict[str, Any]:
        """The manifest of this upstream stage, or an error saying which command to run (and,
        for a run, which run of the workdir has a name like it)."""
        manifest = self.manifest()
        if manifest is None:
            near = layout.nearest_run(self.name, self.workdir) if layout.is_run(self.name) else ""
            raise FalseCliError(
                f"{for_stage}: no {layout.what(self.name)} in {self.path}{near} — run "
                f"'falsecli {layout.command(self.name)} -w {self.workdir}' first")
        return manifest

    @property
    def lock_path(self) -> Path:
        return layout.lock_file(self.workdir, self.name)

    @property
    def redo_path(self) -> Path:
        """Where a redo builds the new result while the complete one stays in :attr:`path`."""
        return layout.redo_folder(self.workdir, self.name)

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
        make_dir(path.parent)
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


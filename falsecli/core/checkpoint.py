"""Checkpoints of interrupted stages, and the torch files of finished ones: one way to write
them (atomically, in the background when the loop must not wait), one way to read them (never
unpickling code, one line on a bad file), the random state they carry, and the one policy for
continuing an interrupted stage.

The policy: a stage whose folder holds a :data:`CHECKPOINT` but no complete manifest was
interrupted. It continues only when asked (``--resume``), is refused in one line without it,
and ``--force`` starts it over. Resuming with settings that change the run is refused, naming
the key.
"""

from __future__ import annotations

import functools
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import torch

from falsecli.core import console
from falsecli.core.errors import FalseCliError
from falsecli.core.files import save_with
from falsecli.core.manifest import Stage

CHECKPOINT = "checkpoint.pt"
#: the hint of every refusal about a stage's checkpoint
FORCE = "use --force to start over"
#: keys of :func:`capture_rng`'s state besides the named generators'
RNG_KEYS = ("torch", "cuda")


# ---------------------------------------------------------------- files


def save(path: Path, state: Any) -> None:
    """``torch.save`` of ``state`` at ``path``, atomically (a killed write leaves the old one)."""
    save_with(path, functools.partial(_save_file, state))


def _save_file(state: Any, path: Path) -> None:
    """Through a Python file, so that a full disk is an OSError (errno ENOSPC) like any other
    write's, not the RuntimeError of torch's own file writer."""
    with open(path, "wb") as fh:
        torch.save(state, fh)


def load(path: Path, what: str, fix: str, keys: Sequence[str] = (),
         sections: Sequence[str] = ()) -> dict[str, Any]:
    """A torch file of tensors and plain containers (``weights_only``: never pickled code)
    holding at least ``keys``, whose ``config`` has the mapping ``sections``. Errors name the
    file, the problem and ``fix`` in one line."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing — {fix}") from None
    except Exception as exc:  # noqa: BLE001 — bytes that are no torch file raise anything
        raise FalseCliError(f"{path}: not a falsecli {what} ({_reason(exc)}) — {fix}") from None
    if not isinstance(payload, dict):
        raise FalseCliError(f"{path}: not a falsecli {what} (it holds a "
                            f"{type(payload).__name__}, not a dict) — {fix}")
    config = payload.get("config")
    if (any(k not in payload for k in keys) or sections and (
            not isinstance(config, dict)
            or not all(isinstance(config.get(s), dict) for s in sections))):
        raise FalseCliError(f"{path}: not a falsecli {what} (it holds {sorted(payload)}) — "
                            f"{fix}")
    return payload


def _reason(exc: BaseException) -> str:
    """What went wrong reading a torch file, in a few words on one line (torch's own messages
    run over several lines)."""
    if isinstance(exc, pickle.UnpicklingError):  # weights_only refused it, or not a pickle
        if "weights only load failed" in str(exc).lower():
            return ("it holds pickled Python objects besides tensors, which could run code, "
                    "so it will not be loaded")
        return "not tensors and plain containers saved by torch"
    if isinstance(exc, EOFError):
        return "empty or cut short"
    if not isinstance(exc, (OSError, RuntimeError, ValueError)):  # torch's unpickler on junk
        return f"not a torch file: {type(exc).__name__} reading it"
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= 120 else first[:119] + "…"


def _snapshot(obj: Any, buffers: dict[tuple[Any, ...], torch.Tensor],
              key: tuple[Any, ...] = ()) -> Any:
    """``obj`` with every tensor copied (without waiting) into the host buffer kept in
    ``buffers`` under its place in ``obj``."""
    if isinstance(obj, torch.Tensor):
        buf = buffers.get(key)
        if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
            buf = buffers[key] = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=obj.is_cuda)
        return buf.copy_(obj.detach(), non_blocking=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v, buffers, (*key, k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v, buffers, (*key, i)) for i, v in enumerate(obj))
    return obj


def host_copy(obj: Any, buffers: dict[tuple[Any, ...], torch.Tensor] | None = None) -> Any:
    """``obj`` with every tensor copied to host memory: a copy that later steps cannot change
    while a thread writes it, and a file that loads without the training GPU. With
    ``buffers``, the copy reuses the memory of the previous one (pinned for GPU tensors, so
    they copy at full speed) instead of allocating anew."""
    out = _snapshot(obj, {} if buffers is None else buffers)
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return out


class BackgroundSaver:
    """Writes checkpoints in a thread, one at a time, so the next epoch does not wait for the
    disk; leaving the context waits until the last one is written (and raises its error)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def save(self, path: Path, state: dict[str, Any]) -> None:
        self.wait()  # the buffers are free again
        self._thread = threading.Thread(target=self._write,
                                        args=(path, host_copy(state, self._buffers)),
                                        name="falsecli-checkpoint")
        self._thread.start()

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        try:
            save(path, state)
        except Exception as exc:  # noqa: BLE001 (re-raised in the training thread by wait())
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wait()


# ---------------------------------------------------------------- random state


def capture_rng(device: torch.device, generators: Mapping[str, torch.Generator] = {}
                ) -> dict[str, torch.Tensor]:
    """torch's global CPU (and, on CUDA, ``device``'s) random state and that of each named
    generator, so that a resumed run continues the very same draws."""
    clash = set(generators) & set(RNG_KEYS)
    if clash:
        raise ValueError(f"generator names {sorted(clash)} are reserved")
    state = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in generators.items()}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, torch.Tensor], device: torch.device,
                generators: Mapping[str, torch.Generator] = {}) -> None:
    """Undo the draws since :func:`capture_rng` returned ``state``."""
    torch.set_rng_state(state["torch"])
    for key, gen in generators.items():
        gen.set_state(state[key])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------- resuming


def interrupted(stage: Stage, *, resume: bool, force: bool,
                progress: Callable[[Path], str]) -> bool:
    """Whether to continue the interrupted run in ``stage``: with ``resume`` and without
    ``force`` (which starts over); refused in one line without either. A complete stage whose
    redo (``--force``) was interrupted continues that redo with ``force`` and ``resume``
    together (:func:`~falsecli.core.swap.stage_run` keeps it for ``keep``). ``progress(path)``
    reads the checkpoint at ``path`` and says how far it got ("epoch 3 of 60")."""
    path = stage.path / CHECKPOINT
    if force and stage.is_complete() and (stage.redo_path / CHECKPOINT).is_file():
        if stage.busy():
            raise stage.busy_error()
        if not resume:
            console.log(f"{stage.name}: the interrupted redo in {stage.redo_path} starts over "
                        "(--force --resume would continue it)")
        return resume
    if force or not path.is_file() or stage.is_complete():
        return False
    if stage.busy():  # not interrupted: still running
        raise stage.busy_error()
    if not resume:
        raise FalseCliError(f"{stage.name}: an interrupted run is in {stage.path} "
                            f"({progress(path)}) — use --resume to continue or --force to "
                            "start over")
    return True


def check_signature(stage: str, old: Mapping[str, Mapping[str, Any]],
                    new: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to resume a run made with other settings (``{section: {key: value}}``), naming
    the first key that differs."""
    for section, values in new.items():
        for key, value in values.items():
            before = old.get(section, {}).get(key)
            if before != value:
                raise FalseCliError(
                    f"{stage}: the interrupted run used {section}.{key}={before!r}, not "
                    f"{value!r} — resume with the same settings or {FORCE}")

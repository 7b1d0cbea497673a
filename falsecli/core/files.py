"""Files written whole or not at all, and read back with one-line errors.

Every write goes to a temporary file beside its target and replaces it in one step
(``os.replace``), so a killed process leaves the old file or the new one, never half of one;
a killed write leaves at most a temporary file that :func:`is_temp` recognises. Errors name
the path, the system's reason and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from falsecli.core.errors import FalseCliError

#: the temporary files of :func:`atomic_path` (a killed write leaves one behind)
_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?")


def is_temp(name: str) -> bool:
    """Whether the file name ``name`` is a temporary file of :func:`atomic_path`."""
    return _TEMP.fullmatch(name) is not None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: this process's umask, for files made with private modes (mkstemp, mkdtemp)
UMASK = _umask()


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
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's 0600 would hide results from co-workers
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # the disk is full, the folder read-only...
            raise fs_error(exc, path) from None
        raise


def fs_error(exc: OSError, path: Path | str | None = None,
             space: tuple[int, int] | None = None) -> FalseCliError:
    """One line for a failed file operation: the path, the system's reason (with ``space``,
    the bytes the write needed and those that were free), and the fix."""
    where = path if path is not None else (exc.filename or "a file")
    reason = exc.strerror or str(exc) or type(exc).__name__
    if space is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += f" ({size_text(space[0])} needed, {size_text(space[1])} free)"
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


def size_text(n: int) -> str:
    """A byte count for people: ``1.5 GB``."""
    value, unit = float(n), "bytes"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def free_space(path: Path | str) -> int:
    """Bytes free to this user on the file system of ``path`` (or its nearest parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def reserve(path: Path, fh: Any = None) -> None:
    """Allocate the disk blocks of the file at ``path`` (open as ``fh``, else opened here)
    up to its size. A file grown by ``truncate`` or ``open_memmap`` is sparse: writing into
    its memory map on a full disk is a bus error (SIGBUS) that kills the process without a
    word, and even plain writes would fail halfway; reserved first, a full disk is one line
    naming the path and the space needed, before any work."""
    with contextlib.ExitStack() as stack:
        if fh is None:
            fh = stack.enter_context(open(path, "r+b"))
        size, free = os.fstat(fh.fileno()).st_size, free_space(path)
        try:
            os.posix_fallocate(fh.fileno(), 0, max(size, 1))
        except OSError as exc:
            raise fs_error(exc, path, space=(size, free)) from None


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


def read_json(path: Path, fix: str = "") -> Any:
    """The JSON document at ``path``; errors name the file and end with ``fix``."""
    tail = f" — {fix}" if fix else ""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing{tail}") from None
    except (OSError, ValueError) as exc:
        raise FalseCliError(f"{path}: unreadable or not JSON ({exc}){tail}") from None


def exchange(a: Path, b: Path) -> bool:
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


def make_dir(path: Path) -> None:
    """``mkdir -p``, with a one-line error (a file in the way, a read-only workdir)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fs_error(exc, exc.filename or path) from None

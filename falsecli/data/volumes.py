"""Find, open and validate the volumes named by ``cfg['data']`` (synthetic, f3 or files).

``.npy`` files are memory-mapped and never copied whole: F3's training seismic alone is a
573 MB float64 array, and every consumer reads it a section (or an inline block) at a time.
Every check walks the volume in inline blocks for the same reason. Problems are reported
with the file, what is wrong and what to do, before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from falsecli.core.errors import FalseCliError, GridError
from falsecli.core.files import fs_error
from falsecli.data.geometry import Geometry, byte_hint

SEGY_SUFFIXES = (".sgy", ".segy")
#: samples per block when scanning a volume (about 64 MB of float64)
BLOCK_SAMPLES = 8 * 1024 * 1024


@dataclass
class Volume:
    """A seismic volume (float, possibly memory-mapped) and its labels (uint8 or None)."""

    name: str
    seismic: np.ndarray
    labels: np.ndarray | None
    source: str = ""  # where it came from, for messages
    labels_source: str = ""  # where the labels came from, when that is another file
    #: the survey's numbers (SEG-Y); None: the volume's indices (:meth:`Geometry.index`)
    survey: Geometry | None = None

    @property
    def geometry(self) -> Geometry:
        """Where the volume lies in its survey: the SEG-Y's numbers, else its indices."""
        return self.survey or Geometry.index(self.seismic.shape)

    @property
    def labels_origin(self) -> str:
        """The file to name in a message about the labels."""
        return self.labels_source or self.source

    def section(self, array: np.ndarray, axis: str, index: int) -> np.ndarray:
        """Section ``index`` of ``array`` along ``axis`` as [depth, width]."""
        return (array[index, :, :] if axis == "inline" else array[:, index, :]).T



# ---------------------------------------------------------------- reading


def read_array(path: Path | str, segy_bytes: dict[str, int], labels: bool = False,
               lazy: bool = False) -> np.ndarray:
    """A volume from ``.npy`` (memory-mapped) or SEG-Y; labels from SEG-Y become uint8.
    ``lazy``: SEG-Y seismic as a :class:`~falsecli.data.segy.SegyVolume`, read when indexed."""
    from falsecli.data import segy

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise FalseCliError(f"{path}: a folder, not a volume file — give the path of a .npy or "
                            "SEG-Y (.sgy/.segy) file")
    if suffix in SEGY_SUFFIXES:
        iline, xline = segy_bytes["iline"], segy_bytes["xline"]
        try:
            if lazy and not labels:
                return segy.SegyVolume(segy.survey(path, iline, xline))
            return (segy.read_labels if labels else segy.read)(path, iline, xline)
        except GridError as exc:
            raise FalseCliError(f"{exc}{byte_hint(path, iline, xline)}") from None
    if suffix != ".npy":
        raise FalseCliError(f"{path}: unsupported file type '{path.suffix}'; give a .npy or a "
                            "SEG-Y (.sgy/.segy) volume")
    return read_npy(path)


def read_npy(path: Path, what: str = "") -> np.ndarray:
    """The array of the .npy file ``path``, memory-mapped, numbers only (Python objects
    could run code and are refused, not loaded); errors start with ``what`` (an option)."""
    where = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise FalseCliError(f"{where}: missing — check the path (relative paths start in the "
                            "current directory)")
    if path.stat().st_size == 0:
        raise FalseCliError(f"{where}: empty file (0 bytes) — write the array again")
    try:
        with open(path, "rb") as fh:
            dtype = _npy_dtype(fh)
        if dtype.hasobject:
            raise FalseCliError(f"{where}: holds Python objects (dtype {dtype}), not numbers — "
                                "save a numeric array, e.g. numpy.save(path, a.astype('f4'))")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except PermissionError as exc:
        raise fs_error(exc, path) from None
    except (ValueError, OSError, EOFError) as exc:
        raise FalseCliError(f"{where}: not a readable .npy array (truncated or corrupt: {exc}) "
                            "— write it again with numpy.save") from None
    if not isinstance(array, np.ndarray):
        raise FalseCliError(f"{where}: holds several arrays; give one array per .npy file")
    return array


def _npy_dtype(fh: Any) -> np.dtype:
    """The dtype in the header of the open .npy file ``fh`` (ValueError if there is none)."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
        np.lib.format.read_array_header_2_0
    return read(fh)[2]


def survey_geometry(path: Path | str, seismic: np.ndarray, segy_bytes: dict[str, Any]
                    ) -> Geometry | None:
    """The survey geometry of a SEG-Y volume (its trace headers), None for ``.npy``."""
    from falsecli.data import geometry, segy

    if Path(path).suffix.lower() not in SEGY_SUFFIXES:
        return None
    grid = seismic.survey if isinstance(seismic, segy.SegyVolume) else segy.survey(
        path, segy_bytes["iline"], segy_bytes["xline"])
    return geometry.from_survey(grid, segy_bytes)


def _volume(name: str, seismic: Path | str, labels: Path | str | None,
            segy_bytes: dict[str, Any], lazy: bool = False) -> Volume:
    seis = read_array(seismic, segy_bytes, lazy=lazy)
    lab = None if labels is None else read_array(labels, segy_bytes, labels=True)
    return Volume(name, seis, lab, str(seismic), "" if labels is None else str(labels),
                  survey_geometry(seismic, seis, segy_bytes))


def _f3(d: dict[str, Any], lazy: bool) -> tuple[Volume, list[Volume]]:
    """The F3 facies benchmark layout: train/ and test_once/ under ``data.root``."""
    if not d["root"]:
        raise FalseCliError("data.source is f3 but data.root is not set; set data.root to the "
                            "folder holding train/ and test_once/ (e.g. --set data.root=data)")
    root = Path(d["root"])
    if not root.is_dir():
        raise FalseCliError(f"data.root {root}: no such folder; it must hold train/ and "
                            "test_once/ (make one with 'falsecli synth --out DIR')")

    def seismic_file(folder: str, stem: str) -> Path | None:
        found = [root / folder / f"{stem}_seismic{ext}" for ext in (".npy", *SEGY_SUFFIXES)]
        return next((p for p in found if p.exists()), None)

    train_seismic = seismic_file("train", "train")
    if train_seismic is None:
        raise FalseCliError(f"{root / 'train' / 'train_seismic.npy'}: missing (also no .sgy) — "
                            f"data.root={root} must hold the F3 layout")
    train = _volume("train", train_seismic, root / "train" / "train_labels.npy", d["segy"],
                    lazy)
    tests = []
    for stem in ("test1", "test2"):
        seismic = seismic_file("test_once", stem)
        if seismic is not None:
            tests.append(_volume(stem, seismic, root / "test_once" / f"{stem}_labels.npy",
                                 d["segy"], lazy))
    return train, tests


def _files(d: dict[str, Any], lazy: bool) -> tuple[Volume, list[Volume]]:
    """Volumes named one by one: ``data.seismic``, ``data.labels``, ``data.test``."""
    for key in ("seismic", "labels"):
        if not d[key]:
            raise FalseCliError(f"data.source is files but data.{key} is not set; set it to a "
                                ".npy or SEG-Y file (e.g. --set data.{key}=PATH)")
    train = _volume("train", d["seismic"], d["labels"], d["segy"], lazy)
    tests = []
    for i, entry in enumerate(d["test"]):
        name, seismic = entry["name"], entry["seismic"]
        if not isinstance(name, str) or not name or name in ("train", "val") or ":" in name:
            raise FalseCliError(f"data.test[{i}].name {name!r}: give a name other than train/val"
                                ", without ':' (e.g. test1)")
        if name in (t.name for t in tests):
            raise FalseCliError(f"data.test[{i}].name '{name}' is used twice; names must differ")
        labels = entry["labels"] or None
        if not (isinstance(seismic, str) and seismic and isinstance(labels, (str, type(None)))):
            raise FalseCliError(f"data.test[{i}]: seismic must be a .npy or SEG-Y path and "
                                f"labels a path or null, not {seismic!r} and {labels!r}")
        tests.append(_volume(name, seismic, labels, d["segy"], lazy))
    return train, tests


def _synthetic(d: dict[str, Any], lazy: bool) -> tuple[Volume, list[Volume]]:
    from falsecli.data import synthetic

    (seis, lab), (test_seis, test_lab) = synthetic.volumes(d)
    seed = d["synthetic"]["seed"]
    return (Volume("train", seis, lab, f"synthetic (seed {seed})"),
            [Volume("test1", test_seis, test_lab, f"synthetic (seed {seed}, test)")])


def load(d: dict[str, Any], lazy: bool = False) -> tuple[Volume, list[Volume]]:
    """The training volume and the test volumes of ``cfg['data']`` (not validated yet);
    ``lazy``: SEG-Y seismic is read trace block by trace block when indexed (predict)."""
    loaders = {"synthetic": _synthetic, "f3": _f3, "files": _files}
    if d["source"] not in loaders:
        raise FalseCliError(f"data.source '{d['source']}': expected synthetic, f3 or files")
    return loaders[d["source"]](d, lazy)


# ---------------------------------------------------------------- validation


def blocks(array: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first inline, block) over a 3-D volume, a few inlines at a time, read into memory."""
    per_inline = max(int(np.prod(array.shape[1:])), 1)
    step = max(1, BLOCK_SAMPLES // per_inline)
    for start in range(0, array.shape[0], step):
        yield start, np.asarray(array[start: start + step])


def _check_shape(source: str, what: str, array: np.ndarray) -> None:
    if array.ndim != 3:
        raise FalseCliError(f"{source}: the {what} has shape {tuple(array.shape)} "
                            f"({array.ndim}-D); expected a 3-D inline x crossline x depth volume")
    if min(array.shape) == 0:
        raise FalseCliError(f"{source}: the {what} has shape {tuple(array.shape)} with an "
                            "empty axis; it holds no samples")
    if not (np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype,
                                                                         np.complexfloating)):
        raise FalseCliError(f"{source}: the {what} has dtype {array.dtype}; expected real "
                            "numbers")


def _check_finite(vol: Volume) -> None:
    if not np.issubdtype(vol.seismic.dtype, np.floating):
        return
    for start, block in blocks(vol.seismic):
        bad = ~np.isfinite(block)
        if bad.any():
            count = int(bad.sum())
            i, j, k = np.argwhere(bad)[0]
            raise FalseCliError(
                f"{vol.source}: the seismic has NaN/Inf samples ({count} in inlines "
                f"{start}..{start + len(block) - 1}, first at inline index {start + i}, crossline "
                f"{j}, sample {k}); replace them (e.g. numpy.nan_to_num) before training")


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxels per label value, scanning in inline blocks (non-integer values raise)."""
    counts: dict[int, int] = {}
    for _, block in blocks(labels):
        if np.issubdtype(block.dtype, np.floating):
            if not np.isfinite(block).all() or (block != np.rint(block)).any():
                raise ValueError("non-integer label values")
            block = block.astype(np.int64)
        lo, hi = (int(block.min()), int(block.max())) if block.size else (0, 0)
        if hi - lo < 1 << 16:     # the usual case: a bincount, no sort
            n = np.bincount((block.ravel().astype(np.int64) - lo))
            values = np.flatnonzero(n)
            pairs = zip((values + lo).tolist(), n[values].tolist())
        else:
            pairs = zip(*(a.tolist() for a in np.unique(block, return_counts=True)))
        for v, c in pairs:
            counts[v] = counts.get(v, 0) + c
    return counts


def _check_labels(vol: Volume, classes: list[str], ignore_index: int) -> None:
    assert vol.labels is not None
    try:
        counts = label_counts(vol.labels)
    except ValueError:
        raise FalseCliError(f"{vol.labels_origin}: the labels hold non-integer or NaN values; "
                            "labels must be class ids") from None
    allowed = set(range(len(classes))) | {ignore_index}
    bad = sorted(v for v in counts if v not in allowed)
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise FalseCliError(
            f"{vol.labels_origin}: label values {shown} are outside the {len(classes)} classes "
            f"(0..{len(classes) - 1}) and ignore_index {ignore_index}; relabel them, or set "
            "data.classes / data.ignore_index to match the file")


def validate(vol: Volume, classes: list[str], ignore_index: int) -> None:
    """Raise a one-line FalseCliError naming the file if ``vol`` is unusable: not 3-D, shapes
    that differ, NaN/Inf samples, label ids outside the classes."""
    _check_shape(vol.source, "seismic", vol.seismic)
    if vol.labels is not None:
        _check_shape(vol.labels_origin, "labels", vol.labels)
        if vol.labels.shape != vol.seismic.shape:
            raise FalseCliError(
                f"{vol.labels_origin}: labels shape {tuple(vol.labels.shape)} differs from the "
                f"seismic shape {tuple(vol.seismic.shape)} of {vol.source}; they must match "
                "sample for sample")
    _check_finite(vol)
    if vol.labels is not None:
        _check_labels(vol, classes, ignore_index)

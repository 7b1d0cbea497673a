"""Tiny .npy test inputs, good and bad, for the data layer: ``python tests/make_data.py DIR``.

Tests import the functions; the script writes every case into DIR so that a person can try
``falsecli inspect`` on them by hand. Volumes are a few inlines of a random "seismic" with
depth-banded labels: small enough to write in milliseconds, big enough for every check.
SEG-Y files are made by tests/make_segy.py, from these volumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SHAPE = (6, 7, 10)
N_CLASSES = 6


def banded_labels(shape: tuple[int, int, int], classes: int = N_CLASSES) -> np.ndarray:
    """uint8 labels that increase with depth in equal bands (every class present)."""
    band = np.minimum(np.arange(shape[2]) * classes // shape[2], classes - 1)
    return np.broadcast_to(band.astype(np.uint8), shape).copy()


def seismic(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """A float32 volume with distinct values (so misplaced traces show)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


def npy_pair(folder: Path, stem: str = "vol", shape: tuple[int, int, int] = SHAPE,
             seis: np.ndarray | None = None, labels: np.ndarray | None = None
             ) -> tuple[Path, Path]:
    """``<stem>_seismic.npy`` and ``<stem>_labels.npy`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    s_path, l_path = folder / f"{stem}_seismic.npy", folder / f"{stem}_labels.npy"
    np.save(s_path, seismic(shape) if seis is None else seis)
    np.save(l_path, banded_labels(shape) if labels is None else labels)
    return s_path, l_path


# ---------------------------------------------------------------- bad inputs


def empty(path: Path) -> Path:
    """A 0-byte file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated(path: Path, source: Path, cut: int = 100) -> Path:
    """``source`` without its last ``cut`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes()[:-cut])
    return path


def write_all(folder: Path) -> dict[str, Path]:
    """Every case above, into ``folder``; returns name -> path."""
    folder = Path(folder)
    good_seis, good_lab = npy_pair(folder / "good")
    cases = {"good_seismic": good_seis, "good_labels": good_lab}
    cases["empty_npy"] = empty(folder / "bad" / "empty.npy")
    cases["truncated_npy"] = truncated(folder / "bad" / "truncated.npy", good_seis)
    not3d = folder / "bad" / "not3d.npy"
    np.save(not3d, seismic()[0])
    nan = seismic()
    nan[4, 2, 7] = np.nan
    inf = seismic()
    inf[1, 1, 1] = np.inf
    labels = banded_labels(SHAPE)
    labels[0, 0, :2] = [7, 9]
    cases["not3d"] = not3d
    cases["nan"] = npy_pair(folder / "bad", "nan", seis=nan)[0]
    cases["inf"] = npy_pair(folder / "bad", "inf", seis=inf)[0]
    cases["bad_labels"] = npy_pair(folder / "bad", "badlab", labels=labels)[1]
    cases["short_labels"] = npy_pair(folder / "bad", "short",
                                     labels=banded_labels((6, 7, 9)))[1]
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/make_data.py DIR")
    for name, path in write_all(Path(sys.argv[1])).items():
        print(f"{name}: {path}")

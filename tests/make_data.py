"""Tiny test inputs, good and bad, for the data layer: ``python tests/make_data.py DIR``.

Tests import the functions; the script writes every case into DIR so that a person can try
``falsecli inspect`` on them by hand. Volumes are a few inlines of a smooth "seismic" with
depth-banded labels: small enough to write in milliseconds, big enough for every check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import segyio

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


def segy_traces(path: Path, traces: np.ndarray, ilines: Iterable[int], xlines: Iterable[int],
                offsets: Iterable[int] | None = None, iline: int = 189, xline: int = 193,
                fmt: int = 5) -> Path:
    """An unstructured SEG-Y: trace t has inline ``ilines[t]``, crossline ``xlines[t]`` (at the
    given header bytes) and ``offsets[t]`` — any geometry, good or broken."""
    traces = np.asarray(traces, dtype=np.float32)
    ilines, xlines = list(ilines), list(xlines)
    offsets = [0] * len(ilines) if offsets is None else list(offsets)
    spec = segyio.spec()
    spec.format = fmt
    spec.samples = np.arange(traces.shape[1]) * 4.0
    spec.tracecount = len(traces)
    path.parent.mkdir(parents=True, exist_ok=True)
    with segyio.create(str(path), spec) as f:
        f.bin.update(hdt=4000, hns=traces.shape[1], format=fmt)
        for t in range(len(traces)):
            f.header[t] = {iline: ilines[t], xline: xlines[t],
                           segyio.TraceField.offset: offsets[t],
                           segyio.TraceField.TRACE_SAMPLE_INTERVAL: 4000}
        f.trace.raw[:] = traces
    return path


def segy_cube(path: Path, volume: np.ndarray, il0: int = 1, xl0: int = 1, il_step: int = 1,
              xl_step: int = 1, order: str = "inline", seed: int | None = None,
              iline: int = 189, xline: int = 193) -> Path:
    """A regular 3-D cube as SEG-Y: inline- or crossline-major trace order, or shuffled when
    ``seed`` is given."""
    n_il, n_xl, _ = volume.shape
    ii, jj = np.meshgrid(np.arange(n_il), np.arange(n_xl), indexing="ij")
    if order == "crossline":
        ii, jj = ii.T, jj.T
    ii, jj = ii.ravel(), jj.ravel()
    if seed is not None:
        perm = np.random.default_rng(seed).permutation(len(ii))
        ii, jj = ii[perm], jj[perm]
    return segy_traces(path, volume[ii, jj], il0 + il_step * ii, xl0 + xl_step * jj,
                       iline=iline, xline=xline)


# ---------------------------------------------------------------- bad inputs


def empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated(path: Path, source: Path, cut: int = 100) -> Path:
    """``source`` without its last ``cut`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes()[:-cut])
    return path


def not_segy(path: Path) -> Path:
    """A text file of a plausible size, named like SEG-Y."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("inline,crossline,amplitude\n" + "1,1,0.5\n" * 1000)
    return path


def segy_missing_trace(path: Path) -> Path:
    vol = seismic()
    n = vol.shape[0] * vol.shape[1]
    ii, jj = np.divmod(np.arange(n), vol.shape[1])
    keep = np.arange(n) != n // 2
    return segy_traces(path, vol[ii[keep], jj[keep]], 1 + ii[keep], 1 + jj[keep])


def segy_duplicate_trace(path: Path) -> Path:
    vol = seismic()
    n = vol.shape[0] * vol.shape[1]
    ii, jj = np.divmod(np.arange(n), vol.shape[1])
    ii[5], jj[5] = ii[4], jj[4]              # trace 5 lands on trace 4's bin, one bin is empty
    return segy_traces(path, vol[ii, jj], 1 + ii, 1 + jj)


def segy_prestack(path: Path, offsets: tuple[int, ...] = (100, 200, 300)) -> Path:
    """Three offsets per inline/crossline bin."""
    vol = seismic()
    ii, jj, kk = (a.ravel() for a in np.meshgrid(np.arange(vol.shape[0]),
                                                  np.arange(vol.shape[1]),
                                                  np.arange(len(offsets)), indexing="ij"))
    return segy_traces(path, vol[ii, jj], 1 + ii, 1 + jj, np.array(offsets)[kk])


def write_all(folder: Path) -> dict[str, Path]:
    """Every case above, into ``folder``; returns name -> path."""
    folder = Path(folder)
    good_seis, good_lab = npy_pair(folder / "good")
    cases = {"good_seismic": good_seis, "good_labels": good_lab}
    cases["good_segy"] = segy_cube(folder / "good" / "vol_seismic.sgy", seismic())
    cases["empty_npy"] = empty(folder / "bad" / "empty.npy")
    cases["empty_segy"] = empty(folder / "bad" / "empty.sgy")
    cases["truncated_npy"] = truncated(folder / "bad" / "truncated.npy", good_seis)
    cases["truncated_segy"] = truncated(folder / "bad" / "truncated.sgy", cases["good_segy"])
    cases["not_segy"] = not_segy(folder / "bad" / "table.sgy")
    cases["missing_trace"] = segy_missing_trace(folder / "bad" / "missing_trace.sgy")
    cases["duplicate_trace"] = segy_duplicate_trace(folder / "bad" / "duplicate_trace.sgy")
    cases["prestack"] = segy_prestack(folder / "bad" / "prestack.sgy")
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

"""Small SEG-Y test files, good and bad: ``python tests/make_segy.py DIR``.

The one place the tests get SEG-Y from (tests/make_data.py makes the .npy volumes), so that
the SEG-Y reader is covered in a clone without ``../shared`` and its real F3 crop. Tests
import the functions; the script writes every case into DIR so that a person can try
``falsecli inspect`` or another SEG-Y reader on them by hand. Every good case holds
:func:`volume` (integer-valued, so int16 and IBM-float files hold it exactly).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import segyio

import make_data

#: SEG-Y sample format codes written here, and the dtype segyio wants for each
IBM_FLOAT, INT16, IEEE_FLOAT = 1, 3, 5
DTYPES = {IBM_FLOAT: np.float32, INT16: np.int16, IEEE_FLOAT: np.float32}
#: offsets of the prestack case (three traces per inline/crossline bin)
OFFSETS = (100, 200, 300)


def volume(shape: tuple[int, int, int] = make_data.SHAPE) -> np.ndarray:
    """The float32 samples of the good cases: distinct integers (misplaced traces show)."""
    return np.round(make_data.seismic(shape) * 1000).astype(np.float32)


def traces(path: Path, samples: np.ndarray, ilines: Iterable[int], xlines: Iterable[int],
           offsets: Iterable[int] | None = None, iline: int = 189, xline: int = 193,
           fmt: int = IEEE_FLOAT, fields: dict[int, Iterable[int]] | None = None) -> Path:
    """A SEG-Y of the (traces, samples) array ``samples``: trace t has inline ``ilines[t]``,
    crossline ``xlines[t]`` (at the given header bytes), ``offsets[t]`` and ``fields[byte][t]``
    — any geometry, good or broken. segyio writes it without a geometry (as unstructured)."""
    samples = np.asarray(samples, dtype=np.float32)
    ilines, xlines = list(ilines), list(xlines)
    offsets = [0] * len(ilines) if offsets is None else list(offsets)
    extra = {byte: list(values) for byte, values in (fields or {}).items()}
    spec = segyio.spec()
    spec.format = fmt
    spec.samples = np.arange(samples.shape[1]) * 4.0
    spec.tracecount = len(samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    with segyio.create(str(path), spec) as f:
        f.bin.update(hdt=4000, hns=samples.shape[1], format=fmt)
        for t in range(len(samples)):
            f.header[t] = {iline: ilines[t], xline: xlines[t],
                           segyio.TraceField.offset: offsets[t],
                           segyio.TraceField.TRACE_SAMPLE_INTERVAL: 4000,
                           **{byte: int(values[t]) for byte, values in extra.items()}}
        f.trace.raw[:] = samples.astype(DTYPES[fmt])
    return path


def cube(path: Path, vol: np.ndarray, il0: int = 1, xl0: int = 1, il_step: int = 1,
         xl_step: int = 1, order: str = "inline", seed: int | None = None, iline: int = 189,
         xline: int = 193, fmt: int = IEEE_FLOAT, survey: bool = False) -> Path:
    """A regular 3-D cube: inline numbers ``il0 + il_step * i``, crossline numbers
    ``xl0 + xl_step * j``; inline- or crossline-major trace order, shuffled when ``seed``
    is given. ``survey``: also :func:`survey_fields` (CDP X/Y, scalar, delay)."""
    n_il, n_xl, _ = vol.shape
    ii, jj = np.meshgrid(np.arange(n_il), np.arange(n_xl), indexing="ij")
    if order == "crossline":
        ii, jj = ii.T, jj.T
    ii, jj = ii.ravel(), jj.ravel()
    if seed is not None:
        perm = np.random.default_rng(seed).permutation(len(ii))
        ii, jj = ii[perm], jj[perm]
    return traces(path, vol[ii, jj], il0 + il_step * ii, xl0 + xl_step * jj,
                  iline=iline, xline=xline, fmt=fmt,
                  fields=survey_fields(ii, jj) if survey else None)


#: the survey the ``survey`` cubes lie in: CDP X/Y in cm (scalar -100) on a 12.5 x 25 m
#: grid from (600000.25, 6000000.5), first sample at 8 ms
ORIGIN_CM, BIN_CM, SCALAR, DELAY_MS = (60_000_025, 600_000_050), (1250, 2500), -100, 8


def survey_fields(ii: np.ndarray, jj: np.ndarray) -> dict[int, np.ndarray]:
    """CDP X/Y (bytes 181/185), their scalar (71) and the delay (109) of traces at grid
    indices (ii, jj)."""
    return {segyio.TraceField.CDP_X: ORIGIN_CM[0] + BIN_CM[0] * jj,
            segyio.TraceField.CDP_Y: ORIGIN_CM[1] + BIN_CM[1] * ii,
            segyio.TraceField.SourceGroupScalar: np.full(len(ii), SCALAR),
            segyio.TraceField.DelayRecordingTime: np.full(len(ii), DELAY_MS)}


def _grid(shape: tuple[int, int, int] = make_data.SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Array indices (inline, crossline) of every trace of ``shape``, inline-major."""
    return np.divmod(np.arange(shape[0] * shape[1]), shape[1])


# ---------------------------------------------------------------- good cases


def regular(path: Path, fmt: int = IEEE_FLOAT) -> Path:
    """Sorted inline-major, inline and crossline numbers 1, 2, 3, ..."""
    return cube(path, volume(), fmt=fmt)


def f3_like(path: Path) -> Path:
    """The layout of the real F3 crop: int16 samples, inlines from 111, crosslines from 875."""
    return cube(path, volume(), il0=111, xl0=875, fmt=INT16)


def odd_step(path: Path) -> Path:
    """Inline numbers step 2 from 1001, crossline numbers step 3 from 2001."""
    return cube(path, volume(), il0=1001, xl0=2001, il_step=2, xl_step=3)


def surveyed(path: Path, iline: int = 189, xline: int = 193) -> Path:
    """Inlines step 2 from 1001, crosslines step 3 from 2001, shuffled, with CDP X/Y, their
    scalar and a delay (:func:`survey_fields`) at the given inline/crossline bytes."""
    return cube(path, volume(), il0=1001, xl0=2001, il_step=2, xl_step=3, seed=4, iline=iline,
                xline=xline, survey=True)


#: sorted inline-major files (any trace order: :func:`cube`), each holding :func:`volume`
GOOD: dict[str, Callable[[Path], Path]] = {
    "regular": regular, "ibm_float": functools.partial(regular, fmt=IBM_FLOAT),
    "f3_like": f3_like, "odd_step": odd_step,
}


# ---------------------------------------------------------------- bad cases


def unstructured(path: Path) -> Path:
    """No regular grid: the first inline lacks its first three traces (a survey outline
    that is not a rectangle)."""
    ii, jj = _grid()
    keep = ~((ii == 0) & (jj < 3))
    return traces(path, volume()[ii[keep], jj[keep]], 1 + ii[keep], 1 + jj[keep])


def duplicate_trace(path: Path) -> Path:
    """Trace 5 lands on trace 4's bin, so one bin holds two traces and one is empty."""
    ii, jj = _grid()
    ii[5], jj[5] = ii[4], jj[4]
    return traces(path, volume()[ii, jj], 1 + ii, 1 + jj)


def prestack(path: Path) -> Path:
    """Three traces per inline/crossline bin, at offsets :data:`OFFSETS`."""
    ii, jj = (np.repeat(a, len(OFFSETS)) for a in _grid())
    offsets = np.tile(OFFSETS, len(ii) // len(OFFSETS))
    return traces(path, volume()[ii, jj], 1 + ii, 1 + jj, offsets)


def not_segy(path: Path) -> Path:
    """A text file of a plausible size, named like SEG-Y."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("inline,crossline,amplitude\n" + "1,1,0.5\n" * 1000)
    return path


def truncated(path: Path) -> Path:
    """A regular file without its last 100 bytes (part of the last trace)."""
    return make_data.truncated(path, regular(path.with_name(f"{path.stem}_whole.sgy")))


def short_header(path: Path) -> Path:
    """The first 1000 bytes of a regular file: not even the 3600-byte file header."""
    whole = regular(path.with_name(f"{path.stem}_whole.sgy"))
    return make_data.truncated(path, whole, cut=whole.stat().st_size - 1000)


def header_only(path: Path) -> Path:
    """The 3600-byte file header of a regular file and no trace (segyio: IndexError)."""
    whole = regular(path.with_name(f"{path.stem}_whole.sgy"))
    return make_data.truncated(path, whole, cut=whole.stat().st_size - 3600)


def _edited(path: Path, edit: Callable[[bytearray], bytes]) -> Path:
    """A regular file with its bytes changed by ``edit``."""
    whole = regular(path.with_name(f"{path.stem}_whole.sgy"))
    path.write_bytes(edit(bytearray(whole.read_bytes())))
    return path


def fixed_point(path: Path) -> Path:
    """Sample format code 4 (fixed point with gain), which segyio reads as IBM floats."""
    def edit(data: bytearray) -> bytes:
        data[3224:3226] = (4).to_bytes(2, "big")
        return bytes(data)
    return _edited(path, edit)


def uneven_traces(path: Path) -> Path:
    """The third trace two samples shorter than the others (variable trace lengths)."""
    trace = 240 + 4 * volume().shape[2]
    return _edited(path, lambda data: bytes(data[:3600 + 3 * trace - 8]
                                            + data[3600 + 3 * trace:]))


#: files the reader must refuse, each with a one-line error
BAD: dict[str, Callable[[Path], Path]] = {
    "unstructured": unstructured, "duplicate_trace": duplicate_trace, "prestack": prestack,
    "not_segy": not_segy, "empty": make_data.empty, "truncated": truncated,
    "short_header": short_header, "header_only": header_only, "fixed_point": fixed_point,
    "uneven_traces": uneven_traces,
}


def write_all(folder: Path) -> dict[str, Path]:
    """Every case into ``folder/good`` and ``folder/bad``; returns case name -> path."""
    folder = Path(folder)
    cases = {name: make(folder / "good" / f"{name}.sgy") for name, make in GOOD.items()}
    cases.update({name: make(folder / "bad" / f"{name}.sgy") for name, make in BAD.items()})
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/make_segy.py DIR")
    for name, path in write_all(Path(sys.argv[1])).items():
        print(f"{name}: {path}")

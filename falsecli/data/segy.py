"""SEG-Y volumes through segyio: post-stack 3-D cubes on a regular inline/crossline grid.

Reading does not trust segyio's geometry inference (which needs the standard header bytes
and a sorted file): it gathers the configured inline/crossline header fields of every trace
from a memory map of the trace headers (segyio's per-trace header reads would cost as much
as the samples), lets segyio read all samples once (any sample format), and places each
trace on the grid formed by the sorted unique inline and crossline numbers — any step, any
trace order — saying exactly what is wrong when the traces do not form such a grid. On an
inline-sorted file that is within a few per cent of ``segyio.tools.cube``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import segyio

from falsecli.core.errors import FalseCliError, GridError
from falsecli.data.segycheck import FORMAT_OFFSET, check_file

#: standard SEG-Y rev1 trace-header bytes of the inline and crossline numbers
INLINE_BYTE, XLINE_BYTE = 189, 193
#: first inline/crossline numbers and bin size (m) of written files, F3-like
FIRST_INLINE, FIRST_XLINE, BIN_M = 100, 300, 25.0
ORIGIN_X, ORIGIN_Y = 605_835.0, 6_073_556.0
#: SEG-Y sample format code of IEEE 4-byte floats
IEEE_FLOAT = 5
#: sample formats read through a memory map (big-endian), by format code
MAPPED = {2: ">i4", 3: ">i2", 5: ">f4", 8: "i1"}


def _open(path: Path) -> segyio.SegyFile:
    """Open ``path`` as an unstructured SEG-Y file, turning segyio's errors into ours."""
    check_file(path)
    try:
        f = segyio.open(str(path), "r", ignore_geometry=True)
    except RuntimeError as exc:
        text = str(exc)
        if "inconsistent with file size" in text:
            raise FalseCliError(f"{path}: truncated — its size does not hold a whole number of "
                                "traces; copy the file again") from None
        raise FalseCliError(f"{path}: not a SEG-Y file ({text}); give a post-stack SEG-Y "
                            "(.sgy/.segy) or a .npy volume") from None
    except (OSError, ValueError, IndexError) as exc:
        raise FalseCliError(f"{path}: not a readable SEG-Y file ({exc})") from None
    if f.tracecount == 0 or len(f.samples) == 0:
        f.close()
        raise FalseCliError(f"{path}: holds no traces or no samples — not a usable SEG-Y file")
    return f


def _field_widths() -> dict[int, int]:
    """Byte width of every standard trace-header field, keyed by its first byte."""
    starts = sorted(v for k, v in vars(segyio.TraceField).items()
                    if isinstance(v, int) and not k.startswith("_"))
    return {a: b - a for a, b in zip(starts, [*starts[1:], 241])}


_WIDTH = _field_widths()


def _traces(path: Path, f: segyio.SegyFile) -> tuple[np.ndarray, np.ndarray]:
    """All trace headers (traces, 240) uint8 and samples (traces, samples) float32.

    IEEE-float files are read in one pass as records of header + samples (the whole cost is
    the read and the byte swap, as in ``segyio.tools.cube``); other sample formats get their
    headers from a memory map and their samples converted by segyio.
    """
    start = 3600 + 3200 * max(int(f.ext_headers), 0)
    n, ns = f.tracecount, len(f.samples)
    trace_bytes = (path.stat().st_size - start) // n
    if int(f.format) == IEEE_FLOAT and trace_bytes == 240 + 4 * ns:
        record = np.dtype([("header", np.uint8, 240), ("samples", ">f4", ns)])
        data = np.fromfile(path, dtype=record, count=n, offset=start)
        if len(data) != n:
            raise FalseCliError(f"{path}: truncated — {len(data)} of {n} traces; copy the file "
                                "again")
        return data["header"], data["samples"].astype(np.float32)
    headers = np.memmap(path, dtype=np.uint8, mode="r", offset=start,
                        shape=(n, trace_bytes))[:, :240]
    try:
        samples = f.trace.raw[:]
    except (RuntimeError, OSError) as exc:
        raise FalseCliError(f"{path}: cannot read the traces ({exc}) — the file is "
                            "truncated or corrupt") from None
    return headers, samples.astype(np.float32, copy=False)


def _field(path: Path, headers: np.ndarray, byte: int, key: str) -> np.ndarray:
    """One header field of every trace (big-endian, as segyio reads it)."""
    width = _WIDTH.get(int(byte))
    if width is None:
        raise FalseCliError(
            f"{path}: data.segy.{key}={byte} is not the first byte of a trace-header field; use "
            f"the byte of the {key} field (SEG-Y rev 1: "
            f"{dict(iline=INLINE_BYTE, xline=XLINE_BYTE, cdp_x=181, cdp_y=185).get(key)})")
    raw = np.ascontiguousarray(headers[:, byte - 1: byte - 1 + width])
    return raw.view(">i4" if width == 4 else ">i2").ravel().astype(np.int64)


def _grid(path: Path, headers: np.ndarray, iline: int, xline: int
          ) -> tuple[int, int, np.ndarray | None]:
    """Number of inlines and crosslines and each trace's flat grid position (None when the
    traces are already in inline-major order, the common case: then nothing is reordered)."""
    if int(iline) == int(xline):
        raise GridError(f"data.segy.iline and data.segy.xline are both byte {iline}; the "
                        "inline and crossline numbers live in different fields")
    il = _field(path, headers, iline, "iline")
    xl = _field(path, headers, xline, "xline")
    for values, key, byte in ((il, "iline", iline), (xl, "xline", xline)):
        if not values.any():
            raise GridError(f"{path}: trace-header byte {byte} is 0 in every trace, so it "
                            f"holds no {key} numbers — set data.segy.{key} to the byte that "
                            "does (standard: 189 inline, 193 crossline; some files use 9 "
                            "and 21)")
    regular = _inline_major(il, xl)
    if regular is not None:
        return regular[0], regular[1], None
    ilines, i = np.unique(il, return_inverse=True)
    xlines, j = np.unique(xl, return_inverse=True)
    flat = i.ravel() * len(xlines) + j.ravel()
    cells = len(ilines) * len(xlines)
    counts = np.bincount(flat, minlength=cells)
    if counts.max() > 1:
        dup = int(np.argmax(counts > 1))
        where = f"inline {ilines[dup // len(xlines)]}, crossline {xlines[dup % len(xlines)]}"
        offsets = np.unique(_field(path, headers, segyio.TraceField.offset, "offset")[flat == dup])
        if len(offsets) > 1:
            raise FalseCliError(
                f"{path}: prestack — {int(counts.max())} traces with offsets "
                f"{', '.join(str(v) for v in offsets[:5])} at {where}; give a stacked "
                "(post-stack) volume")
        raise GridError(
            f"{path}: {int(counts.max())} traces at {where} — not a regular inline/crossline "
            f"grid (duplicate traces); check data.segy.iline={iline} and xline={xline}")
    if counts.min() == 0:
        raise GridError(
            f"{path}: not a regular inline/crossline grid — {len(flat)} traces for "
            f"{len(ilines)} inlines x {len(xlines)} crosslines ({cells - len(flat)} missing); "
            f"fill the missing traces or check data.segy.iline={iline} and xline={xline}")
    return len(ilines), len(xlines), flat


def _inline_major(il: np.ndarray, xl: np.ndarray) -> tuple[int, int] | None:
    """(inlines, crosslines) when the traces already fill the grid in inline-major order with
    increasing numbers — checked in O(traces) without sorting — else None."""
    n_xl = int(np.argmax(il != il[0])) or len(il)
    if len(il) % n_xl:
        return None
    il2, xl2 = il.reshape(-1, n_xl), xl.reshape(-1, n_xl)
    rows_ok = (il2 == il2[:, :1]).all() and (xl2 == xl2[:1]).all()
    increasing = bool(np.all(np.diff(il2[:, 0]) > 0) and np.all(np.diff(xl2[0]) > 0))
    return (il2.shape[0], n_xl) if rows_ok and increasing else None


def read(path: Path | str, iline: int = INLINE_BYTE, xline: int = XLINE_BYTE) -> np.ndarray:
    """The volume of a post-stack SEG-Y file as float32 (inlines, crosslines, samples).

    Any inline/crossline step and trace order: the sorted unique numbers form the grid.
    """
    path = Path(path)
    with _open(path) as f:
        headers, traces = _traces(path, f)
    n_il, n_xl, flat = _grid(path, headers, iline, xline)
    if flat is None:
        return traces.reshape(n_il, n_xl, -1)
    out = np.empty_like(traces)
    out[flat] = traces
    return out.reshape(n_il, n_xl, -1)


def read_labels(path: Path | str, iline: int = INLINE_BYTE, xline: int = XLINE_BYTE
                ) -> np.ndarray:
    """Labels stored as SEG-Y samples, rounded to uint8 (they are often written as floats)."""
    values = np.rint(read(path, iline, xline))
    bad = (values < 0) | (values > 255) | ~np.isfinite(values)
    if bad.any():
        shown = ", ".join(f"{v:g}" for v in np.unique(values[bad])[:5])
        raise FalseCliError(f"{path}: label samples {shown} are not label ids 0..255 — is this "
                            "the seismic instead of the labels?")
    return values.astype(np.uint8)


# ---------------------------------------------------------------- lazy access and streaming


@dataclass(frozen=True)
class Survey:
    """Where every trace of a post-stack SEG-Y lies on its inline/crossline grid, read from
    the trace headers only: samples are read later, a block of traces at a time."""

    path: Path
    index: np.ndarray  # (inlines, crosslines) trace number of each grid cell
    n_samples: int
    dt_us: int
    start: int  # byte offset of the first trace
    trace_bytes: int
    fmt: int
    ilines: np.ndarray  # inline number of each grid row
    xlines: np.ndarray  # crossline number of each grid column

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.index.shape, self.n_samples)

    def _map(self) -> np.ndarray:
        """The traces as (traces, trace_bytes) bytes; mapped afresh by every reader so that
        the pages read do not stay counted in the process's memory."""
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.start,
                         shape=(self.index.size, self.trace_bytes))

    def headers(self, traces: np.ndarray) -> np.ndarray:
        """The 240-byte headers (len(traces), 240) of the given trace numbers."""
        return np.ascontiguousarray(self._map()[traces, :240])

    def field(self, byte: int, key: str) -> np.ndarray:
        """Trace-header field ``byte`` of every grid cell, (inlines, crosslines) int64."""
        return _field(self.path, self._map()[:, :240], byte, key)[self.index]

    def samples(self, traces: np.ndarray) -> np.ndarray:
        """Samples (len(traces), n_samples) float32 of the given trace numbers."""
        dtype = MAPPED.get(self.fmt)
        if dtype is not None and self.trace_bytes == 240 + np.dtype(dtype).itemsize * \
                self.n_samples:
            raw = np.ascontiguousarray(self._map()[traces, 240:])
            return raw.view(dtype).astype(np.float32)
        with _open(self.path) as f:  # IBM floats and others: segyio converts
            return np.stack([f.trace.raw[int(t)] for t in traces]).astype(np.float32, copy=False)


def survey(path: Path | str, iline: int = INLINE_BYTE, xline: int = XLINE_BYTE) -> Survey:
    """The grid of a post-stack SEG-Y (any step, any trace order), samples left on disk."""
    path = Path(path)
    with _open(path) as f:
        start = 3600 + 3200 * max(int(f.ext_headers), 0)
        n, ns, fmt = f.tracecount, len(f.samples), int(f.format)
        dt = int(f.bin[segyio.BinField.Interval]) or int(round(
            float(np.diff(f.samples[:2])[0]) * 1000 if ns > 1 else 4000))
    trace_bytes = (path.stat().st_size - start) // n
    headers = np.memmap(path, dtype=np.uint8, mode="r", offset=start,
                        shape=(n, trace_bytes))[:, :240]
    n_il, n_xl, flat = _grid(path, headers, iline, xline)
    index = np.arange(n, dtype=np.int64)
    if flat is not None:
        index[flat] = np.arange(n)
    index = index.reshape(n_il, n_xl)
    il = _field(path, headers[index[:, 0]], iline, "iline")
    xl = _field(path, headers[index[0]], xline, "xline")
    return Survey(path, index, ns, dt, start, trace_bytes, fmt, il, xl)


class SegyVolume:
    """A SEG-Y cube that reads like a read-only (inlines, crosslines, samples) float32 array:
    ``vol[i]``, ``vol[a:b]``, ``vol[:, j]`` read only the traces they need."""

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, grid: Survey) -> None:
        self.survey = grid

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.survey.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: object) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        traces = self.survey.index[key[:2]]
        out = self.survey.samples(traces.ravel()).reshape(*traces.shape, -1)
        return out[(..., *key[2:])] if len(key) > 2 else out

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)


class TraceWriter:
    """An IEEE-float SEG-Y being written a block of inlines at a time, in the trace order
    of its layout: ``write(first_inline, block)`` with block (inlines, crosslines, samples)."""

    def __init__(self, fh: object, start: int, index: np.ndarray, n_samples: int,
                 headers: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fd = fh.fileno()  # type: ignore[attr-defined]
        self.start, self.index, self.headers = start, index, headers
        self.record = np.dtype([("header", np.uint8, 240), ("samples", ">f4", n_samples)])

    def write(self, first: int, block: np.ndarray) -> None:
        traces = self.index[first: first + len(block)].ravel()
        order = np.argsort(traces, kind="stable")
        traces = traces[order]
        records = np.empty(len(traces), self.record)
        records["header"] = self.headers(traces)
        records["samples"] = np.asarray(block, dtype=np.float32).reshape(len(order), -1)[order]
        breaks = np.flatnonzero(np.diff(traces) != 1) + 1  # runs of consecutive traces
        for run, recs in zip(np.split(traces, breaks), np.split(records, breaks)):
            os.pwrite(self.fd, recs.tobytes(), self.start + int(run[0]) * self.record.itemsize)


@contextlib.contextmanager
def create_like(path: Path | str, grid: Survey) -> Iterator[TraceWriter]:
    """A new SEG-Y (atomic) with the textual, binary and trace headers of ``grid``'s file,
    byte for byte, and IEEE-float samples (the sample format code is the one change)."""
    from falsecli.core.files import atomic_path, reserve

    with open(grid.path, "rb") as src:
        head = bytearray(src.read(grid.start))
    head[FORMAT_OFFSET:FORMAT_OFFSET + 2] = IEEE_FLOAT.to_bytes(2, "big")
    with atomic_path(Path(path)) as tmp, open(tmp, "r+b") as fh:
        fh.write(head)
        writer = TraceWriter(fh, grid.start, grid.index, grid.n_samples, grid.headers)
        fh.truncate(grid.start + grid.index.size * writer.record.itemsize)
        reserve(tmp, fh)
        yield writer


def _set_field(headers: np.ndarray, byte: int, values: np.ndarray | int) -> None:
    """Write one big-endian trace-header field (starting at 1-based ``byte``) of every row."""
    width = _WIDTH[int(byte)]
    raw = np.broadcast_to(np.asarray(values, dtype=">i4" if width == 4 else ">i2"),
                          (len(headers),))
    headers[:, byte - 1: byte - 1 + width] = np.ascontiguousarray(raw).view(np.uint8
                                                                           ).reshape(-1, width)


@contextlib.contextmanager
def create_regular(path: Path | str, shape: tuple[int, int, int], iline: int = INLINE_BYTE,
                   xline: int = XLINE_BYTE, dt_us: int = 4000,
                   title: str = "falsecli synthetic F3-like volume (not real data)"
                   ) -> Iterator[TraceWriter]:
    """A new inline-sorted IEEE-float SEG-Y (atomic) on a regular F3-like grid.

    Inline/crossline numbers go to the standard bytes 189/193 (so any reader opens it) and
    to ``iline``/``xline`` when those differ; CDP X/Y follow a 25 m grid.
    """
    from falsecli.core.files import atomic_path, reserve

    n_il, n_xl, n_z = shape
    spec = segyio.spec()
    spec.iline, spec.xline = INLINE_BYTE, XLINE_BYTE
    spec.format, spec.sorting = IEEE_FLOAT, segyio.TraceSortingFormat.INLINE_SORTING
    spec.samples = np.arange(n_z) * (dt_us / 1000.0)
    spec.ilines = np.arange(FIRST_INLINE, FIRST_INLINE + n_il)
    spec.xlines = np.arange(FIRST_XLINE, FIRST_XLINE + n_xl)
    spec.offsets = [0]

    def headers(traces: np.ndarray) -> np.ndarray:
        i, j = np.divmod(traces, n_xl)
        out = np.zeros((len(traces), 240), np.uint8)
        for byte, values in ((segyio.TraceField.TRACE_SEQUENCE_FILE, traces + 1),
                             (segyio.TraceField.CDP, traces + 1),
                             (segyio.TraceField.SourceGroupScalar, 1),
                             (segyio.TraceField.CDP_X, (ORIGIN_X + BIN_M * j).astype(np.int64)),
                             (segyio.TraceField.CDP_Y, (ORIGIN_Y + BIN_M * i).astype(np.int64)),
                             (segyio.TraceField.TRACE_SAMPLE_COUNT, n_z),
                             (segyio.TraceField.TRACE_SAMPLE_INTERVAL, dt_us),
                             (iline, FIRST_INLINE + i), (xline, FIRST_XLINE + j),
                             (INLINE_BYTE, FIRST_INLINE + i), (XLINE_BYTE, FIRST_XLINE + j)):
            _set_field(out, int(byte), values)
        return out

    with atomic_path(Path(path)) as tmp:
        with segyio.create(str(tmp), spec) as f:
            f.text[0] = segyio.tools.create_text_header({
                1: title,
                2: f"{n_il} inlines {FIRST_INLINE}-{FIRST_INLINE + n_il - 1}, {n_xl} crosslines "
                   f"{FIRST_XLINE}-{FIRST_XLINE + n_xl - 1}, {n_z} samples at {dt_us} us",
                3: f"inline number in trace byte {iline}, crossline number in byte {xline}",
                4: "IEEE float samples, CDP X/Y in metres on a 25 m grid",
            })
            f.bin.update(hdt=dt_us, hns=n_z, format=IEEE_FLOAT, tsort=2, mfeet=1)
        with open(tmp, "r+b") as fh:
            index = np.arange(n_il * n_xl, dtype=np.int64).reshape(n_il, n_xl)
            writer = TraceWriter(fh, 3600, index, n_z, headers)
            fh.truncate(3600 + index.size * writer.record.itemsize)
            reserve(tmp, fh)
            yield writer


def write(path: Path | str, volume: np.ndarray, iline: int = INLINE_BYTE,
          xline: int = XLINE_BYTE, dt_us: int = 4000) -> None:
    """Write a 3-D volume as an inline-sorted IEEE-float SEG-Y (atomically), a block of
    inlines (about 16 MB) at a time (see :func:`create_regular`)."""
    step = max(1, (1 << 22) // max(int(np.prod(volume.shape[1:])), 1))
    with create_regular(path, volume.shape, iline, xline, dt_us) as out:
        for start in range(0, volume.shape[0], step):
            out.write(start, volume[start: start + step])

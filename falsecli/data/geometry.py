"""Survey geometry: the inline and crossline numbers, the sample axis and the CDP coordinates
of a volume, so that every output can speak in survey numbers instead of array indices.

A SEG-Y volume's geometry comes from its trace headers (the bytes of ``data.segy``): the
sorted inline/crossline numbers that form its grid, the sample interval (binary header, as
segyio reads it) and the first sample's time (the delay recording time, trace byte 109), and
CDP X/Y scaled by the coordinate scalar (trace byte 71, or ``data.segy.coord_scalar``):
negative divides, positive multiplies, 0 means 1 (SEG-Y rev 1). A ``.npy`` or synthetic
volume has no survey numbers: its lines are its indices (0, 1, ...), its samples count from
0 in unit ``sample``, and it has no CDP coordinates.

A training run records its volumes' geometry (without the CDP arrays) in its manifest under
:data:`MANIFEST_KEY`, so that later stages name sections by survey numbers without reading
the data again; :func:`recorded` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from falsecli.core.errors import GridError

if TYPE_CHECKING:  # segyio is imported where a SEG-Y is read, not by every figure
    from falsecli.data.segy import Survey

#: the manifest key under which a training run records its volumes' geometry
MANIFEST_KEY = "geometry"
#: the vertical dimension's name for each unit, as segysak names it (``sample``: no unit)
DIMS = {"ms": "twt", "m": "depth", "ft": "depth", "sample": "sample"}
#: the trace-header bytes that ``data.segy`` may leave out (CDP X/Y: SEG-Y rev 1)
SEGY_DEFAULTS = {"iline": 189, "xline": 193, "cdp_x": 181, "cdp_y": 185, "coord_scalar": None,
                 "domain": "time"}
#: inline/crossline byte pairs in common use, tried (never taken silently) when the
#: configured ones do not form a grid
BYTE_PAIRS = ((189, 193, "SEG-Y rev 1"), (5, 21, "Petrel"), (9, 21, "field record / CDP"),
              (17, 21, "energy source point / CDP"), (9, 13, "field record / channel"),
              (17, 13, "energy source point / channel"))
#: the CSV columns that name a section by its survey line numbers, beside its name
NUMBERS = ("inline", "crossline")
#: the splits whose sections belong to the training volume (others are test volume names)
TRAIN_SPLITS = ("train", "val", "pool")


@dataclass(frozen=True)
class SectionFrame:
    """The survey axes of one section [depth, width]: what its columns and rows are."""

    title: str  # "inline 116"
    x_label: str  # "crossline"
    x_values: tuple[int, ...]  # the line number of each column
    y_label: str  # "time (ms)"
    y_start: float
    y_step: float
    rows: int  # samples down the section

    def x(self, column: float) -> str:
        """The line number at a (fractional) column, for a tick label; '' outside."""
        i = int(round(column))
        return str(self.x_values[i]) if 0 <= i < len(self.x_values) else ""

    def y(self, row: float) -> str:
        """The time/depth at a (fractional) row, for a tick label."""
        return f"{self.y_start + row * self.y_step:g}"


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where a volume (inlines, crosslines, samples) lies in its survey."""

    ilines: np.ndarray  # (inlines,) int64 inline number of each grid row
    xlines: np.ndarray  # (crosslines,) int64 crossline number of each grid column
    sample_start: float  # the first sample's time (ms) or depth, 0 for unit "sample"
    sample_interval: float
    n_samples: int
    unit: str  # "ms", "m", "ft" or "sample"
    cdp_x: np.ndarray | None = None  # (inlines, crosslines) float64, scaled
    cdp_y: np.ndarray | None = None

    @classmethod
    def index(cls, shape: tuple[int, ...]) -> Geometry:
        """The geometry of a volume with no survey numbers: indices and samples."""
        n_il, n_xl, n_z = (int(n) for n in shape)
        return cls(np.arange(n_il), np.arange(n_xl), 0.0, 1.0, n_z, "sample")

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.ilines), len(self.xlines), self.n_samples

    @property
    def samples(self) -> np.ndarray:
        """The time/depth of every sample (float64)."""
        return self.sample_start + self.sample_interval * np.arange(self.n_samples)

    @property
    def vertical(self) -> str:
        """The vertical dimension's name: ``twt``, ``depth`` or ``sample``."""
        return DIMS[self.unit]

    @property
    def vertical_label(self) -> str:
        """The vertical axis label with its unit."""
        return {"twt": f"time ({self.unit})", "depth": f"depth ({self.unit})"}.get(
            self.vertical, "depth (samples)")

    def line(self, axis: str, index: int) -> int:
        """The survey number of section ``index`` along ``axis`` (inline or crossline)."""
        return int((self.ilines if axis == "inline" else self.xlines)[index])

    def numbers(self, axis: str, index: int) -> dict[str, int | str]:
        """``inline`` and ``crossline`` columns of a section: its own line's number, the
        other blank (an inline section lies on one inline and every crossline)."""
        number = self.line(axis, index)
        return {key: number if key == axis else "" for key in NUMBERS}

    def label(self, axis: str, index: int) -> str:
        """How an interpreter names the section: ``inline 116``."""
        return f"{axis} {self.line(axis, index)}"

    def frame(self, axis: str, index: int) -> SectionFrame:
        """The section's survey axes, for figures."""
        across = self.xlines if axis == "inline" else self.ilines
        return SectionFrame(self.label(axis, index),
                            "crossline" if axis == "inline" else "inline",
                            tuple(int(v) for v in across), self.vertical_label,
                            self.sample_start, self.sample_interval, self.n_samples)

    def describe(self) -> dict[str, Any]:
        """Line ranges and steps, the sample axis and the coordinate extent (inspect)."""
        out: dict[str, Any] = {"unit": self.unit, "sample_start": self.sample_start,
                               "sample_interval": self.sample_interval,
                               "sample_end": float(self.samples[-1]) if self.n_samples else None}
        for key, values in (("inline", self.ilines), ("crossline", self.xlines)):
            steps = np.unique(np.diff(values))
            out[key] = {"first": int(values[0]), "last": int(values[-1]), "count": len(values),
                        "step": int(steps[0]) if len(steps) == 1 else None}
        if self.cdp_x is not None and self.cdp_y is not None:
            out["cdp_x"] = [float(self.cdp_x.min()), float(self.cdp_x.max())]
            out["cdp_y"] = [float(self.cdp_y.min()), float(self.cdp_y.max())]
        return out

    def to_json(self) -> dict[str, Any]:
        """The numbers later stages need (not the CDP arrays: F3's would be megabytes)."""
        return {"ilines": self.ilines.tolist(), "xlines": self.xlines.tolist(),
                "sample_start": self.sample_start, "sample_interval": self.sample_interval,
                "n_samples": self.n_samples, "unit": self.unit}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Geometry:
        return cls(np.asarray(d["ilines"], np.int64), np.asarray(d["xlines"], np.int64),
                   float(d["sample_start"]), float(d["sample_interval"]), int(d["n_samples"]),
                   str(d["unit"]))


def scale(values: np.ndarray, scalar: np.ndarray | int) -> np.ndarray:
    """Coordinates with the SEG-Y scalar applied: negative divides by its magnitude, positive
    multiplies, 0 is 1 (SEG-Y rev 1, trace bytes 71-72)."""
    s = np.asarray(scalar, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    return np.where(s < 0, v / np.where(s < 0, -s, 1.0), v * np.where(s > 0, s, 1.0))


def from_survey(grid: Survey, segy_bytes: Mapping[str, Any]) -> Geometry:
    """The geometry of a SEG-Y file from its trace headers (``segy_bytes``: ``data.segy``)."""
    import segyio

    opts = {**SEGY_DEFAULTS, **segy_bytes}
    first = grid.headers(grid.index.ravel()[:1])
    delay = int(first[0, 108:110].view(">i2")[0])  # trace bytes 109-110, ms (or depth)
    scalar = opts["coord_scalar"]
    if scalar is None:
        scalar = grid.field(segyio.TraceField.SourceGroupScalar, "coord_scalar")
    coords = [scale(grid.field(opts[key], key), scalar) for key in ("cdp_x", "cdp_y")]
    unit = "ms"
    if opts["domain"] == "depth":
        with open(grid.path, "rb") as fh:
            fh.seek(segyio.BinField.MeasurementSystem - 1)
            unit = "ft" if int.from_bytes(fh.read(2), "big") == 2 else "m"
    return Geometry(np.asarray(grid.ilines, np.int64), np.asarray(grid.xlines, np.int64),
                    float(delay), grid.dt_us / 1000.0, grid.n_samples, unit, *coords)


def regular_pairs(path: Path | str, skip: tuple[int, int] | None = None
                  ) -> list[tuple[int, int, str, tuple[int, int]]]:
    """The common byte pairs (other than ``skip``) whose numbers put the traces of ``path``
    on a regular grid of more than one inline and crossline: (iline, xline, name, grid)."""
    from falsecli.data import segy

    out = []
    for iline, xline, name in BYTE_PAIRS:
        if (iline, xline) == skip:
            continue
        try:
            grid = segy.survey(path, iline, xline)
        except GridError:
            continue
        if min(grid.index.shape) > 1:
            out.append((iline, xline, name, grid.index.shape))
    return out


def byte_hint(path: Path | str, iline: int, xline: int) -> str:
    """What to tell a user whose inline/crossline bytes form no grid: the common pairs that
    would, or that none does (the caller appends it to its error; nothing is switched)."""
    pairs = regular_pairs(path, (int(iline), int(xline)))
    if not pairs:
        tried = ", ".join(f"{a}/{b}" for a, b, _ in BYTE_PAIRS)
        return f" (no common byte pair — {tried} — forms a grid either)"
    shown = "; ".join(f"data.segy.iline={a} xline={b} ({name}) gives {n} x {m}"
                      for a, b, name, (n, m) in pairs)
    return f" — these bytes would form a regular grid: {shown}"


def volume_of(split: str) -> str:
    """The volume a tracked section of ``split`` lies in (val and pool: the training one)."""
    return "train" if split in TRAIN_SPLITS else split


def record(geometries: Mapping[str, Geometry]) -> dict[str, Any]:
    """What a training run writes under :data:`MANIFEST_KEY` of its manifest."""
    return {name: g.to_json() for name, g in geometries.items()}


def recorded(manifest: Mapping[str, Any]) -> dict[str, Geometry]:
    """The geometry a run recorded, by volume name; a run made before runs recorded it gets
    index geometries from the volume shapes of its fingerprint."""
    if MANIFEST_KEY in manifest:
        return {name: Geometry.from_json(d) for name, d in manifest[MANIFEST_KEY].items()}
    volumes = manifest.get("fingerprint", {}).get("data", {}).get("volumes", {})
    return {name: Geometry.index(v["shape"]) for name, v in volumes.items()}


def section_frame(geometries: Mapping[str, Geometry], split: str, axis: str, index: int
                  ) -> SectionFrame | None:
    """A tracked section's survey axes (None when its volume's geometry is unknown)."""
    geometry = geometries.get(volume_of(split))
    return None if geometry is None else geometry.frame(axis, index)


def role_numbers(geometry: Geometry, sections: Mapping[str, Any], row: Mapping[str, Any],
                 roles: tuple[str, ...]) -> dict[str, int | str]:
    """``<role>_inline``/``<role>_crossline`` columns of a row that names sections (by name,
    under each of ``roles``, e.g. source and target), from ``sections`` (name -> an object
    with ``axis`` and ``index``); blank for a name not among them."""
    out: dict[str, int | str] = {}
    for role in roles:
        found = sections.get(row[role])
        numbers = (dict.fromkeys(NUMBERS, "") if found is None
                   else geometry.numbers(found.axis, found.index))
        out.update({f"{role}_{key}": value for key, value in numbers.items()})
    return out


def section_numbers(geometries: Mapping[str, Geometry], split: str, axis: str, index: int
                    ) -> dict[str, int | str]:
    """The ``inline``/``crossline`` CSV columns of a tracked section (blank when its volume's
    geometry is unknown)."""
    geometry = geometries.get(volume_of(split))
    if geometry is None:
        return dict.fromkeys(NUMBERS, "")
    return geometry.numbers(axis, index)

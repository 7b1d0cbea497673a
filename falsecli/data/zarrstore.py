"""Volumes as a Zarr store that ``xarray.open_zarr`` opens with the survey's coordinates.

The layout follows segysak's (and so MDIO-style tools'): dimensions ``iline``, ``xline`` and
``twt`` (time, ms) or ``depth`` — ``sample`` for a volume without survey numbers (``.npy``,
synthetic) — with ``cdp_x``/``cdp_y`` (``iline`` x ``xline``) as coordinates when the input
was SEG-Y. A class variable (facies) is stored as integers with the class names as CF
``flag_values``/``flag_meanings`` attributes. The store is written a chunk-aligned block of
inlines at a time, so an F3-sized cube needs only one block in memory. Zarr format 3
(zarr-python >= 3, the ``zarr`` extra: ``pip install "falsecli[zarr]"``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from falsecli.core.errors import FalseCliError
from falsecli.data.geometry import Geometry

#: inlines, crosslines and samples per chunk (at most): 1 MB of float32, a block of inlines
#: is written as whole chunks
CHUNKS = (16, 128, 128)
#: samples per block of inlines written at once (16 MB of float32)
BLOCK_SAMPLES = 1 << 22


def require_zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise FalseCliError("--format zarr needs the zarr package: pip install "
                            "'falsecli[zarr]' (zarr and xarray)") from None
    return zarr


def class_attrs(classes: list[str]) -> dict[str, Any]:
    """The attributes that name a class variable's integer values (CF flags)."""
    return {"flag_values": list(range(len(classes))), "flag_meanings": " ".join(classes),
            "classes": list(classes)}


class ZarrCube:
    """A Zarr store of volume-shaped variables on one geometry, written by inline blocks."""

    def __init__(self, path: Path | str, geometry: Geometry, variables: Mapping[str, Any],
                 attrs: Mapping[str, Any] | None = None,
                 var_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """``variables``: name -> dtype. Creates the store with its coordinates; the
        variables are filled by :meth:`write`."""
        zarr = require_zarr()
        self.geometry = geometry
        self.dims = ("iline", "xline", geometry.vertical)
        shape = geometry.shape
        self.chunks = tuple(min(c, max(n, 1)) for c, n in zip(CHUNKS, shape))
        self.root = zarr.open_group(str(path), mode="w", zarr_format=3,
                                    attributes=dict(attrs or {}))
        coords = {"iline": geometry.ilines, "xline": geometry.xlines,
                  geometry.vertical: geometry.samples}
        for name, values in coords.items():
            self._array(name, np.asarray(values), (name,), {"units": geometry.unit}
                        if name == geometry.vertical and geometry.unit != "sample" else {})
        names = list(coords)
        if geometry.cdp_x is not None and geometry.cdp_y is not None:
            for name, values in (("cdp_x", geometry.cdp_x), ("cdp_y", geometry.cdp_y)):
                self._array(name, values, self.dims[:2], {})
            names += ["cdp_x", "cdp_y"]
        extra = {"coordinates": "cdp_x cdp_y"} if "cdp_x" in names else {}
        self.arrays = {}
        for name, dtype in variables.items():
            self.arrays[name] = self.root.create_array(
                name, shape=shape, chunks=self.chunks, dtype=np.dtype(dtype), fill_value=0,
                dimension_names=self.dims,
                attributes={**extra, **dict((var_attrs or {}).get(name, {}))})

    def _array(self, name: str, values: np.ndarray, dims: tuple[str, ...],
               attrs: dict[str, Any]) -> None:
        array = self.root.create_array(name, shape=values.shape, dtype=values.dtype,
                                       dimension_names=dims, attributes=attrs)
        array[...] = values

    @property
    def step(self) -> int:
        """Inlines per :meth:`write` block: whole chunks, about :data:`BLOCK_SAMPLES`."""
        per_inline = max(int(np.prod(self.geometry.shape[1:])), 1)
        chunks = max(1, BLOCK_SAMPLES // (per_inline * self.chunks[0]))
        return chunks * self.chunks[0]

    def write(self, name: str, first: int, block: np.ndarray) -> None:
        """Inlines ``first .. first + len(block)`` of variable ``name``."""
        self.arrays[name][first: first + len(block)] = block

    def close(self) -> None:
        """Consolidate the metadata (one read opens the store; xarray looks for it first).
        zarr warns that format 3 does not specify it yet: xarray and zarr-python read it."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            require_zarr().consolidate_metadata(self.root.store)


def write_volumes(path: Path | str, geometry: Geometry, sources: Mapping[str, Path],
                  attrs: Mapping[str, Any] | None = None,
                  var_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """A store of the volume-shaped ``.npy`` files ``sources`` (name -> path), copied a
    chunk-aligned block of inlines at a time; each block maps its file afresh, so the pages
    read do not stay counted in the process's memory."""
    dtypes = {k: np.load(v, mmap_mode="r").dtype for k, v in sources.items()}
    cube = ZarrCube(path, geometry, dtypes, attrs, var_attrs)
    for name, source in sources.items():
        for start in range(0, geometry.shape[0], cube.step):
            cube.write(name, start, np.array(np.load(source, mmap_mode="r")[
                start: start + cube.step]))
    cube.close()
    return Path(path)

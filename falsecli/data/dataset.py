"""Volumes and sections: the user's data turned into validated inline/crossline sections.

A volume is inline x crossline x depth. Section ``inline_i`` is ``volume[i, :, :].T`` and
``crossline_j`` is ``volume[:, j, :].T`` (depth down, as an interpreter looks at it). Large
volumes stay memory-mapped: a section is read and cast to float32 only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np

from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.data import volumes
from falsecli.data.volumes import Volume



@dataclass(frozen=True)
class Section:
    """One 2-D section of a volume. ``split`` is train, val, or a test volume's name."""

    name: str
    split: str
    volume: str
    axis: str
    index: int
    shape: tuple[int, int]  # (depth, width)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "axis": self.axis,
                "index": self.index, "shape": list(self.shape)}


@dataclass
class Dataset:
    """The training volume, the test volumes, the classes and the normalisation."""

    train: Volume
    tests: list[Volume]
    classes: list[str]
    ignore_index: int
    val_every: int
    #: crossing (the paper): tracked sections are not trained on as sections, but their pixels
    #: are seen through the training sections that cross them; strict: those pixels are
    #: ignored in every training section too
    holdout: str = "crossing"
    #: ``train.labelled``: the training sections whose labels train (None: every section
    #: with a label); the others form the pool
    labelled: frozenset[str] | None = None
    _stats: tuple[float, float] | None = field(default=None, repr=False)
    _pool: list[Section] | None = field(default=None, repr=False)

    @property
    def volumes(self) -> dict[str, Volume]:
        return {v.name: v for v in [self.train, *self.tests]}

    # ------------------------------------------------------------ sections

    def _axis_sections(self, vol: Volume, split: str, keep: Any, prefix: str = ""
                       ) -> list[Section]:
        n_il, n_xl, depth = vol.seismic.shape
        out = []
        for axis, count, width in (("inline", n_il, n_xl), ("crossline", n_xl, n_il)):
            out += [Section(f"{prefix}{axis}_{i:04d}", split, vol.name, axis, i, (depth, width))
                    for i in range(count) if keep(i)]
        return out

    def sections(self, split: str) -> list[Section]:
        """Sections of a split, inlines first.

        ``train``: inlines and crosslines with ``index % val_every != 0``; ``val``: the others
        (the tracked validation set of the paper); a test volume's name: its every
        ``val_every``-th inline and crossline (tracked like val); ``<name>:all``: every inline
        of a test volume (each voxel once, for test metrics).
        """
        every = self.val_every
        if split == "train":
            return self._axis_sections(self.train, "train", lambda i: i % every != 0)
        if split == "val":
            return self._axis_sections(self.train, "val", lambda i: i % every == 0)
        name, _, scope = split.partition(":")
        vol = self.volumes.get(name)
        if vol is None or vol is self.train:
            valid = ", ".join(["train", "val", *(v.name for v in self.tests)])
            raise FalseCliError(f"unknown split '{split}'; the splits are {valid}")
        if scope == "all":
            return [s for s in self._axis_sections(vol, name, lambda i: True, f"{name}_")
                    if s.axis == "inline"]
        return self._axis_sections(vol, name, lambda i: i % every == 0, f"{name}_")

    def tracked(self, splits: Iterable[str]) -> list[Section]:
        """The tracked sections of ``train.track`` (val and/or test names), in a fixed order.

        Each split once: a repeated one would track its pixels twice and split the val
        sections, whose metrics are read from one contiguous run of the tracked pixels.
        """
        valid = ["val", "pool", *(v.name for v in self.tests)]
        out: list[Section] = []
        for split in dict.fromkeys(splits):
            if split not in valid:
                raise FalseCliError(f"config key 'train.track' names '{split}'; track val, pool "
                                    f"and/or test volumes: {', '.join(valid)}")
            out += self.pool() if split == "pool" else self.sections(split)
        return out

    def trainable(self) -> list[Section]:
        """The training sections whose labels may train: all of them, or those of
        ``train.labelled``. (A section whose labels are all ``ignore_index`` is still listed;
        it trains nothing, and :func:`~falsecli.method.training.pool_arrays` drops it.)"""
        train = self.sections("train")
        if self.labelled is None:
            return train
        unknown = sorted(self.labelled - {s.name for s in train})
        if unknown:
            raise FalseCliError(
                f"config key 'train.labelled' names '{unknown[0]}', which is not a training "
                f"section (inline_NNNN or crossline_NNNN with index % {self.val_every} != 0 "
                f"and below {self.train.seismic.shape[0]} / {self.train.seismic.shape[1]})")
        return [s for s in train if s.name in self.labelled]

    def pool(self) -> list[Section]:
        """The unlabelled training sections, split ``pool``: not in ``train.labelled``, or
        (when it is null) with every label ``ignore_index``. Their labels read as
        ``ignore_index``: tracked, they record switch events only."""
        if self._pool is None:
            keep = {s.name for s in self.trainable()}
            self._pool = [replace(s, split="pool") for s in self.sections("train")
                          if s.name not in keep or not (self.label(s) != self.ignore_index).any()]
        return self._pool

    # ------------------------------------------------------------ pixels

    def raw(self, section: Section) -> np.ndarray:
        vol = self.volumes[section.volume]
        return vol.section(vol.seismic, section.axis, section.index)

    def image(self, section: Section) -> np.ndarray:
        """Normalised float32 image [depth, width] (statistics of the training sections)."""
        mean, std = self.stats
        img = np.asarray(self.raw(section), dtype=np.float32)
        return (img - np.float32(mean)) / np.float32(std)

    def label(self, section: Section) -> np.ndarray:
        """uint8 labels [depth, width]; a section of an unlabelled (test) volume is all
        ``ignore_index``: tracked, it still records switch events; so is a pool section. With
        ``holdout: strict`` a training section's columns where it crosses a tracked section
        are ``ignore_index``, so no tracked pixel's label is ever trained on."""
        vol = self.volumes[section.volume]
        if vol.labels is None or section.split == "pool":
            return np.full(section.shape, self.ignore_index, dtype=np.uint8)
        labels = np.array(vol.section(vol.labels, section.axis, section.index), dtype=np.uint8)
        if self.holdout == "strict" and section.split == "train":
            labels[:, self.crossing_columns(section)] = self.ignore_index
        return labels

    def crossing_columns(self, section: Section) -> np.ndarray:
        """bool (width,): the columns of a training section that lie on a tracked (val)
        section of the other axis — ~1/val_every of its pixels (80 % of a tracked inline's
        pixels lie on training crosslines)."""
        return np.arange(section.shape[1]) % self.val_every == 0

    def stack(self, sections: list[Section]) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, depth, width) float32 and labels (N, depth, width) uint8 of same-shape
        sections, filled in place: at F3 scale the list of per-section copies that
        ``np.stack`` needs beside the stack would cost another 230 MB per shape."""
        shape = (len(sections), *sections[0].shape)
        images, labels = np.empty(shape, np.float32), np.empty(shape, np.uint8)
        for i, s in enumerate(sections):
            images[i] = self.image(s)
            labels[i] = self.label(s)
        return images, labels

    @property
    def stats(self) -> tuple[float, float]:
        """Mean and standard deviation over the voxels of the training sections only.

        A voxel is in a training section unless both its inline and its crossline index are
        multiples of ``val_every``. Computed inline by inline (memory-mapped friendly).
        """
        if self._stats is None:
            seis = self.train.seismic
            keep_xl = np.arange(seis.shape[1]) % self.val_every != 0
            total = total_sq = 0.0
            count = 0
            for i in range(seis.shape[0]):
                plane = np.asarray(seis[i], dtype=np.float64)
                if i % self.val_every == 0:
                    plane = plane[keep_xl]
                total += plane.sum()
                total_sq += np.square(plane).sum()
                count += plane.size
            if count == 0:
                raise FalseCliError("the training volume has no training sections "
                                    f"(every section is a multiple of val_every={self.val_every})")
            mean = total / count
            std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0))) or 1.0
            self._stats = (float(mean), std)
        return self._stats


def load_dataset(cfg: Config) -> Dataset:
    """Load and validate the data described by ``cfg['data']`` (synthetic, f3 or files)."""
    d = cfg["data"]
    train, tests = volumes.load(d)
    labelled = cfg.get("train", {}).get("labelled")
    ds = Dataset(train, tests, list(d["classes"]), int(d["ignore_index"]), int(d["val_every"]),
                 d["holdout"], None if labelled is None else frozenset(labelled))
    for vol in [train, *tests]:
        volumes.validate(vol, ds.classes, ds.ignore_index)
    return ds

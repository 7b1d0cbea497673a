"""Training samples grouped by shape, on the device or streamed to it.

Inlines and crosslines differ in width and are never padded: samples of one shape are stacked
into a group, and every batch (or crop) comes from one group. The segmentation network trains
on seeded shuffled batches of whole sections (:meth:`Pool.batches`); the style-transfer model
on random crops (:meth:`Pool.sample`) of the sections that hold a class (:meth:`Pool.targets`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from falsecli.core import console
from falsecli.core.errors import FalseCliError
from falsecli.data.dataset import Dataset, Section

#: fraction of free GPU memory the data may take to stay resident on the device
RESIDENT_SHARE = 0.5
Shape = tuple[int, int]
#: per shape: images (N, H, W) float32 and labels (N, H, W) uint8
Arrays = dict[Shape, tuple[np.ndarray, np.ndarray]]


def by_shape(sections: Sequence[Section]) -> dict[Shape, list[Section]]:
    """Sections grouped by shape (first-seen order), so that each group stacks."""
    groups: dict[Shape, list[Section]] = {}
    for s in sections:
        groups.setdefault(s.shape, []).append(s)
    return groups


def store(array: np.ndarray, device: torch.device, resident: bool) -> torch.Tensor:
    """On the device, or in (pageable) host memory when not resident: batches are staged
    through pinned buffers instead of page-locking the whole pool."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device) if resident else tensor


def fits(n_bytes: int, device: torch.device) -> bool:
    """Whether ``n_bytes`` of data may stay resident on ``device``."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes < RESIDENT_SHARE * free


def pinned_like(source: torch.Tensor, rows: int) -> torch.Tensor:
    """A pinned host buffer for ``rows`` rows of ``source``; the caching host allocator keeps
    it from reuse until the asynchronous copy out of it has finished."""
    return torch.empty((rows, *source.shape[1:]), dtype=source.dtype, pin_memory=True)


def _cuts(n: int, batch_size: int, smallest: int = 2) -> list[int]:
    """Batch boundaries of ``n`` samples; a last batch under ``smallest`` joins the one
    before (ASPP's image pooling cannot normalise a batch of one, and under torchrun every
    process needs a sample of every batch)."""
    cuts = list(range(0, n, batch_size)) + [n]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < smallest:
        del cuts[-2]
    return cuts


@dataclass
class Group:
    """Same-shape samples: images (N, H, W) float32 and labels (N, H, W) uint8; the first
    ``len(sections)`` are these sections (samples from elsewhere have none)."""

    images: torch.Tensor
    labels: torch.Tensor
    sections: list[Section] = field(default_factory=list)


class Pool:
    """The samples grouped by shape: ``arrays`` per shape, ``sections`` per shape naming its
    first samples. Groups of fewer than ``smallest`` samples are left out (2 by default:
    ASPP's image pooling normalises over the batch; under torchrun, the number of processes)."""

    def __init__(self, arrays: Arrays, device: torch.device, resident: bool = True,
                 smallest: int = 2, sections: Mapping[Shape, list[Section]] | None = None
                 ) -> None:
        self.device = device
        self.resident = resident
        self.smallest = smallest
        few = [shape for shape, (img, _) in arrays.items() if len(img) < smallest]
        if few:
            console.log(f"train: sample(s) of shape(s) {few} are fewer than {smallest} and "
                        "are left out")
        self.groups = [Group(store(img, device, resident), store(lab, device, resident),
                             list((sections or {}).get(shape, [])))
                       for shape, (img, lab) in arrays.items() if len(img) >= smallest]
        self.n_samples = sum(len(g.images) for g in self.groups)

    @classmethod
    def load(cls, ds: Dataset, sections: Sequence[Section], device: torch.device) -> Pool:
        """``sections`` stacked per shape, resident on ``device``, every group kept (crops
        are drawn from single sections)."""
        groups = by_shape(sections)
        return cls({shape: ds.stack(group) for shape, group in groups.items()}, device,
                   smallest=1, sections=groups)

    @property
    def sections(self) -> list[list[Section]]:
        return [g.sections for g in self.groups]

    # ------------------------------------------------------------ whole sections

    def n_batches(self, batch_size: int) -> int:
        return sum(len(_cuts(len(g.images), batch_size, self.smallest)) - 1
                   for g in self.groups)

    def batches(self, generator: torch.Generator, batch_size: int
                ) -> list[tuple[Group, torch.Tensor]]:
        """Each group shuffled and cut into batches, all batches in a shuffled order;
        indices on the data's device (one copy per epoch)."""
        perms = [torch.randperm(len(g.images), generator=generator) for g in self.groups]
        index = torch.cat(perms).to(self.device if self.resident else "cpu")
        spans: list[tuple[Group, int, int]] = []
        start = 0
        for group, perm in zip(self.groups, perms):
            cuts = _cuts(len(perm), batch_size, self.smallest)
            spans += [(group, start + a, start + b) for a, b in itertools.pairwise(cuts)]
            start += len(perm)
        order = torch.randperm(len(spans), generator=generator).tolist()
        return [(spans[i][0], index[spans[i][1]:spans[i][2]]) for i in order]

    def fetch(self, group: Group, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device: gathered there, or gathered into pinned host memory and
        copied without blocking the host."""
        if self.resident:
            return group.images[index], group.labels[index]
        out = []
        for source in (group.images, group.labels):
            staged = torch.index_select(source, 0, index, out=pinned_like(source, len(index)))
            out.append(staged.to(self.device, non_blocking=True))
        return out[0], out[1]

    # ------------------------------------------------------------ crops

    def targets(self, k: int, class_name: str) -> list[Section]:
        """Sections containing class ``k``, of the most common shape among them (ties: the
        larger shape): the transfer targets, all of one shape."""
        having = [[s for s, has in zip(g.sections, (g.labels == k).flatten(1).any(1).tolist())
                   if has] for g in self.groups]
        best = max(having, key=lambda g: (len(g), g[0].shape[0] * g[0].shape[1] if g else 0),
                   default=[])
        if not best:
            raise FalseCliError(f"transfer: no training section contains class '{class_name}', "
                                "so there is nothing to transfer its style into — choose "
                                "another class with --class")
        return best

    def crop_size(self, crop: Sequence[int]) -> tuple[int, int]:
        """``crop`` clipped to the smallest sample, so every sample can give a crop."""
        return (min([crop[0], *(g.images.shape[1] for g in self.groups)]),
                min([crop[1], *(g.images.shape[2] for g in self.groups)]))

    def sample(self, rng: np.random.Generator, crop: tuple[int, int], batch: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` random crops from one shape group (chosen in proportion to its size).

        Offsets are drawn on the host, so cropping is plain slicing: no device sync.
        """
        sizes = np.array([len(g.images) for g in self.groups], dtype=np.float64)
        group = self.groups[int(rng.choice(len(sizes), p=sizes / sizes.sum()))]
        n, height, width = group.images.shape
        h, w = crop
        picks = zip(rng.integers(0, n, batch), rng.integers(0, height - h + 1, batch),
                    rng.integers(0, width - w + 1, batch))
        slices = [(int(i), slice(int(z), int(z) + h), slice(int(x), int(x) + w))
                  for i, z, x in picks]
        return (torch.stack([group.images[s] for s in slices]),
                torch.stack([group.labels[s] for s in slices]))

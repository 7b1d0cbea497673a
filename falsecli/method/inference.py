"""A trained network applied to a whole volume, section by section (``falsecli predict``).

Sections slide along the inlines and/or the crosslines in batches; with both axes every
voxel gets the mean of its two softmax estimates. The inline estimates wait for the
crossline pass in a float16 memory map on disk, which is mapped afresh for every batch, so
that memory stays bounded by a batch of sections whatever the volume's size. From the
probabilities come the facies (argmax), the confidence (the largest probability) and the
entropy normalised by ``log(classes)`` to [0, 1] (0: certain, 1: uniform).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from falsecli.core.errors import FalseCliError
from falsecli.core.files import reserve
from falsecli.method.training import logits

#: the dtype of the inline estimates kept for the crossline pass (probabilities in [0, 1]
#: lose < 5e-4 in float16, half the disk of float32)
SCRATCH_DTYPE = np.float16


def min_depth(model_cfg: dict[str, Any]) -> int:
    """The fewest samples per trace a prediction can resolve: one cell of the network's
    coarsest feature map (its output stride); shorter traces would be one interpolated row."""
    return int(model_cfg["output_stride"])


def check_depth(source: str, depth: int, model_cfg: dict[str, Any]) -> None:
    """Refuse a volume whose traces are shorter than the network can resolve, saying what
    would be needed."""
    need = min_depth(model_cfg)
    if depth < need:
        raise FalseCliError(
            f"{source}: {depth} samples per trace, but the model (output stride "
            f"{model_cfg['output_stride']}) needs at least {need}: its coarsest feature map "
            f"has one cell per {need} samples; pad the traces to {need} or more samples "
            "(any longer depth works: the network is fully convolutional)")


def scores(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Facies (uint8), confidence and normalised entropy (float32) of probabilities whose
    last axis holds the classes."""
    p = np.asarray(probs, dtype=np.float32)
    n_classes = p.shape[-1]
    facies = p.argmax(-1).astype(np.uint8)
    confidence = p.max(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), np.float32(0))
    entropy = -plogp.sum(-1) / np.float32(np.log(n_classes)) if n_classes > 1 else \
        np.zeros_like(confidence)
    return facies, confidence, np.clip(entropy, 0, 1).astype(np.float32)


def probabilities(model: torch.nn.Module, raw: np.ndarray, norm: dict[str, float],
                  amp: bool) -> np.ndarray:
    """Softmax probabilities (N, width, depth, classes) float32 of sections ``raw``
    (N, width, depth) as they lie in the volume, normalised with the model's statistics."""
    images = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)).transpose(1, 2)
    images = (images - float(norm["mean"])) / float(norm["std"])
    probs = torch.softmax(logits(model, images, amp).float(), dim=1)  # (N, C, depth, width)
    return probs.permute(0, 3, 2, 1).cpu().numpy()


def sections(volume: Any, axis: str, start: int, stop: int) -> np.ndarray:
    """Sections ``start:stop`` along ``axis`` as (N, width, depth) float32."""
    block = volume[start:stop] if axis == "inline" else volume[:, start:stop]
    block = np.array(block, dtype=np.float32)  # read into memory, writable for torch
    return block if axis == "inline" else block.transpose(1, 0, 2)


def n_sections(shape: tuple[int, ...], axes: str) -> int:
    """Sections a sweep predicts."""
    return {"inline": shape[0], "crossline": shape[1], "both": shape[0] + shape[1]}[axes]


def sweep(model: torch.nn.Module, volume: Any, norm: dict[str, float], axes: str,
          batch_size: int, amp: bool, scratch: Path,
          advance: Callable[[int], None] = lambda n: None
          ) -> Iterator[tuple[str, int, np.ndarray]]:
    """(axis, first section, probabilities (N, width, depth, classes)) blocks that cover
    ``volume`` (inlines x crosslines x depth, any array-like) once each.

    ``axes`` both: the inline pass goes to ``scratch`` (a float16 .npy of the volume's
    probabilities, deleted afterwards), and each crossline block is averaged with it.
    """
    n_il, n_xl, depth = volume.shape
    if axes != "both":
        count = n_il if axes == "inline" else n_xl
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            yield axes, start, probabilities(model, sections(volume, axes, start, stop), norm,
                                             amp)
            advance(stop - start)
        return
    n_classes = None
    try:
        for start in range(0, n_il, batch_size):
            stop = min(start + batch_size, n_il)
            probs = probabilities(model, sections(volume, "inline", start, stop), norm, amp)
            if n_classes is None:
                n_classes = probs.shape[-1]
                np.lib.format.open_memmap(scratch, "w+", SCRATCH_DTYPE,
                                          (n_il, n_xl, depth, n_classes))
                reserve(scratch)  # a full disk: one line, not a bus error in the mapping
            mapped = np.load(scratch, mmap_mode="r+")
            mapped[start:stop] = probs
            del mapped  # unmapped: its pages leave this process's memory
            advance(stop - start)
        for start in range(0, n_xl, batch_size):
            stop = min(start + batch_size, n_xl)
            probs = probabilities(model, sections(volume, "crossline", start, stop), norm, amp)
            mapped = np.load(scratch, mmap_mode="r")
            probs += mapped[:, start:stop].transpose(1, 0, 2, 3)
            del mapped
            probs *= 0.5
            yield "crossline", start, probs
            advance(stop - start)
    finally:
        scratch.unlink(missing_ok=True)

"""Batched augmentations on the device, labels kept aligned with the images.

Each sample draws its own flip or angle from a generator on the batch's device, so nothing
synchronises with the host and a seed reproduces the run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def flip(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror each sample of (N, H, W) left-right with probability 1/2."""
    mask = (torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
            ).view(-1, 1, 1)
    return torch.where(mask, images.flip(-1), images), torch.where(mask, labels.flip(-1), labels)


def rotate_by(images: torch.Tensor, labels: torch.Tensor, radians: torch.Tensor,
              ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate sample i of (N, H, W) by ``radians[i]`` about its centre, in pixel space.

    Images are resampled bilinearly (zero = the mean outside), labels by nearest neighbour;
    label pixels rotated in from outside the section become ``ignore_index``.
    """
    n, h, w = images.shape
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    # normalised coordinates scale x by W/2 and y by H/2: rescale so the rotation is rigid
    theta = torch.stack([torch.stack([cos, -sin * (h / w), zero], -1),
                         torch.stack([sin * (w / h), cos, zero], -1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), [n, 1, h, w], align_corners=False)
    rotated = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)[:, 0]
    # labels shifted by one, so that 0 marks pixels sampled from outside the section
    shifted = F.grid_sample(labels[:, None].to(images.dtype) + 1, grid, mode="nearest",
                            padding_mode="zeros", align_corners=False)[:, 0]
    out = torch.where(shifted == 0, float(ignore_index), shifted - 1)
    return rotated, out.to(labels.dtype)


def rotate(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
           degrees: float, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each sample by a uniform random angle in [-degrees, degrees]."""
    u = torch.rand(images.shape[0], generator=generator, device=images.device)
    return rotate_by(images, labels, (2 * u - 1) * math.radians(degrees), ignore_index)


def augment(kind: str, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
            *, degrees: float, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``train.aug`` (none | flip | rotate) to a batch."""
    if kind == "flip":
        return flip(images, labels, generator)
    if kind == "rotate":
        return rotate(images, labels, generator, degrees, ignore_index)
    return images, labels

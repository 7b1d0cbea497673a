"""The transfer methods (``transfer.method``): what each makes of the style sources and the
targets -- the samples, their identity controls, the Fig. 3 rows and the method's own quality
figures -- for the transfer stage (:mod:`falsecli.stages.transfer`) to write.

- ``sean`` (the paper): the trained generator swaps the class's style code
  (:mod:`falsecli.method.style`), blended into the target only with ``transfer.composite``;
- ``statistics``: no generator; the source class's depth spectrum, lateral coherence and
  amplitude distribution are matched onto the target's class
  (:mod:`falsecli.method.classmatch`), which alone changes, its change feathered
  ``composite_feather`` pixels outward (``composite_dilate`` is the generator's only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from falsecli.core.config import Config
from falsecli.data.dataset import Dataset, Section
from falsecli.method import classmatch, style
from falsecli.method.sean import Sean


def held_out(ds: Dataset, count: int) -> list[Section]:
    """``count`` validation sections, evenly spaced over inlines then crosslines."""
    val = ds.sections("val")
    picks = np.unique(np.linspace(0, len(val) - 1, min(len(val), count)).round().astype(int))
    return [val[i] for i in picks]


def composite(t: dict[str, Any]) -> style.Composite | None:
    """The blend of ``transfer.composite`` for the generator's samples (None: off)."""
    return (style.Composite(t["composite_dilate"], t["composite_feather"]) if t["composite"]
            else None)


def backbone_stages(t: dict[str, Any]) -> list[str]:
    """The runs whose trained network the generator's perceptual loss reads (``train``, with
    ``transfer.perceptual_weight`` > 0 and a generator; none otherwise)."""
    return ["train"] if t["method"] == "sean" and t["perceptual_weight"] > 0 else []


#: the training summary of a method without a generator
NO_TRAINING: dict[str, Any] = {"generator": "none", "history": []}


@dataclasses.dataclass
class Made:
    """What a transfer method made: the samples, their identity controls (same order), the
    Fig. 3 rows and the method's own quality figures."""

    samples: style.Samples
    identity: style.Samples
    rows: list[dict[str, Any]]
    quality: dict[str, Any]
    composite: bool  # blended into the targets


def sean_samples(cfg: Config, ds: Dataset, model: Sean, k: int, sources: Sequence[Section],
                 targets: Sequence[Section], device: torch.device, amp: bool) -> Made:
    """The generator's samples (``transfer.method: sean``) and its reconstruction error."""
    t = cfg["transfer"]
    tr = style.Transferer(model, device, amp)
    blend = composite(t)
    samples, identity, codes, firsts = style.generate_samples(
        tr, ds, k, sources, targets, t["per_source"], t["batch_size"], t["seed"], blend)
    return Made(samples, identity,
                style.figure_rows(tr, ds, k, sources, codes, firsts, t["seed"], blend),
                style.reconstruction_error(tr, ds, held_out(ds, t["eval_sections"]),
                                           t["batch_size"]),
                blend is not None)


def statistics_samples(cfg: Config, ds: Dataset, k: int, sources: Sequence[Section],
                       targets: Sequence[Section]) -> Made:
    """The class-local statistics matching's samples (``transfer.method: statistics``)."""
    t = cfg["transfer"]
    feather = t["composite_feather"]
    samples, identity, firsts = classmatch.generate_samples(ds, k, sources, targets,
                                                            t["per_source"], t["seed"], feather)
    return Made(samples, identity, classmatch.figure_rows(ds, k, sources, firsts, feather),
                {"reconstruction_error": None, "reconstruction_baseline": None}, True)


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """What the transfer stage says of its ``metrics.json``: the samples, the generator's
    reconstruction, how far the style moved (swap and identity) and the outside change."""
    training = metrics["training"]
    recon = ("no generator" if metrics["reconstruction_error"] is None else
             f"reconstruction error {metrics['reconstruction_error']:.3f} (predicting the "
             f"mean: {metrics['reconstruction_baseline']:.3f})")
    moved = [metrics["style_moved"], metrics["identity"]["style_moved"]]
    return [
        (f"transfer: {metrics['samples']} samples of '{metrics['class']}' "
         f"{metrics['shape'][0]}x{metrics['shape'][1]} by {metrics['method']}, generator "
         f"{training['generator']}"),
        f"{recon}, class-local change ratio {metrics['class_local_change_ratio']:.2f}",
        (f"style moved toward the source {_number(moved[0])} (identity samples "
         f"{_number(moved[1])}; 1: the source's style, 0: the target's)"),
        (f"change outside the class vs the target {metrics['change_outside_vs_target']:.3f} "
         f"({_share(metrics['relative_change_outside'])} of its amplitude; identity samples "
         f"{_share(metrics['identity']['relative_change_outside'])})"),
    ]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"

"""One training run's computation: the data on the device, the network, its loss and its
predictions, and the scores of the test volumes. :func:`prepare` builds a :class:`Session`;
the train stage (:mod:`falsecli.stages.train`) and the benchmarks drive it epoch by epoch.

Sections of one shape are stacked and batched together (:class:`~falsecli.method.pool.Pool`);
batches of all shapes are interleaved in a seeded order. The data stay on the device when they
fit (else batches are gathered into pinned host memory and copied asynchronously), and an
epoch never waits for the device: losses accumulate there. Under ``torchrun`` every process
computes its share of each batch (see :mod:`falsecli.core.distributed`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from falsecli.core import console, distributed
from falsecli.core.checkpoint import restore_rng
from falsecli.core.config import Config
from falsecli.core.distributed import BatchDropout, Ranks
from falsecli.core.errors import FalseCliError
from falsecli.core.runtime import bf16_autocast, seed_everything
from falsecli.data.dataset import Dataset, Section, load_dataset
from falsecli.method.augment import augment
from falsecli.method.datamaptrack import label_probs
from falsecli.method.metrics import ConfusionMatrix, confusion
from falsecli.method.model import build_model
from falsecli.method import tracing
from falsecli.method.pool import Arrays, Pool, by_shape, fits, pinned_like, store
from falsecli.method.tracing import Tracer
from falsecli.method.tracking import offsets

#: offsets of the augmentation and dropout generators' seeds from the data-order seed
AUG_SEED_OFFSET = 1_000_003
DROPOUT_SEED_OFFSET = 2_000_003
#: pixels per confusion-matrix update (bounds its int64 temporaries to ~100 MB)
CONFUSION_CHUNK = 1 << 22


# ---------------------------------------------------------------- data on the device


def pool_sections(ds: Dataset) -> dict[tuple[int, int], list[Section]]:
    """The training sections whose labels train (``train.labelled``), per shape. A section
    whose labels are all ``ignore_index`` is unlabelled: it belongs to the pool and trains
    nothing, so it is left out."""
    kept = {shape: [s for s in secs if (ds.label(s) != ds.ignore_index).any()]
            for shape, secs in by_shape(ds.trainable()).items()}
    return {shape: secs for shape, secs in kept.items() if secs}


def pool_arrays(ds: Dataset, extra: tuple[np.ndarray, np.ndarray] | None) -> Arrays:
    """The sections of :func:`pool_sections` stacked per shape, with the ``extra`` samples
    (images, labels) joining their shape."""
    arrays = {shape: ds.stack(secs) for shape, secs in pool_sections(ds).items()}
    if extra is not None:
        images, labels = extra
        shape = images.shape[1:]
        if shape in arrays:
            img, lab = arrays[shape]
            arrays[shape] = (np.concatenate([img, images]), np.concatenate([lab, labels]))
        else:
            arrays[shape] = (images, labels)
    return arrays


class EvalSet:
    """The sections predicted after every epoch: the tracked ones, then val if untracked.

    Consecutive sections of one shape form a run, so a batch's predictions land in one
    contiguous slice of the flat (pixels,) prediction vector, in the tracked pixel order.
    Under torchrun each process predicts a contiguous share of the sections, and rank 0, the
    only one holding the labels, receives the whole vector.
    """

    def __init__(self, ds: Dataset, tracked: list[Section], device: torch.device,
                 resident: bool, ranks: Ranks = distributed.SINGLE) -> None:
        extra = [] if any(s.split == "val" for s in tracked) else ds.sections("val")
        sections = tracked + extra
        starts = offsets(sections)
        sizes = [s.shape[0] * s.shape[1] for s in sections]
        shares = distributed.shard(sizes, ranks.world)
        mine = shares[ranks.rank]
        self.ranks, self.device, self.resident = ranks, device, resident
        self.sizes = [sum(sizes[share]) for share in shares]  # pixels per process
        self.runs: list[tuple[int, torch.Tensor]] = []  # (first pixel, images (N, H, W))
        i = mine.start
        for _, run in itertools.groupby(sections[mine], key=lambda s: s.shape):
            run = list(run)
            images, _ = ds.stack(run)
            self.runs.append((starts[i] - starts[mine.start], store(images, device, resident)))
            i += len(run)
        self.labels = torch.from_numpy(np.concatenate(
            [ds.label(s).ravel() for s in sections])).to(device) if ranks.main else None
        # each process scores the label probabilities of its own share (data maps)
        self.own_labels = self.labels if not ranks.multi else torch.from_numpy(np.concatenate(
            [ds.label(s).ravel() for s in sections[mine]] or [np.zeros(0, np.uint8)])).to(device)
        self.ignore_index = ds.ignore_index
        self.probs: torch.Tensor | None = None  # (2, pixels): see predict(probs=True)
        self.n_tracked = sum(sizes[:len(tracked)])
        val = [i for i, s in enumerate(sections) if s.split == "val"]  # consecutive
        self.val = slice(starts[val[0]], starts[val[-1]] + sizes[val[-1]])

    def predict(self, model: torch.nn.Module, batch_size: int, amp: bool, probs: bool = False
                ) -> torch.Tensor | None:
        """(pixels,) uint8 predictions of every section, left on the device (rank 0; None on
        the other ranks, whose shares are gathered there). With ``probs``, :attr:`probs`
        becomes the (2, pixels) probabilities of each pixel's label and top wrong class
        (:func:`~falsecli.method.datamaptrack.label_probs`), on rank 0 likewise."""
        size = self.sizes[self.ranks.rank]
        out = torch.empty(size, dtype=torch.uint8, device=self.device)
        p = torch.empty((2, size), dtype=torch.float32, device=self.device) if probs else None
        for start, images in self.runs:
            n_pix = images[0].numel()
            for i in range(0, len(images), batch_size):
                batch = images[i:i + batch_size]
                if not self.resident:
                    batch = pinned_like(batch, len(batch)).copy_(batch).to(
                        self.device, non_blocking=True)
                scores = logits(model, batch, amp)
                pred = scores.argmax(1).to(torch.uint8)
                at = slice(start + i * n_pix, start + i * n_pix + pred.numel())
                out[at] = pred.reshape(-1)
                if p is not None:
                    p[:, at] = label_probs(scores, self.own_labels[at].view_as(pred),
                                           self.ignore_index)
        if p is not None:
            rows = [distributed.gather(self.ranks, row, self.sizes) for row in p]
            self.probs = torch.stack(rows) if self.ranks.main else None
        return distributed.gather(self.ranks, out, self.sizes)


@torch.inference_mode()
def logits(model: torch.nn.Module, images: torch.Tensor, amp: bool) -> torch.Tensor:
    """Class scores (N, C, H, W) of images (N, H, W) (moved to the model's device)."""
    device = next(model.parameters()).device
    x = images.to(device, non_blocking=True)[:, None].contiguous(
        memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        return model(x)


def predict(model: torch.nn.Module, images: torch.Tensor, amp: bool) -> torch.Tensor:
    """Class ids (N, H, W) uint8 of images (N, H, W) (moved to the model's device)."""
    return logits(model, images, amp).argmax(1).to(torch.uint8)


# ---------------------------------------------------------------- loss and scores


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse class frequency from pixel ``counts`` per class, normalised so that the
    average pixel weighs 1 (the loss keeps its scale); absent classes weigh 0."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.from_numpy(weights).float()


def _norm(labels: torch.Tensor, weights: torch.Tensor | None, ignore_index: int
          ) -> torch.Tensor:
    """What a batch's summed cross-entropy is divided by: its labelled pixels, or their
    summed class weights."""
    valid = labels != ignore_index
    if weights is None:
        return valid.sum()
    return (weights[torch.where(valid, labels.long(), 0)] * valid).sum()


def labelled_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
                  ignore_index: int, norm: torch.Tensor | None = None) -> torch.Tensor:
    """The training objective: mean cross-entropy over labelled pixels (weighted mean with
    class weights); a batch with no labelled pixel gives 0, not NaN. ``norm``: the
    :func:`_norm` of the whole global batch when ``labels`` are one process's share of it."""
    total = F.cross_entropy(logits.float(), labels.long(), weight=weights,
                            ignore_index=ignore_index, reduction="sum")
    if norm is None:
        norm = _norm(labels, weights, ignore_index)
    return total / norm.clamp_min(1e-12)


def chunked_confusion(pred: torch.Tensor, labels: torch.Tensor, n_classes: int,
                      ignore_index: int) -> torch.Tensor:
    """The confusion matrix of many pixels, a chunk at a time: :func:`confusion` makes a few
    int64 copies of its input, over 1 GB for F3's 29 M tracked pixels at once."""
    return sum(confusion(pred[i:i + CONFUSION_CHUNK], labels[i:i + CONFUSION_CHUNK],
                         n_classes, ignore_index)
               for i in range(0, max(pred.numel(), 1), CONFUSION_CHUNK))


@torch.inference_mode()
def section_confidence(model: torch.nn.Module, ds: Dataset, sections: list[Section],
                       batch_size: int, amp: bool) -> np.ndarray:
    """(sections, 3) float64: per section, the mean over its pixels of the softmax's entropy
    (over ``log(classes)``: 0 certain, 1 uniform), of ``1 - max p`` and of the margin
    ``p_1 - p_2`` between the two likeliest classes — what the entropy, least-confidence and
    margin queries rank the pool by. Computed on the device, copied to the host once."""
    n_classes = len(ds.classes)
    out = []
    for p, _ in softmax_batches(model, ds, sections, batch_size, amp):
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(max(n_classes, 2))
        top = p.topk(min(2, n_classes), dim=1).values
        second = top[:, 1] if n_classes > 1 else torch.zeros_like(top[:, 0])
        out.append(torch.stack([entropy.mean((1, 2)), (1 - top[:, 0]).mean((1, 2)),
                                (top[:, 0] - second).mean((1, 2))], 1))
    return torch.cat(out).double().cpu().numpy()


def softmax_batches(model: torch.nn.Module, ds: Dataset, sections: list[Section],
                    batch_size: int, amp: bool) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """The softmax (N, C, depth, width) of ``sections``, in order, ``batch_size`` sections of
    one shape at a time, with their labels."""
    for _, run in itertools.groupby(sections, key=lambda s: s.shape):
        run = list(run)
        for i in range(0, len(run), batch_size):
            images, labels = ds.stack(run[i:i + batch_size])
            yield logits(model, torch.from_numpy(images), amp).float().softmax(1), labels


def evaluate_tests(model: torch.nn.Module, ds: Dataset, batch_size: int, amp: bool
                   ) -> dict[str, dict[str, Any]]:
    """Scores on every labelled test volume, each voxel once (all its inlines)."""
    device = next(model.parameters()).device
    out = {}
    for vol in ds.tests:
        if vol.labels is None:
            continue
        cm = ConfusionMatrix(len(ds.classes), ds.ignore_index, device)
        sections = ds.sections(f"{vol.name}:all")
        for i in range(0, len(sections), batch_size):
            images, labels = ds.stack(sections[i:i + batch_size])
            pred = predict(model, torch.from_numpy(images), amp)
            cm.update(pred, torch.from_numpy(labels).to(device, non_blocking=True))
        out[vol.name] = cm.scores(ds.classes)
    return out


# ---------------------------------------------------------------- one run's computation


@dataclass
class Session:
    """What one training run computes with, built by :func:`prepare`: the data on the device,
    the network and its optimiser, the seeded generators. The stage and the benchmarks
    drive it through :meth:`train_epoch` and :meth:`predict`."""

    ds: Dataset
    tracked: list[Section]
    pool: Pool
    evalset: EvalSet
    model: torch.nn.Module  # what is saved
    net: torch.nn.Module  # what trains: ``model`` under DDP and/or torch.compile
    eval_net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    gens: dict[str, torch.Generator]
    dropouts: list[BatchDropout]
    weights: torch.Tensor | None
    ranks: Ranks
    device: torch.device
    amp: bool
    tc: dict[str, Any]
    tracer: Tracer | None = None

    @property
    def n_batches(self) -> int:
        n = self.pool.n_batches(self.tc["batch_size"])
        return min(n, self.tc["limit_batches"]) if self.tc["limit_batches"] else n

    def train_epoch(self, advance: Callable[[], None] = lambda: None) -> torch.Tensor:
        """One pass over the pool; returns this process's part of the summed batch losses,
        still on the device (:func:`distributed.all_sum` gives the whole)."""
        tc, ranks, ignore = self.tc, self.ranks, self.ds.ignore_index
        self.net.train()
        loss_sum = torch.zeros((), device=self.device)
        batches = self.pool.batches(self.gens["order"], tc["batch_size"])[:self.n_batches]
        for group, index in batches:
            images, labels = self.pool.fetch(group, index)
            images, labels = augment(tc["aug"], images, labels, self.gens["aug"],
                                     degrees=tc["rotate_degrees"], ignore_index=ignore)
            # every process augments the whole global batch (the same draws) and trains on
            # its share, normalised by the whole batch's labelled pixels
            norm = _norm(labels, self.weights, ignore)
            mine = ranks.share(len(index))
            for layer in self.dropouts:
                layer.rows = (len(index), mine.start, mine.stop)
            x = images[mine, None].contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.net(x)
                loss = labelled_loss(out, labels[mine], self.weights, ignore, norm)
            self.optimizer.zero_grad(set_to_none=True)
            if self.tracer is not None:
                self.tracer.split(out, labels[mine], self.weights, norm, group, index, mine)
            (loss * ranks.world).backward()  # DDP averages the gradients over the processes
            if self.tracer is None:
                self.optimizer.step()
            else:
                self.tracer.step()
            loss_sum += loss.detach()
            advance()
        return loss_sum

    def predict(self, probs: bool = False) -> torch.Tensor | None:
        """Predictions of every evaluated pixel, on the device of rank 0 (None elsewhere);
        with ``probs``, also the label probabilities in ``evalset.probs``."""
        self.eval_net.eval()
        return self.evalset.predict(self.eval_net, self.tc["eval_batch_size"], self.amp, probs)


def prepare(cfg: Config, ranks: Ranks, device: torch.device,
            ckpt: dict[str, Any] | None = None,
            extra: tuple[np.ndarray, np.ndarray] | None = None) -> Session:
    """Load the data and build the network of ``cfg``, from ``ckpt`` when resuming."""
    tc = cfg["train"]
    gens = {"order": seed_everything(tc["seed"]), "aug": torch.Generator(device=device),
            "dropout": torch.Generator(device=device)}
    gens["aug"].manual_seed(tc["seed"] + AUG_SEED_OFFSET)
    gens["dropout"].manual_seed(tc["seed"] + DROPOUT_SEED_OFFSET)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    amp = bf16_autocast(device, bool(tc["amp"]))

    ds = load_dataset(cfg)
    n_classes = len(ds.classes)
    arrays = pool_arrays(ds, extra)
    tracked = ds.tracked(tc["track"])
    if not tracked:
        raise FalseCliError("config key 'train.track' selects no section; use e.g. [val]")
    weights = None
    if tc["class_weights"]:
        counts = sum(np.bincount(lab.ravel(), minlength=256) for _, lab in arrays.values())
        weights = class_weights(counts[:n_classes]).to(device)
    n_tracked = sum(s.shape[0] * s.shape[1] for s in tracked)
    need = sum(a.nbytes + b.nbytes for a, b in arrays.values()) + 5 * n_tracked // ranks.world
    resident = fits(need, device)
    pool = Pool(arrays, device, resident, smallest=max(2, ranks.world),
                sections=pool_sections(ds))
    del arrays
    evalset = EvalSet(ds, tracked, device, resident, ranks)

    model = build_model(cfg["model"], n_classes).to(device, memory_format=torch.channels_last)
    if ranks.multi:
        model = distributed.sync_batchnorm(model, device)
    dropouts = distributed.batch_dropout(model, gens["dropout"])
    optimizer = torch.optim.Adam(model.parameters(), lr=tc["lr"],
                                 weight_decay=tc["weight_decay"],
                                 fused=device.type == "cuda" or None)
    tracer = tracing.from_config(tc, model, optimizer, pool, n_classes, ds.ignore_index, ranks)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt["rng"], device, gens)
        if tracer is not None:
            tracer.load_state_dict(ckpt["tracing"])
    eval_net, net = model, distributed.wrap(model, ranks, device)
    if tc["compile"] and device.type == "cuda":
        eval_net = torch.compile(model)
        net = torch.compile(net) if ranks.multi else eval_net
    elif tc["compile"]:
        console.log(f"train: train.compile is ignored on {device}")
    return Session(ds, tracked, pool, evalset, model, net, eval_net, optimizer, gens,
                   dropouts, weights, ranks, device, amp, tc, tracer)

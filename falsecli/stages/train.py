"""Stage 1 (and every retraining run): train the network, tracking every tracked pixel.

Sections of one shape are stacked and batched together (inlines and crosslines differ in
width and are never padded); batches of all shapes are interleaved in a seeded order. The
data stay on the device when they fit (else batches are gathered into pinned host memory and
copied asynchronously), and the loop never waits for the device within an epoch: losses and
confusion matrices accumulate there and are read once per epoch, when the tracking row is
written; the checkpoint is copied to the host then and written by a background thread.
Under ``torchrun`` the run is spread over several processes (see :mod:`falsecli.core.distributed`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F

from falsecli.core import console, distributed
from falsecli.method.augment import augment
from falsecli.core.config import Config, run_signature
from falsecli.data.dataset import Dataset, Section, load_dataset
from falsecli.core.distributed import BatchDropout, Ranks
from falsecli.core.errors import FalseCliError
from falsecli.method.metrics import ConfusionMatrix, confusion, scores
from falsecli.method.model import build_model, read_payload
from falsecli.core.runtime import seed_everything
from falsecli.method.tracking import Tracker, offsets
from falsecli.core.workdir import (
    Stage,
    StageRun,
    save_with,
    stage_run,
    write_json,
    write_text,
)

CHECKPOINT = "checkpoint.pt"
#: what a checkpoint holds (see the end of an epoch in :func:`_train_run`)
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "config", "history", "val", "previous", "rng")
FORCE = "use --force to start over"
#: fraction of free GPU memory the data may take to stay resident on the device
RESIDENT_SHARE = 0.5
#: offsets of the augmentation and dropout generators' seeds from the data-order seed
AUG_SEED_OFFSET = 1_000_003
DROPOUT_SEED_OFFSET = 2_000_003
#: pixels per confusion-matrix update (bounds its int64 temporaries to ~100 MB)
CONFUSION_CHUNK = 1 << 22
#: least value of train keys, and why (torch would fail later, with a traceback)
MINIMUM = {"batch_size": (2, "ASPP's image pooling normalises over the batch"),
           "epochs": (1, "train at least one epoch"),
           "eval_batch_size": (1, "sections per prediction batch"),
           "limit_batches": (0, "0 trains on every batch")}


# ---------------------------------------------------------------- data on the device


def _store(array: np.ndarray, device: torch.device, resident: bool) -> torch.Tensor:
    """On the device, or in (pageable) host memory when not resident: batches are staged
    through pinned buffers instead of page-locking the whole pool."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device) if resident else tensor


def _fits(n_bytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes < RESIDENT_SHARE * free


def _pinned_like(source: torch.Tensor, rows: int) -> torch.Tensor:
    """A pinned host buffer for ``rows`` rows of ``source``; the caching host allocator keeps
    it from reuse until the asynchronous copy out of it has finished."""
    return torch.empty((rows, *source.shape[1:]), dtype=source.dtype, pin_memory=True)


@dataclass
class Group:
    """Same-shape samples: images (N, H, W) float32 and labels (N, H, W) uint8."""

    images: torch.Tensor
    labels: torch.Tensor


def _cuts(n: int, batch_size: int, smallest: int = 2) -> list[int]:
    """Batch boundaries of ``n`` samples; a last batch under ``smallest`` joins the one
    before (ASPP's image pooling cannot normalise a batch of one, and under torchrun every
    process needs a sample of every batch)."""
    cuts = list(range(0, n, batch_size)) + [n]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < smallest:
        del cuts[-2]
    return cuts


class Pool:
    """The training samples grouped by shape, and the seeded batches of an epoch.

    ``smallest``: the least samples in a batch (2, or the number of processes).
    """

    def __init__(self, arrays: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
                 device: torch.device, resident: bool, smallest: int = 2) -> None:
        self.device = device
        self.resident = resident
        self.smallest = smallest
        few = [shape for shape, (img, _) in arrays.items() if len(img) < smallest]
        if few:  # ASPP's image pooling normalises over the batch: a lone sample cannot train
            console.log(f"train: sample(s) of shape(s) {few} are fewer than {smallest} and "
                        "are left out")
        self.groups = [Group(_store(img, device, resident), _store(lab, device, resident))
                       for img, lab in arrays.values() if len(img) >= smallest]
        self.n_samples = sum(len(g.images) for g in self.groups)

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
            staged = torch.index_select(source, 0, index, out=_pinned_like(source, len(index)))
            out.append(staged.to(self.device, non_blocking=True))
        return out[0], out[1]


def _pool_arrays(ds: Dataset, extra_samples: Path | None
                 ) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Training sections stacked per shape, with the transfer samples joining their shape."""
    by_shape: dict[tuple[int, int], list[Section]] = {}
    for s in ds.sections("train"):
        by_shape.setdefault(s.shape, []).append(s)
    arrays = {shape: ds.stack(secs) for shape, secs in by_shape.items()}
    if extra_samples is not None:
        images, labels = _load_samples(Path(extra_samples), len(ds.classes), ds.ignore_index)
        shape = images.shape[1:]
        if shape in arrays:
            img, lab = arrays[shape]
            arrays[shape] = (np.concatenate([img, images]), np.concatenate([lab, labels]))
        else:
            arrays[shape] = (images, labels)
        console.log(f"train: {len(images)} samples of {shape} from {extra_samples} join the pool")
    return arrays


def _load_samples(path: Path, n_classes: int, ignore_index: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``images`` float32 (N, H, W) and ``labels`` uint8 (N, H, W) of a samples.npz, checked."""
    fix = "rerun 'falsecli transfer --force'"
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing — run 'falsecli transfer' first") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise FalseCliError(f"{path}: not a samples file with images and labels ({exc}) — "
                            f"{fix}") from None
    if images.ndim != 3 or labels.shape != images.shape or len(images) == 0:
        raise FalseCliError(f"{path}: images {images.shape} and labels {labels.shape} must be "
                            f"the same non-empty (N, H, W) — {fix}")
    if labels.dtype != np.uint8 or not np.issubdtype(images.dtype, np.floating):
        raise FalseCliError(f"{path}: images must be float and labels uint8, not "
                            f"{images.dtype} / {labels.dtype} — {fix}")
    if not np.isfinite(images).all():
        raise FalseCliError(f"{path}: images hold NaN or Inf — {fix}")
    bad = np.setdiff1d(np.unique(labels), [*range(n_classes), ignore_index])
    if bad.size:
        raise FalseCliError(f"{path}: label ids {bad.tolist()} are not classes 0..{n_classes - 1} "
                            f"or {ignore_index} — {fix}")
    return images.astype(np.float32, copy=False), labels


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
            self.runs.append((starts[i] - starts[mine.start], _store(images, device, resident)))
            i += len(run)
        self.labels = torch.from_numpy(np.concatenate(
            [ds.label(s).ravel() for s in sections])).to(device) if ranks.main else None
        self.n_tracked = sum(sizes[:len(tracked)])
        val = [i for i, s in enumerate(sections) if s.split == "val"]  # consecutive
        self.val = slice(starts[val[0]], starts[val[-1]] + sizes[val[-1]])

    def predict(self, model: torch.nn.Module, batch_size: int, amp: bool
                ) -> torch.Tensor | None:
        """(pixels,) uint8 predictions of every section, left on the device (rank 0; None on
        the other ranks, whose shares are gathered there)."""
        out = torch.empty(self.sizes[self.ranks.rank], dtype=torch.uint8, device=self.device)
        for start, images in self.runs:
            n_pix = images[0].numel()
            for i in range(0, len(images), batch_size):
                batch = images[i:i + batch_size]
                if not self.resident:
                    batch = _pinned_like(batch, len(batch)).copy_(batch).to(
                        self.device, non_blocking=True)
                pred = predict(model, batch, amp)
                out[start + i * n_pix: start + i * n_pix + pred.numel()] = pred.reshape(-1)
        return distributed.gather(self.ranks, out, self.sizes)


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, amp: bool) -> torch.Tensor:
    """Class ids (N, H, W) uint8 of images (N, H, W) (moved to the model's device)."""
    device = next(model.parameters()).device
    x = images.to(device, non_blocking=True)[:, None].contiguous(
        memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    return logits.argmax(1).to(torch.uint8)


# ---------------------------------------------------------------- training


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


def _loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
          ignore_index: int, norm: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels (weighted mean with class weights); a batch
    with no labelled pixel gives 0, not NaN. ``norm``: the :func:`_norm` of the whole global
    batch when ``labels`` are one process's share of it."""
    total = F.cross_entropy(logits.float(), labels.long(), weight=weights,
                            ignore_index=ignore_index, reduction="sum")
    if norm is None:
        norm = _norm(labels, weights, ignore_index)
    return total / norm.clamp_min(1e-12)


def _confusion(pred: torch.Tensor, labels: torch.Tensor, n_classes: int, ignore_index: int
               ) -> torch.Tensor:
    """The confusion matrix of many pixels, a chunk at a time: :func:`confusion` makes a few
    int64 copies of its input, over 1 GB for F3's 29 M tracked pixels at once."""
    return sum(confusion(pred[i:i + CONFUSION_CHUNK], labels[i:i + CONFUSION_CHUNK],
                         n_classes, ignore_index)
               for i in range(0, max(pred.numel(), 1), CONFUSION_CHUNK))


def _check_resume(stage: str, ckpt: dict[str, Any], cfg: Config) -> None:
    old, new = run_signature(ckpt["config"]), run_signature(cfg)
    for section, values in new.items():
        for key, value in values.items():
            if old[section].get(key) != value:
                raise FalseCliError(
                    f"{stage}: the interrupted run used {section}.{key}="
                    f"{old[section].get(key)!r}, not {value!r} — resume with the same "
                    "settings or use --force to start over")
    if cfg["train"]["epochs"] < ckpt["epoch"]:
        raise FalseCliError(f"{stage}: the interrupted run has {ckpt['epoch']} epochs; "
                            f"train.epochs={cfg['train']['epochs']} must be at least that")


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _metric_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    def fmt(v: float | None) -> str:
        return "  n/a " if v is None else f"{v:.4f}"

    return [f"{split:<8} pixel_acc {fmt(m['pixel_acc'])}  mean_class_acc "
            f"{fmt(m['mean_class_acc'])}  miou {fmt(m['miou'])}  fwiou {fmt(m['fwiou'])}"
            for split, m in results.items()]


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


def _rng_state(gens: dict[str, torch.Generator], device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator],
                   device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    for key, gen in gens.items():
        gen.set_state(state[key])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


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
                loss = _loss(self.net(x), labels[mine], self.weights, ignore, norm)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * ranks.world).backward()  # DDP averages the gradients over the processes
            self.optimizer.step()
            loss_sum += loss.detach()
            advance()
        return loss_sum

    def predict(self) -> torch.Tensor | None:
        """Predictions of every evaluated pixel, on the device of rank 0 (None elsewhere)."""
        self.eval_net.eval()
        return self.evalset.predict(self.eval_net, self.tc["eval_batch_size"], self.amp)


def prepare(cfg: Config, ranks: Ranks, device: torch.device,
            ckpt: dict[str, Any] | None = None, extra_samples: Path | None = None) -> Session:
    """Load the data and build the network of ``cfg``, from ``ckpt`` when resuming."""
    tc = cfg["train"]
    gens = {"order": seed_everything(tc["seed"]), "aug": torch.Generator(device=device),
            "dropout": torch.Generator(device=device)}
    gens["aug"].manual_seed(tc["seed"] + AUG_SEED_OFFSET)
    gens["dropout"].manual_seed(tc["seed"] + DROPOUT_SEED_OFFSET)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    amp = bool(tc["amp"]) and device.type == "cuda"

    ds = load_dataset(cfg)
    n_classes = len(ds.classes)
    arrays = _pool_arrays(ds, extra_samples)
    tracked = ds.tracked(tc["track"])
    if not tracked:
        raise FalseCliError("config key 'train.track' selects no section; use e.g. [val]")
    weights = None
    if tc["class_weights"]:
        counts = sum(np.bincount(lab.ravel(), minlength=256) for _, lab in arrays.values())
        weights = class_weights(counts[:n_classes]).to(device)
    n_tracked = sum(s.shape[0] * s.shape[1] for s in tracked)
    need = sum(a.nbytes + b.nbytes for a, b in arrays.values()) + 5 * n_tracked // ranks.world
    resident = _fits(need, device)
    pool = Pool(arrays, device, resident, smallest=max(2, ranks.world))
    del arrays
    evalset = EvalSet(ds, tracked, device, resident, ranks)

    model = build_model(cfg["model"], n_classes).to(device, memory_format=torch.channels_last)
    if ranks.multi:
        model = distributed.sync_batchnorm(model, device)
    dropouts = distributed.batch_dropout(model, gens["dropout"])
    optimizer = torch.optim.Adam(model.parameters(), lr=tc["lr"],
                                 weight_decay=tc["weight_decay"],
                                 fused=device.type == "cuda" or None)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"], gens, device)
    eval_net, net = model, distributed.wrap(model, ranks, device)
    if tc["compile"] and device.type == "cuda":
        eval_net = torch.compile(model)
        net = torch.compile(net) if ranks.multi else eval_net
    elif tc["compile"]:
        console.log(f"train: train.compile is ignored on {device}")
    return Session(ds, tracked, pool, evalset, model, net, eval_net, optimizer, gens,
                   dropouts, weights, ranks, device, amp, tc)


def _snapshot(obj: Any, buffers: dict[tuple[Any, ...], torch.Tensor],
              key: tuple[Any, ...] = ()) -> Any:
    """``obj`` with every tensor copied (without waiting) into the host buffer kept in
    ``buffers`` under its place in ``obj``."""
    if isinstance(obj, torch.Tensor):
        buf = buffers.get(key)
        if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
            buf = buffers[key] = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=obj.is_cuda)
        return buf.copy_(obj.detach(), non_blocking=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v, buffers, (*key, k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v, buffers, (*key, i)) for i, v in enumerate(obj))
    return obj


def _host_copy(obj: Any, buffers: dict[tuple[Any, ...], torch.Tensor] | None = None) -> Any:
    """``obj`` with every tensor copied to host memory: a copy that later steps cannot change
    while a thread writes it. With ``buffers``, the copy reuses the memory of the previous
    one (pinned for GPU tensors, so they copy at full speed) instead of allocating anew."""
    out = _snapshot(obj, {} if buffers is None else buffers)
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return out


class BackgroundSaver:
    """Writes checkpoints in a thread, one at a time, so the next epoch does not wait for the
    disk; leaving the context waits until the last one is written (and raises its error)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def save(self, path: Path, state: dict[str, Any]) -> None:
        self.wait()  # the buffers are free again
        self._thread = threading.Thread(target=self._write,
                                        args=(path, _host_copy(state, self._buffers)),
                                        name="falsecli-checkpoint")
        self._thread.start()

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        try:
            save_with(path, functools.partial(torch.save, state))
        except Exception as exc:  # noqa: BLE001 (re-raised in the training thread by wait())
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wait()


# ---------------------------------------------------------------- the stage


def train(cfg: Config, workdir: Path, *, force: bool = False, resume: bool = False,
          stage: str = "train", extra_samples: Path | None = None,
          upstream: Sequence[Stage] = (),
          on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train from ``cfg['train']`` / ``cfg['model']`` into ``<workdir>/<stage>/``.

    ``extra_samples``: a samples.npz whose (image, label) pairs join the training pool.
    ``on_epoch(epoch, metrics_row)`` runs after each epoch's checkpoint is taken (an exception
    there leaves a resumable run). Under torchrun every process calls this; rank 0 alone
    opens the stage, writes and calls ``on_epoch``. Returns the stage summary.
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    tc = cfg["train"]
    _check_config(tc, distributed.from_env().world)
    ranks, device = distributed.setup(tc["device"])
    where = str(device) if not ranks.multi else f"{device.type} x {ranks.world} processes"
    with contextlib.ExitStack() as stack:
        opened = distributed.checked(ranks, lambda: _open_stage(
            stack, cfg, workdir, stage, list(upstream), force, resume, where))
        run, ckpt = opened if opened is not None else (None, None)
        ckpt = distributed.broadcast(ranks, ckpt)
        summary = _train_run(cfg, stage, run, ranks, device, ckpt, extra_samples, on_epoch)
    distributed.barrier(ranks)  # the others return once rank 0's artifacts are complete
    if run is None:
        return summary
    (run.path / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: model.pt replaces it
    summary["outputs"].append(str(run.stage.manifest_path))
    summary["device"] = where
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    return summary


def _check_config(tc: dict[str, Any], world: int) -> None:
    """Refuse train settings that cannot work, before any data is loaded (on every rank)."""
    for key, (least, why) in MINIMUM.items():
        if tc[key] < least:
            raise FalseCliError(f"config key 'train.{key}' is {tc[key]}; it must be at least "
                                f"{least} ({why})")
    if tc["batch_size"] < world:
        raise FalseCliError(f"config key 'train.batch_size' is {tc['batch_size']} but torchrun "
                            f"started {world} processes; each needs a section of every batch, "
                            f"so use a batch size of at least {world}")
    if not tc["lr"] > 0 or tc["weight_decay"] < 0:
        raise FalseCliError(f"config keys 'train.lr' ({tc['lr']}) and 'train.weight_decay' "
                            f"({tc['weight_decay']}): Adam needs lr > 0 and weight_decay >= 0")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """An interrupted run's checkpoint, with everything resuming reads from it."""
    ckpt = read_payload(path, "checkpoint", FORCE)
    config = ckpt.get("config")
    if (any(k not in ckpt for k in CHECKPOINT_KEYS) or not isinstance(config, dict)
            or not all(isinstance(config.get(k), dict) for k in ("data", "model", "train"))):
        raise FalseCliError(f"{path}: not a falsecli checkpoint (it holds {sorted(ckpt)}) — "
                            f"{FORCE}")
    return ckpt


def _open_stage(stack: contextlib.ExitStack, cfg: Config, workdir: Path, stage: str,
                upstream: list[Stage], force: bool, resume: bool, where: str
                ) -> tuple[StageRun, dict[str, Any] | None]:
    """Open the stage for writing on ``stack`` (refusing an interrupted run without --resume
    or --force); returns it and the checkpoint to resume from, if any."""
    ckpt_path = workdir / stage / CHECKPOINT
    interrupted = ckpt_path.is_file() and not Stage(workdir, stage).is_complete()
    if interrupted and not resume and not force:
        ckpt = _read_checkpoint(ckpt_path)
        raise FalseCliError(
            f"{stage}: an interrupted run is in {workdir / stage} (epoch {ckpt['epoch']} of "
            f"{ckpt['config']['train']['epochs']}) — use --resume to continue or --force to "
            "start over")
    resuming = interrupted and resume
    run = stack.enter_context(stage_run(workdir, stage, cfg, upstream=upstream, force=force,
                                        keep=resuming, seed=cfg["train"]["seed"], device=where))
    ckpt = _read_checkpoint(ckpt_path) if resuming else None
    if ckpt is not None:
        _check_resume(stage, ckpt, cfg)
    return run, ckpt


def _train_run(cfg: Config, stage: str, run: StageRun | None, ranks: Ranks,
               device: torch.device, ckpt: dict[str, Any] | None, extra_samples: Path | None,
               on_epoch: Callable[[int, dict[str, Any]], None] | None) -> dict[str, Any]:
    """The body of :func:`train`: ``run`` is the open stage on rank 0, None on the others."""
    tc = cfg["train"]
    s = prepare(cfg, ranks, device, ckpt, extra_samples)
    ds, n_classes, n_batches = s.ds, len(s.ds.classes), s.n_batches
    if n_batches == 0:
        raise FalseCliError(f"{stage}: no training batch — every shape has fewer than "
                            f"{s.pool.smallest} sections; use a larger volume or a smaller "
                            "data.val_every")
    console.log(f"{stage}: {s.pool.n_samples} training samples in {len(s.pool.groups)} "
                f"shape(s), {n_batches} batches per epoch, {len(s.tracked)} tracked sections "
                f"({s.evalset.n_tracked} pixels), data "
                f"{'on' if s.pool.resident else 'streamed to'} {device}"
                + (f", {ranks.world} processes" if ranks.multi else ""))
    history: list[dict[str, Any]] = []
    val_scores: dict[str, Any] = {}
    done, previous = 0, None
    if ckpt is not None:
        done, history, val_scores = ckpt["epoch"], ckpt["history"], ckpt["val"]
        previous = ckpt["previous"].to(device)
        console.log(f"{stage}: resuming after epoch {done}")
    tracker = None
    if run is not None:
        tracker = Tracker(run.path / "tracking", s.tracked,
                          s.evalset.labels[:s.evalset.n_tracked], ds.classes, ds.ignore_index,
                          epochs=done, previous=previous)
        for path in tracker.paths():
            run.out(str(path.relative_to(run.path)))
    epochs = tc["epochs"]
    with console.progress() as bar, BackgroundSaver() as saver:
        task = bar.add_task(stage, total=epochs * n_batches, completed=done * n_batches,
                            info="")
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            loss_sum = s.train_epoch(lambda: bar.advance(task))
            pred = s.predict()
            if tracker is not None:
                hist = _confusion(pred[s.evalset.val], s.evalset.labels[s.evalset.val],
                                  n_classes, ds.ignore_index)
                tracker.record(pred[:s.evalset.n_tracked])  # the one wait for the device
            train_loss = distributed.all_sum(ranks, loss_sum).item() / n_batches
            if not math.isfinite(train_loss):
                raise FalseCliError(f"{stage}: the training loss became {train_loss} at epoch "
                                    f"{epoch} — lower train.lr (now {tc['lr']})")
            if tracker is None:
                continue
            val_scores = scores(hist.cpu().numpy(), ds.classes)
            history.append({"epoch": epoch, "train_loss": train_loss,
                            **{k: val_scores[k] for k in ("pixel_acc", "mean_class_acc",
                                                           "miou", "class_acc")},
                            "seconds": round(time.perf_counter() - t0, 3)})
            write_text(run.out("metrics.jsonl"), _jsonl(history))
            saver.save(run.path / CHECKPOINT, {
                "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
                "epoch": epoch, "config": cfg, "history": history, "val": val_scores,
                "previous": tracker.previous, "rng": _rng_state(s.gens, device)})
            acc = val_scores["pixel_acc"]
            bar.update(task, info=f"epoch {epoch}/{epochs} loss {train_loss:.4f} val acc "
                                  f"{'n/a' if acc is None else f'{acc:.3f}'}")
            if on_epoch is not None:
                on_epoch(epoch, history[-1])
    if run is None or tracker is None:  # ranks other than 0
        return {"stage": stage, "outputs": [], "rank": ranks.rank}

    write_text(run.out("metrics.jsonl"), _jsonl(history))
    tracker.finish()
    mean, std = ds.stats
    # host tensors, so that the file loads on a machine without the training GPU
    payload = {"state_dict": _host_copy(s.model.state_dict()),
               "config": cfg, "classes": ds.classes,
               "norm": {"mean": mean, "std": std}, "epochs": epochs,
               "ignore_index": ds.ignore_index}
    save_with(run.out("model.pt"), functools.partial(torch.save, payload))
    s.model.eval()
    results = {"val": val_scores, **evaluate_tests(s.model, ds, tc["eval_batch_size"],
                                                    s.amp)}
    write_json(run.out("eval.json"), results)
    return {"stage": stage, "outputs": [str(run.path / rel) for rel in run.outputs],
            "epochs": epochs, "processes": ranks.world, "train_samples": s.pool.n_samples,
            "final_train_loss": history[-1]["train_loss"], "metrics": results,
            "lines": _metric_lines(results)}

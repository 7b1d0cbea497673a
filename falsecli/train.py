"""Stage 1 (and every retraining run): train the network, tracking every tracked pixel.

Sections of one shape are stacked and batched together (inlines and crosslines differ in
width and are never padded); batches of all shapes are interleaved in a seeded order. The
data stay on the device when they fit, and the loop never waits for the device within an
epoch: losses and confusion matrices accumulate there and are read once per epoch, when
the tracking row is written and the checkpoint saved.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from falsecli import console
from falsecli.augment import augment
from falsecli.config import Config
from falsecli.data import Dataset, Section, load_dataset
from falsecli.errors import FalseCliError
from falsecli.metrics import ConfusionMatrix, confusion, scores
from falsecli.model import build_model, read_payload
from falsecli.runtime import resolve_device, seed_everything
from falsecli.tracking import Tracker, offsets
from falsecli.workdir import (
    Stage,
    StageRun,
    save_with,
    stage_run,
    write_json,
    write_text,
)

CHECKPOINT = "checkpoint.pt"
FORCE = "use --force to start over"
#: train keys that may change when resuming (they do not change what is learned)
RESUMABLE = ("epochs", "device", "amp", "compile", "eval_batch_size")
#: fraction of free GPU memory the data may take to stay resident on the device
RESIDENT_SHARE = 0.5
#: offset of the augmentation generator's seed from the data-order seed
AUG_SEED_OFFSET = 1_000_003


# ---------------------------------------------------------------- data on the device


def _store(array: np.ndarray, device: torch.device, resident: bool) -> torch.Tensor:
    """On the device, or in pinned host memory (for asynchronous copies) when not resident."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if resident:
        return tensor.to(device)
    return tensor.pin_memory() if device.type == "cuda" else tensor


def _fits(n_bytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes < RESIDENT_SHARE * free


@dataclass
class Group:
    """Same-shape samples: images (N, H, W) float32 and labels (N, H, W) uint8."""

    images: torch.Tensor
    labels: torch.Tensor


def _cuts(n: int, batch_size: int) -> list[int]:
    """Batch boundaries of ``n`` samples; a last batch of one joins the one before (ASPP's
    image pooling cannot normalise a batch of one)."""
    cuts = list(range(0, n, batch_size)) + [n]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] == 1:
        del cuts[-2]
    return cuts


class Pool:
    """The training samples grouped by shape, and the seeded batches of an epoch."""

    def __init__(self, arrays: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
                 device: torch.device, resident: bool) -> None:
        self.device = device
        self.resident = resident
        single = [shape for shape, (img, _) in arrays.items() if len(img) == 1]
        if single:  # ASPP's image pooling normalises over the batch: a lone sample cannot train
            console.log(f"train: {len(single)} sample(s) alone in their shape {single} "
                        "are left out")
        self.groups = [Group(_store(img, device, resident), _store(lab, device, resident))
                       for img, lab in arrays.values() if len(img) > 1]
        self.n_samples = sum(len(g.images) for g in self.groups)

    def n_batches(self, batch_size: int) -> int:
        return sum(len(_cuts(len(g.images), batch_size)) - 1 for g in self.groups)

    def batches(self, generator: torch.Generator, batch_size: int
                ) -> list[tuple[Group, torch.Tensor]]:
        """Each group shuffled and cut into batches, all batches in a shuffled order;
        indices on the data's device (one copy per epoch)."""
        perms = [torch.randperm(len(g.images), generator=generator) for g in self.groups]
        index = torch.cat(perms).to(self.device if self.resident else "cpu")
        spans: list[tuple[Group, int, int]] = []
        start = 0
        for group, perm in zip(self.groups, perms):
            cuts = _cuts(len(perm), batch_size)
            spans += [(group, start + a, start + b) for a, b in itertools.pairwise(cuts)]
            start += len(perm)
        order = torch.randperm(len(spans), generator=generator).tolist()
        return [(spans[i][0], index[spans[i][1]:spans[i][2]]) for i in order]

    def fetch(self, group: Group, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = group.images[index], group.labels[index]
        if not self.resident and self.device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        return (images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True))


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
    except (OSError, ValueError, KeyError) as exc:
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
    """

    def __init__(self, ds: Dataset, tracked: list[Section], device: torch.device,
                 resident: bool) -> None:
        extra = [] if any(s.split == "val" for s in tracked) else ds.sections("val")
        sections = tracked + extra
        starts = offsets(sections)
        self.runs: list[tuple[int, torch.Tensor]] = []  # (first pixel, images (N, H, W))
        i = 0
        for _, run in itertools.groupby(sections, key=lambda s: s.shape):
            run = list(run)
            images = np.stack([ds.image(s) for s in run])
            self.runs.append((starts[i], _store(images, device, resident)))
            i += len(run)
        self.labels = torch.from_numpy(np.concatenate([_label(ds, s).ravel() for s in sections])
                                       ).to(device)
        self.n_tracked = sum(s.shape[0] * s.shape[1] for s in tracked)
        val = [i for i, s in enumerate(sections) if s.split == "val"]  # consecutive
        self.val = slice(starts[val[0]], starts[val[-1]] + int(np.prod(sections[val[-1]].shape)))

    def predict(self, model: torch.nn.Module, batch_size: int, amp: bool) -> torch.Tensor:
        """(pixels,) uint8 predictions of every section, left on the device."""
        out = torch.empty(self.labels.shape, dtype=torch.uint8, device=self.labels.device)
        for start, images in self.runs:
            n_pix = images[0].numel()
            for i in range(0, len(images), batch_size):
                pred = predict(model, images[i:i + batch_size], amp)
                out[start + i * n_pix: start + i * n_pix + pred.numel()] = pred.reshape(-1)
        return out


def _label(ds: Dataset, s: Section) -> np.ndarray:
    """Labels of a section; an unlabelled volume is all ``ignore_index`` (it still switches)."""
    if ds.volumes[s.volume].labels is None:
        return np.full(s.shape, ds.ignore_index, dtype=np.uint8)
    return ds.label(s)


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


def _loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
          ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels (weighted mean with class weights); a batch
    with no labelled pixel gives 0, not NaN."""
    target = labels.long()
    total = F.cross_entropy(logits.float(), target, weight=weights, ignore_index=ignore_index,
                            reduction="sum")
    valid = target != ignore_index
    if weights is None:
        norm = valid.sum()
    else:
        norm = (weights[torch.where(valid, target, 0)] * valid).sum()
    return total / norm.clamp_min(1e-12)


def _signature(cfg: Config) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    train = {k: v for k, v in cfg["train"].items() if k not in RESUMABLE}
    return {"data": cfg["data"], "model": cfg["model"], "train": train}


def _check_resume(stage: str, ckpt: dict[str, Any], cfg: Config) -> None:
    old, new = _signature(ckpt["config"]), _signature(cfg)
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


def _train_epoch(net: torch.nn.Module, pool: Pool, optimizer: torch.optim.Optimizer,
                 gens: dict[str, torch.Generator], tc: dict[str, Any],
                 weights: torch.Tensor | None, ignore_index: int, amp: bool,
                 advance: Callable[[], None]) -> torch.Tensor:
    """One pass over the pool; returns the summed batch losses, still on the device."""
    net.train()
    loss_sum = torch.zeros((), device=pool.device)
    for group, index in pool.batches(gens["order"], tc["batch_size"]):
        images, labels = pool.fetch(group, index)
        images, labels = augment(tc["aug"], images, labels, gens["aug"],
                                 degrees=tc["rotate_degrees"], ignore_index=ignore_index)
        x = images[:, None].contiguous(memory_format=torch.channels_last)
        with torch.autocast(pool.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = _loss(net(x), labels, weights, ignore_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        advance()
    return loss_sum


def _rng_state(gens: dict[str, torch.Generator], device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if device.type == "cuda":  # dropout on the GPU draws from its default generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator],
                   device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    for key, gen in gens.items():
        gen.set_state(state[key])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def train(cfg: Config, workdir: Path, *, force: bool = False, resume: bool = False,
          stage: str = "train", extra_samples: Path | None = None,
          upstream: list[Stage] = (),  # type: ignore[assignment]
          on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train from ``cfg['train']`` / ``cfg['model']`` into ``<workdir>/<stage>/``.

    ``extra_samples``: a samples.npz whose (image, label) pairs join the training pool.
    ``on_epoch(epoch, metrics_row)`` runs after each epoch's checkpoint (an exception there
    leaves a resumable run). Returns the stage summary.
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    tc = cfg["train"]
    if tc["batch_size"] < 2:
        raise FalseCliError(f"config key 'train.batch_size' is {tc['batch_size']}; training "
                            "needs at least 2 (ASPP's image pooling normalises over the batch)")
    if tc["epochs"] < 1:
        raise FalseCliError(f"config key 'train.epochs' is {tc['epochs']}; train at least 1")
    ckpt_path = workdir / stage / CHECKPOINT
    interrupted = ckpt_path.is_file() and not Stage(workdir, stage).is_complete()
    if interrupted and not resume and not force:
        ckpt = read_payload(ckpt_path, "checkpoint", FORCE)
        raise FalseCliError(
            f"{stage}: an interrupted run is in {workdir / stage} (epoch {ckpt['epoch']} of "
            f"{ckpt['config']['train']['epochs']}) — use --resume to continue or --force to "
            "start over")
    device = resolve_device(tc["device"])
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None
                              else torch.cuda.current_device())
    resuming = interrupted and resume
    with stage_run(workdir, stage, cfg, upstream=list(upstream), force=force, keep=resuming,
                   seed=tc["seed"], device=str(device)) as run:
        summary = _train_run(cfg, run, device, resuming, extra_samples, on_epoch)
    ckpt_path.unlink(missing_ok=True)  # the run is complete: model.pt replaces it
    summary["outputs"].append(str(run.stage.manifest_path))
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    return summary


def _train_run(cfg: Config, run: StageRun, device: torch.device, resuming: bool,
               extra_samples: Path | None,
               on_epoch: Callable[[int, dict[str, Any]], None] | None) -> dict[str, Any]:
    """The body of :func:`train`, inside the open stage ``run``."""
    tc, stage = cfg["train"], run.stage.name
    ckpt_path = run.path / CHECKPOINT
    ckpt = read_payload(ckpt_path, "checkpoint", FORCE) if resuming else None
    if ckpt is not None:
        _check_resume(stage, ckpt, cfg)
    gens = {"order": seed_everything(tc["seed"]), "aug": torch.Generator(device=device)}
    gens["aug"].manual_seed(tc["seed"] + AUG_SEED_OFFSET)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
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
    need = sum(a.nbytes + b.nbytes for a, b in arrays.values()) + 5 * sum(
        s.shape[0] * s.shape[1] for s in tracked)
    resident = _fits(need, device)
    pool = Pool(arrays, device, resident)
    del arrays
    evalset = EvalSet(ds, tracked, device, resident)
    n_batches = pool.n_batches(tc["batch_size"])
    if n_batches == 0:
        raise FalseCliError(f"{stage}: no training batch — every shape has a single section; "
                            "use a larger volume or a smaller data.val_every")
    console.log(f"{stage}: {pool.n_samples} training samples in {len(pool.groups)} shape(s), "
                f"{n_batches} batches per epoch, {len(tracked)} tracked sections "
                f"({evalset.n_tracked} pixels), data {'on' if resident else 'streamed to'} "
                f"{device}")

    model = build_model(cfg["model"], n_classes).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc["lr"],
                                 weight_decay=tc["weight_decay"])
    history: list[dict[str, Any]] = []
    val_scores: dict[str, Any] = {}
    done, previous = 0, None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"], gens, device)
        done, history, val_scores = ckpt["epoch"], ckpt["history"], ckpt["val"]
        previous = ckpt["previous"].to(device)
        console.log(f"{stage}: resuming after epoch {done}")
    net = model
    if tc["compile"] and device.type == "cuda":
        net = torch.compile(model)
    elif tc["compile"]:
        console.log(f"{stage}: train.compile is ignored on {device}")

    tracker = Tracker(run.path / "tracking", tracked, evalset.labels[:evalset.n_tracked],
                      ds.classes, ds.ignore_index, epochs=done, previous=previous)
    for path in tracker.paths():
        run.out(str(path.relative_to(run.path)))
    epochs = tc["epochs"]
    with console.progress() as bar:
        task = bar.add_task(stage, total=epochs * n_batches, completed=done * n_batches,
                            info="")
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            loss_sum = _train_epoch(net, pool, optimizer, gens, tc, weights, ds.ignore_index,
                                    amp, lambda: bar.advance(task))
            net.eval()
            pred = evalset.predict(net, tc["eval_batch_size"], amp)
            hist = confusion(pred[evalset.val], evalset.labels[evalset.val], n_classes,
                             ds.ignore_index)
            tracker.record(pred[:evalset.n_tracked])
            train_loss = loss_sum.item() / n_batches
            if not math.isfinite(train_loss):
                raise FalseCliError(f"{stage}: the training loss became {train_loss} at epoch "
                                    f"{epoch} — lower train.lr (now {tc['lr']})")
            val_scores = scores(hist.cpu().numpy(), ds.classes)
            history.append({"epoch": epoch, "train_loss": train_loss,
                            **{k: val_scores[k] for k in ("pixel_acc", "mean_class_acc",
                                                           "miou", "class_acc")},
                            "seconds": round(time.perf_counter() - t0, 3)})
            write_text(run.out("metrics.jsonl"), _jsonl(history))
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "epoch": epoch, "config": cfg, "history": history, "val": val_scores,
                     "previous": tracker.previous.cpu(), "rng": _rng_state(gens, device)}
            save_with(ckpt_path, functools.partial(torch.save, state))
            acc = val_scores["pixel_acc"]
            bar.update(task, info=f"epoch {epoch}/{epochs} loss {train_loss:.4f} val acc "
                                  f"{'n/a' if acc is None else f'{acc:.3f}'}")
            if on_epoch is not None:
                on_epoch(epoch, history[-1])

    write_text(run.out("metrics.jsonl"), _jsonl(history))
    tracker.finish()
    mean, std = ds.stats
    # host tensors, so that the file loads on a machine without the training GPU
    payload = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
               "config": cfg, "classes": ds.classes,
               "norm": {"mean": mean, "std": std}, "epochs": epochs,
               "ignore_index": ds.ignore_index}
    save_with(run.out("model.pt"), functools.partial(torch.save, payload))
    model.eval()
    results = {"val": val_scores, **evaluate_tests(model, ds, tc["eval_batch_size"], amp)}
    write_json(run.out("eval.json"), results)
    return {"stage": stage, "outputs": [str(run.path / rel) for rel in run.outputs],
            "epochs": epochs, "device": str(device), "train_samples": pool.n_samples,
            "final_train_loss": history[-1]["train_loss"], "metrics": results,
            "lines": _metric_lines(results)}

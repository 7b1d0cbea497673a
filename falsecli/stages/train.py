"""Stage 1 (and every retraining run): train the network, tracking every tracked pixel.

The computation is :mod:`falsecli.method.training`'s; this module opens the stage, runs the
epochs and writes the artifacts. The loop never waits for the device within an epoch: losses
and confusion matrices accumulate there and are read once per epoch, when the tracking row is
written; the checkpoint is copied to the host then and written by a background thread. An
interrupted run continues with ``--resume`` (the policy of :mod:`falsecli.core.checkpoint`).
Under ``torchrun`` the run is spread over several processes (see
:mod:`falsecli.core.distributed`); rank 0 alone opens the stage and writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from falsecli.core import checkpoint, console, distributed
from falsecli.core.checkpoint import CHECKPOINT, FORCE, BackgroundSaver
from falsecli.core.config import Config, run_signature
from falsecli.core.distributed import Ranks
from falsecli.core.errors import FalseCliError
from falsecli.core.files import save_npy
from falsecli.core.manifest import Stage, StageRun
from falsecli.core.swap import stage_run
from falsecli.data.geometry import MANIFEST_KEY, record
from falsecli.data.provenance import run_fingerprint
from falsecli.method.datamaptrack import DataMapTracker
from falsecli.method.history import CONFIDENCE, TRACKING, write_confidence
from falsecli.method.metrics import scores
from falsecli.method.model import MODEL, kept_epochs, kept_path, save_kept, save_model
from falsecli.method.runfolder import EVAL, METRICS, write_eval, write_metrics
from falsecli.method.tracing import save_snapshot, snapshot_epochs, snapshot_path
from falsecli.method.tracking import Tracker
from falsecli.method.training import (Session, chunked_confusion, evaluate_tests, prepare,
                                      section_confidence)
from falsecli.stages import Step
from falsecli.stages.transfer import load_samples

#: what a checkpoint holds (see :func:`_epochs`)
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "config", "history", "val", "previous", "rng",
                   "datamap")



# ---------------------------------------------------------------- opening the stage


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
    _check_world(tc, distributed.from_env().world)
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
    # the stage folder now (a redo was built beside it); the checkpoint went with the manifest
    summary["outputs"] = [str(run.path / rel) for rel in run.outputs] + [
        str(run.stage.manifest_path)]
    summary["device"] = where
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    return summary


def _check_world(tc: dict[str, Any], world: int) -> None:
    """Refuse a batch that cannot be shared by the torchrun processes (the config's own
    ranges are checked when it is resolved; this one depends on how it was started)."""
    if tc["batch_size"] < world:
        raise FalseCliError(f"config key 'train.batch_size' is {tc['batch_size']} but torchrun "
                            f"started {world} processes; each needs a section of every batch, "
                            f"so use a batch size of at least {world}")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """An interrupted run's checkpoint, with everything resuming reads from it."""
    return checkpoint.load(path, "checkpoint", FORCE, keys=CHECKPOINT_KEYS,
                           sections=("data", "model", "train"))


def _progress(path: Path) -> str:
    ckpt = _read_checkpoint(path)
    return f"epoch {ckpt['epoch']} of {ckpt['config']['train']['epochs']}"


def _open_stage(stack: contextlib.ExitStack, cfg: Config, workdir: Path, stage: str,
                upstream: list[Stage], force: bool, resume: bool, where: str
                ) -> tuple[StageRun, dict[str, Any] | None]:
    """Open the stage for writing on ``stack`` (refusing an interrupted run without --resume
    or --force); returns it and the checkpoint to resume from, if any."""
    resuming = checkpoint.interrupted(Stage(workdir, stage), resume=resume, force=force,
                                      progress=_progress)
    run = stack.enter_context(stage_run(workdir, stage, cfg, upstream=upstream, force=force,
                                        keep=resuming, seed=cfg["train"]["seed"], device=where))
    run.temp(CHECKPOINT)  # removed once the run is complete, before the stage is unlocked
    if not resuming:
        return run, None
    ckpt = _read_checkpoint(run.path / CHECKPOINT)
    checkpoint.check_signature(stage, run_signature(ckpt["config"]), run_signature(cfg))
    if cfg["train"]["epochs"] < ckpt["epoch"]:
        raise FalseCliError(f"{stage}: the interrupted run has {ckpt['epoch']} epochs; "
                            f"train.epochs={cfg['train']['epochs']} must be at least that")
    return run, ckpt


# ---------------------------------------------------------------- the run


def _train_run(cfg: Config, stage: str, run: StageRun | None, ranks: Ranks,
               device: torch.device, ckpt: dict[str, Any] | None, extra_samples: Path | None,
               on_epoch: Callable[[int, dict[str, Any]], None] | None) -> dict[str, Any]:
    """The body of :func:`train`: ``run`` is the open stage on rank 0, None on the others."""
    extra = None
    if extra_samples is not None:
        d = cfg["data"]
        extra = load_samples(Path(extra_samples), len(d["classes"]), d["ignore_index"])
        console.log(f"{stage}: {len(extra[0])} samples of {extra[0].shape[1:]} from "
                    f"{extra_samples} join the pool")
    s = prepare(cfg, ranks, device, ckpt, extra)
    if s.n_batches == 0:
        raise FalseCliError(f"{stage}: no training batch — every shape has fewer than "
                            f"{s.pool.smallest} sections; use a larger volume or a smaller "
                            "data.val_every")
    console.log(f"{stage}: {s.pool.n_samples} training samples in {len(s.pool.groups)} "
                f"shape(s), {s.n_batches} batches per epoch, {len(s.tracked)} tracked sections "
                f"({s.evalset.n_tracked} pixels), data "
                f"{'on' if s.pool.resident else 'streamed to'} {device}"
                + (f", {ranks.world} processes" if ranks.multi else ""))
    done, history, val_scores, previous = 0, [], {}, None
    if ckpt is not None:
        done, history, val_scores = ckpt["epoch"], ckpt["history"], ckpt["val"]
        previous = ckpt["previous"].to(device)
        console.log(f"{stage}: resuming after epoch {done}")
    tracker, datamap = None, None
    if run is not None:
        tracker = Tracker(run.path / TRACKING, s.tracked,
                          s.evalset.labels[:s.evalset.n_tracked], s.ds.classes,
                          s.ds.ignore_index, epochs=done, previous=previous)
        datamap = DataMapTracker(s.evalset.n_tracked, cfg["train"]["late_from"],
                                 device, None if ckpt is None else ckpt["datamap"])
        for path in tracker.paths():
            run.out(str(path.relative_to(run.path)))
        _keep_kept(run, done)
    val_scores = _epochs(cfg, stage, s, run, (tracker, datamap), done, history, val_scores,
                         on_epoch)
    if run is None or tracker is None or datamap is None:  # ranks other than 0
        return {"stage": stage, "outputs": [], "rank": ranks.rank}
    run.out(str(datamap.save(run.path).relative_to(run.path)))
    return _finish(cfg, stage, s, run, tracker, history, val_scores)


def _epochs(cfg: Config, stage: str, s: Session, run: StageRun | None,
            trackers: tuple[Tracker | None, DataMapTracker | None], done: int,
            history: list[dict[str, Any]], val_scores: dict[str, Any],
            on_epoch: Callable[[int, dict[str, Any]], None] | None) -> dict[str, Any]:
    """Train the epochs after ``done``; after each, rank 0 records the tracking row, appends
    to ``history`` and the metrics, takes a checkpoint and calls ``on_epoch``. Returns the last
    epoch's val scores."""
    tc, ds, n_batches, ev = cfg["train"], s.ds, s.n_batches, s.evalset
    epochs = tc["epochs"]
    tracker, datamap = trackers
    with console.progress() as bar, BackgroundSaver() as saver:
        task = bar.add_task(stage, total=epochs * n_batches, completed=done * n_batches,
                            info="")
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            loss_sum = s.train_epoch(lambda: bar.advance(task))
            pred = s.predict(probs=True)
            if tracker is not None and datamap is not None:
                hist = chunked_confusion(pred[ev.val], ev.labels[ev.val], len(ds.classes),
                                         ds.ignore_index)
                datamap.record(ev.probs[:, :ev.n_tracked], pred[:ev.n_tracked])
                tracker.record(pred[:ev.n_tracked])  # the one wait for the device
            train_loss = distributed.all_sum(s.ranks, loss_sum).item() / n_batches
            if not math.isfinite(train_loss):
                raise FalseCliError(f"{stage}: the training loss became {train_loss} at epoch "
                                    f"{epoch} — lower train.lr (now {tc['lr']})")
            if run is None or tracker is None or datamap is None:
                continue
            val_scores = scores(hist.cpu().numpy(), ds.classes)
            history.append({"epoch": epoch, "train_loss": train_loss,
                            **{k: val_scores[k] for k in ("pixel_acc", "mean_class_acc",
                                                           "miou", "class_acc")},
                            "seconds": round(time.perf_counter() - t0, 3)})
            write_metrics(run.out(METRICS), history)
            if epoch == done + 1 or epoch % tc["checkpoint_every"] == 0:
                saver.save(run.temp(CHECKPOINT), {
                    "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
                    "epoch": epoch, "config": cfg, "history": list(history),
                    "val": val_scores, "previous": tracker.previous,
                    "datamap": datamap.state(),
                    "rng": checkpoint.capture_rng(s.device, s.gens),
                    "tracing": None if s.tracer is None else s.tracer.state_dict()})
            if tc["keep_every"] and epoch % tc["keep_every"] == 0:
                kept = save_kept(run.path, epoch, s.model.state_dict(), tc["lr"])
                run.out(str(kept.relative_to(run.path)))
            if s.tracer is not None and (epoch % tc["trace"]["every"] == 0 or epoch == epochs):
                shares = save_snapshot(run.path, s.tracer, epoch)
                run.out(str(shares.relative_to(run.path)))
            acc = val_scores["pixel_acc"]
            bar.update(task, info=f"epoch {epoch}/{epochs} loss {train_loss:.3f} val acc "
                                  f"{'n/a' if acc is None else f'{acc:.3f}'}")
            if on_epoch is not None:
                on_epoch(epoch, history[-1])
    return val_scores


def _keep_kept(run: StageRun, done: int) -> None:
    """A resumed run keeps the weights and shares it kept up to its checkpoint at epoch
    ``done`` (they join the outputs again) and drops any kept after it (those epochs are
    trained again)."""
    for epochs, path_of in ((kept_epochs, kept_path), (snapshot_epochs, snapshot_path)):
        for epoch in epochs(run.path):
            path = path_of(run.path, epoch)
            if epoch <= done:
                run.out(str(path.relative_to(run.path)))
            else:
                path.unlink()


# ---------------------------------------------------------------- the artifacts


def _finish(cfg: Config, stage: str, s: Session, run: StageRun, tracker: Tracker,
            history: list[dict[str, Any]], val_scores: dict[str, Any]) -> dict[str, Any]:
    """Write the metrics, the tracking history, the model and the final scores; returns the
    stage summary."""
    tc, ds = cfg["train"], s.ds
    write_metrics(run.out(METRICS), history)
    tracker.finish()
    _write_confidence(s, run)
    _write_margins(s, run)
    mean, std = ds.stats
    save_model(run.out(MODEL), {"state_dict": s.model.state_dict(), "config": cfg,
                                "classes": ds.classes, "norm": {"mean": mean, "std": std},
                                "epochs": tc["epochs"], "ignore_index": ds.ignore_index})
    s.model.eval()
    results = {"val": val_scores, **evaluate_tests(s.model, ds, tc["eval_batch_size"], s.amp)}
    write_eval(run.out(EVAL), results)
    # what the report compares runs by, and how much optimisation each method got
    run.extra.update(fingerprint=run_fingerprint(ds, s.tracked, tc["epochs"]),
                     **{MANIFEST_KEY: record({n: v.geometry for n, v in ds.volumes.items()})},
                     steps_per_epoch=s.n_batches, train_samples=s.pool.n_samples)
    return {"stage": stage, "outputs": [], "epochs": tc["epochs"], "processes": s.ranks.world,
            "train_samples": s.pool.n_samples, "final_train_loss": history[-1]["train_loss"],
            "metrics": results, "lines": _metric_lines(results)}


def _write_confidence(s: Session, run: StageRun) -> None:
    """The pool's softmax uncertainty with the final weights (the last epoch's), for the
    entropy, margin and least-confidence queries; nothing when the pool is not tracked."""
    pool = [t for t in s.tracked if t.split == "pool"]
    if pool:
        s.model.eval()
        values = section_confidence(s.model, s.ds, pool, s.tc["eval_batch_size"], s.amp)
        write_confidence(run.out(f"{TRACKING}/{CONFIDENCE}"), [t.name for t in pool], values)


def _write_margins(s: Session, run: StageRun) -> None:
    """Each tracked pixel's final softmax margin (claim C1 at the decision boundary)."""
    from falsecli.method.margin import MARGIN, label_margins

    s.model.eval()
    save_npy(run.out(f"{TRACKING}/{MARGIN}"),
             label_margins(s.model, s.ds, s.tracked, s.tc["eval_batch_size"], s.amp))


def _metric_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    def fmt(v: float | None) -> str:
        return "  n/a " if v is None else f"{v:.4f}"

    return [f"{split:<8} pixel_acc {fmt(m['pixel_acc'])}  mean_class_acc "
            f"{fmt(m['mean_class_acc'])}  miou {fmt(m['miou'])}  fwiou {fmt(m['fwiou'])}"
            for split, m in results.items()]



STEP = Step("train", train, lambda cfg, workdir: [], resumes=True)

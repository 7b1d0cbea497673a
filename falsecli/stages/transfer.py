"""Stage 4: class-specific style transfer from the most-forgotten sections (paper §2.2, Fig. 3).

1. Train the SEAN-style model (:mod:`falsecli.method.sean`, fitted by
   :func:`falsecli.method.style.fit`) on random ``transfer.crop`` crops of the training
   sections (the crop is clipped to the smallest training section), or reuse
   ``transfer/generator.pt`` when it was trained with the same data and training keys.
   With ``transfer.perceptual_weight`` > 0 the generator also matches the real crops in
   the features of ``train/model.pt``'s frozen backbone (:mod:`falsecli.method.perceptual`;
   ``train/`` is then an upstream result, and a retrained network retrains the generator).
   Training checkpoints every ``transfer.checkpoint_every`` steps; an interrupted ``transfer``
   continues from the checkpoint with ``--resume`` (the policy of
   :mod:`falsecli.core.checkpoint`), ``--force`` starts over.
2. For each of the top ``transfer.sources`` sections of ``rank/ranking.csv`` for the class,
   generate ``transfer.per_source`` samples: a random training section is the target; its own
   style codes are kept except the class's, which is the source's; the image is generated on
   the target's label map, and the target's labels are the sample's labels. For each, the
   identity sample (the control of ``retrain --aug transfer-identity``) is generated from the
   same target and noise with all its own codes: ``samples_identity.npz``, same layout and
   order. With ``transfer.composite`` both are blended into their target: generated pixels
   within ``composite_dilate`` pixels of the class, the target's own beyond
   ``composite_dilate + composite_feather``, linear in the distance in between (the default,
   false, is the paper's: the generator repaints the whole section).

Targets are the training sections that contain the class, of the most common shape among them
(F3: the crosslines), so that ``samples.npz`` holds full sections of one shape (N, H, W) that
retraining adds to its pool like any other section (:func:`load_samples` reads it). Images are
in ``ds.image`` units.

With ``transfer.method: statistics`` step 1 is skipped and step 2 matches the source class's
depth spectrum, lateral coherence and amplitude distribution onto the target's class, which
alone changes, its change feathered ``composite_feather`` pixels outward
(:mod:`falsecli.method.classmatch`); its identity sample is the target matched to itself, the
target bit for bit.

Quality figures (``metrics.json``; per sample in ``changes.csv``), on the samples as written:
the generator's reconstruction error on held-out sections (None without a generator); the
change ratio: mean |transfer - identity sample| inside the class over the same outside it
(``change_inside``, ``change_outside``); the same against the target (``*_vs_target``) and
``relative_change_outside``, the outside change over the targets' mean |amplitude| there (0:
the target's geology is kept); and ``style_moved`` (:mod:`falsecli.method.stylemeasure`): 1
when the class has the source's style, 0 when it kept the target's. ``identity`` holds the
target-relative figures and ``style_moved`` of the identity samples.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from falsecli.core import checkpoint, console
from falsecli.core.checkpoint import CHECKPOINT, FORCE
from falsecli.core.config import Config, class_id
from falsecli.core.errors import FalseCliError
from falsecli.core.files import read_csv, save_npz, write_csv, write_json
from falsecli.core.manifest import Stage, StageRun
from falsecli.core.rules import GENERATED
from falsecli.core.runtime import bf16_autocast, resolve_device, seed_everything
from falsecli.core.swap import stage_run
from falsecli.data.dataset import Dataset, Section, load_dataset
from falsecli.data.geometry import role_numbers
from falsecli.method import perceptual, style, stylemeasure
from falsecli.method.transfermethod import (NO_TRAINING, Made, backbone_stages, sean_samples,
                                            statistics_samples, summary_lines)
from falsecli.method.pool import Pool
from falsecli.method.sean import ARCHITECTURE, LossWeights, Sean, SeanConfig
from falsecli.stages import Step
from falsecli.stages.rank import load_ranking

#: the transferred samples, read by retraining (:func:`load_samples`)
SAMPLES = "samples.npz"
#: the control: the same targets and noise with their own style codes (same layout and order)
IDENTITY_SAMPLES = "samples_identity.npz"
#: the samples file of ``transfer/`` each generated-sample method adds to its training pool
METHOD_SAMPLES = dict(zip(GENERATED, (SAMPLES, IDENTITY_SAMPLES)))
#: the trained style-transfer model, reused while its training keys stay the same
GENERATOR = "generator.pt"
METRICS = "metrics.json"
#: per sample of each generated-sample method, the changes metrics.json averages
#: (:func:`load_changes`): the report's C5 interval is taken over these rows
CHANGES = "changes.csv"
#: the columns of changes.csv and the type of each
CHANGE_COLUMNS = {"method": str, "source": str, "target": str, "change_inside": float,
                  "change_outside": float, "change_inside_vs_target": float,
                  "change_outside_vs_target": float, "amplitude_outside": float,
                  "style_moved": float, "style_to_source": float,
                  "style_target_to_source": float}
#: the columns changes.csv is written with: each section's survey line numbers beside it
CHANGE_WRITTEN = ["method", "source", "source_inline", "source_crossline", "target",
                  "target_inline", "target_crossline", *list(CHANGE_COLUMNS)[3:]]
#: paper Fig. 3 for all style sources together (the report shows it)
FIG3 = "figures/fig3.png"
#: Fig. 3's style: the class region's amplitude distribution and depth spectrum of target,
#: source and transfer, per source (the report shows it)
FIG3_STYLE = "figures/fig3_style.png"
#: transfer keys that change the trained generator (the others only change the sampling)
TRAIN_KEYS = ("iterations", "crop", "batch_size", "lr", "style_dim", "channels", "seed",
              "l1_weight", "fm_weight", "perceptual_weight")


def generator_config(cfg: Config, backbone: Stage | None = None) -> dict[str, Any]:
    """What a stored generator must have been trained with to be reused: with the perceptual
    loss, also the trained network whose backbone it was trained through."""
    return {"data": cfg["data"], "transfer": {k: cfg["transfer"][k] for k in TRAIN_KEYS},
            "generator": {"architecture": ARCHITECTURE},
            **({"backbone": {backbone.name: backbone.digest()}} if backbone else {})}


# ---------------------------------------------------------------- inputs


def resolve_sections(ds: Dataset, names: Sequence[str]) -> list[Section]:
    """The style sources by name: validation sections only. A test section would feed test
    data into the retraining pool, and the test scores would no longer be a test."""
    known = {s.name: s for s in ds.sections("val")}
    tests = {s.name for v in ds.tests for s in ds.sections(v.name)}
    for name in names:
        if name in tests:
            raise FalseCliError(f"transfer: ranked section '{name}' is a test section; only "
                                "validation sections can be style sources (test data must "
                                "never feed training) — rank again ('falsecli rank --force')")
        if name not in known:
            raise FalseCliError(f"transfer: ranked section '{name}' is not a validation "
                                "section of the configured data — rank again with the same "
                                "data ('falsecli rank --force')")
    return [known[n] for n in names]


def load_samples(path: Path, n_classes: int, ignore_index: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``images`` float32 (N, H, W) and ``labels`` uint8 (N, H, W) of a samples.npz, checked."""
    fix = "rerun 'falsecli transfer --force'"
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except FileNotFoundError:
        raise FalseCliError(f"{path}: missing — run 'falsecli transfer' first") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise FalseCliError(f"{path}: not a samples file with images and labels "
                            f"({str(exc).splitlines()[0] if str(exc) else 'empty'}) — "
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


# ---------------------------------------------------------------- the generator


def _new_model(cfg: Config) -> Sean:
    t, d = cfg["transfer"], cfg["data"]
    return Sean(SeanConfig(len(d["classes"]), t["style_dim"], t["channels"], d["ignore_index"]))


def _fit_options(t: dict[str, Any], amp: bool) -> style.FitOptions:
    return style.FitOptions(
        iterations=t["iterations"], crop=tuple(t["crop"]), batch_size=t["batch_size"],
        lr=t["lr"], seed=t["seed"], log_every=t["log_every"],
        checkpoint_every=t["checkpoint_every"],
        weights=LossWeights(l1=t["l1_weight"], fm=t["fm_weight"],
                            perceptual=t["perceptual_weight"]), amp=amp)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """An interrupted generator training's checkpoint: its config and :data:`style.STATE_KEYS`."""
    return checkpoint.load(path, "checkpoint", FORCE, keys=("config", *style.STATE_KEYS),
                           sections=("data", "transfer"))


def _progress(path: Path) -> str:
    ckpt = _read_checkpoint(path)
    return f"step {ckpt['step']} of {ckpt['config']['transfer']['iterations']}"


def _stored_generator(path: Path) -> dict[str, Any] | None:
    """``generator.pt`` if there is a readable one; a truncated or foreign file is said and
    ignored (the generator is trained again and replaces it)."""
    if not path.is_file():
        return None
    try:
        stored = checkpoint.load(path, "generator", "it is trained again",
                                 keys=("config", "encoder", "generator", "training"))
    except FalseCliError as exc:
        console.log(f"transfer: ignoring {exc}")
        return None
    if not all(isinstance(stored[k], dict) for k in ("config", "encoder", "generator",
                                                      "training")):
        console.log(f"transfer: ignoring {path}: not a falsecli generator (config, encoder, "
                    "generator and training must be mappings) — it is trained again")
        return None
    return stored


def _load_weights(model: Sean, stored: dict[str, Any], path: Path) -> bool:
    """Load a stored generator's weights into ``model``; False (said) when they do not fit
    it (a file of another falsecli version, or edited)."""
    try:
        model.encoder.load_state_dict(stored["encoder"])
        model.generator.load_state_dict(stored["generator"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
        console.log(f"transfer: ignoring {path}: its weights do not fit the generator "
                    f"({str(exc).splitlines()[0]}) — it is trained again")
        return False
    return True


def _trained_model(cfg: Config, pool: Pool, run: StageRun, device: torch.device, amp: bool,
                   ckpt: dict[str, Any] | None, backbone: Stage | None
                   ) -> tuple[Sean, dict[str, Any]]:
    """The trained model and a summary of its training: reused from ``generator.pt`` when the
    generator config matches, else trained (from the checkpoint ``ckpt`` when resuming;
    through the frozen ``backbone`` run's network when given)."""
    want = generator_config(cfg, backbone)
    stored = _stored_generator(run.path / GENERATOR)
    if stored is not None and stored["config"] == want:
        model = _new_model(cfg)
        if _load_weights(model, stored, run.path / GENERATOR):
            console.log(f"transfer: reusing {run.path / GENERATOR} (same training config)")
            run.out(GENERATOR)
            (run.path / CHECKPOINT).unlink(missing_ok=True)
            return model.to(device), {**stored["training"], "generator": "reused"}
    if ckpt is None:
        seed_everything(cfg["transfer"]["seed"])  # the initialisation depends on the seed only
    model = _new_model(cfg)
    features = None if backbone is None else perceptual.from_run(backbone.path, device)
    training = style.fit(model, pool, _fit_options(cfg["transfer"], amp), device, resume=ckpt,
                         save=lambda state: checkpoint.save(run.path / CHECKPOINT,
                                                            {"config": want, **state}),
                         features=features)
    checkpoint.save(run.out(GENERATOR), {
        "config": want, "sean": dataclasses.asdict(model.cfg), "classes": cfg["data"]["classes"],
        "encoder": model.encoder.state_dict(), "generator": model.generator.state_dict(),
        "training": training})
    (run.path / CHECKPOINT).unlink(missing_ok=True)
    return model, {**training, "generator": "trained" if ckpt is None else "resumed"}


# ---------------------------------------------------------------- the stage


def _clear_results(path: Path) -> None:
    """Remove an interrupted run's results but keep what resuming and reuse need."""
    for child in path.iterdir():
        if child.name in (GENERATOR, CHECKPOINT):
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _write_figures(run: StageRun, rows: list[dict[str, Any]], sources: Sequence[Section],
                   ds: Dataset, k: int, history: list[dict[str, float]]) -> None:
    """Fig. 3 and its style for all sources together, Fig. 3 for each alone, the loss curves."""
    # matplotlib only to draw: train imports this module to read samples and draws nothing
    from falsecli.present import figures, style_figures, transfer_figures

    draw = functools.partial(transfer_figures.fig3, classes=ds.classes,
                             ignore_index=ds.ignore_index, class_name=ds.classes[k])
    figures.save_figure(draw(rows), run.out(FIG3))
    figures.save_figure(style_figures.style_figure(rows, k, ds.classes[k]), run.out(FIG3_STYLE))
    for row, src in zip(rows, sources):
        figures.save_figure(draw([row]), run.out(f"figures/fig3_{src.name}.png"))
    if history:
        figures.save_figure(transfer_figures.loss_figure(history), run.out("figures/losses.png"))


def _save_samples(path: Path, samples: style.Samples) -> None:
    save_npz(path, images=np.stack(samples.images).astype(np.float32),
             labels=np.stack(samples.labels).astype(np.uint8),
             source=np.array(samples.source), target=np.array(samples.target))


def _change_rows(method: str, s: style.Samples) -> list[dict[str, Any]]:
    return [{"method": method, **dict(zip(list(CHANGE_COLUMNS)[1:], values))}
            for values in zip(s.source, s.target, s.inside, s.outside, s.inside_target,
                              s.outside_target, s.amplitude_outside,
                              [_nan(m) for m in s.style_moved], s.style_to_source,
                              s.style_target_to_source)]


def _nan(value: float | None) -> float:
    """None (a ratio without a denominator) as NaN, which a CSV float column reads back."""
    return float("nan") if value is None else value


def load_changes(workdir: Path, method: str) -> list[dict[str, Any]]:
    """The rows of ``transfer/changes.csv`` for ``method`` (``transfer`` or
    ``transfer-identity``), one per sample in the samples file's order; [] when transfer/
    is not complete."""
    stage = Stage(Path(workdir), "transfer")
    if not stage.is_complete():
        return []
    if not (stage.path / CHANGES).is_file():
        raise FalseCliError(f"{stage.path / CHANGES}: missing (transfer/ was written by an "
                            f"older falsecli) — redo it with 'falsecli transfer --force -w "
                            f"{workdir}'")
    return [row for row in read_csv(workdir, "transfer", CHANGES, CHANGE_COLUMNS)
            if row["method"] == method]


def _write_samples(run: StageRun, cfg: Config, ds: Dataset, k: int, sources: Sequence[Section],
                   made: Made, training: dict[str, Any]) -> dict[str, Any]:
    """Write the samples, the identity samples, their changes, metrics and figures; returns
    the metrics."""
    samples, identity = made.samples, made.identity
    _save_samples(run.out(SAMPLES), samples)
    _save_samples(run.out(IDENTITY_SAMPLES), identity)
    known = {x.name: x for x in [*ds.sections("train"), *ds.sections("val")]}
    write_csv(run.out(CHANGES), CHANGE_WRITTEN,
              [{**row, **role_numbers(ds.train.geometry, known, row, ("source", "target"))}
               for method, done in zip(GENERATED, (samples, identity))
               for row in _change_rows(method, done)])
    metrics = {"class": ds.classes[k], "class_id": k, "method": cfg["transfer"]["method"],
               "samples": len(samples.source), "shape": list(samples.images[0].shape),
               "sources": [s.name for s in sources],
               "composite": made.composite,
               **made.quality, **style.change_metrics(samples),
               **stylemeasure.summary(samples.style_moved, samples.source),
               "identity": {**style.target_change_metrics(identity),
                            **stylemeasure.summary(identity.style_moved, identity.source)},
               "training": training}
    write_json(run.out(METRICS), metrics)
    _write_figures(run, made.rows, sources, ds, k, training["history"])
    return metrics


def transfer(cfg: Config, workdir: Path, *, force: bool = False, resume: bool = False
             ) -> dict[str, Any]:
    """Stage 4 (see the module docstring). Returns the stage summary."""
    workdir = Path(workdir)
    t = cfg["transfer"]
    k = class_id(cfg, t["class"])
    class_name = cfg["data"]["classes"][k]
    device = resolve_device(cfg["train"]["device"])
    rank = Stage(workdir, "rank")
    backbone = next((Stage(workdir, name) for name in backbone_stages(t)), None)
    resuming = checkpoint.interrupted(Stage(workdir, "transfer"), resume=resume, force=force,
                                      progress=_progress)
    with stage_run(workdir, "transfer", cfg, upstream=[rank, *filter(None, [backbone])],
                   force=force, keep=not force or resuming, seed=t["seed"],
                   device=str(device)) as run:
        _clear_results(run.path)
        ckpt = _read_checkpoint(run.temp(CHECKPOINT)) if resuming else None
        if ckpt is not None:
            checkpoint.check_signature("transfer", ckpt["config"],
                                       generator_config(cfg, backbone))
        names = [row["section"] for row in load_ranking(workdir, class_name)[:t["sources"]]]
        ds = load_dataset(cfg)
        sources = resolve_sections(ds, names)
        if len(sources) < t["sources"]:
            console.log(f"transfer: only {len(sources)} section(s) ranked for '{class_name}'; "
                        f"using them all (transfer.sources is {t['sources']})")
        pool = Pool.load(ds, ds.sections("train"), device)
        targets = pool.targets(k, class_name)
        t_log = (f"transfer: '{class_name}' by {t['method']} from {len(sources)} source(s) "
                 f"into {len(targets)} candidate target(s) of shape {list(targets[0].shape)}")
        if t["method"] == "statistics":
            del pool
            console.log(t_log)
            made, training = statistics_samples(cfg, ds, k, sources, targets), NO_TRAINING
        else:
            amp = bf16_autocast(device, cfg["train"]["amp"])
            model, training = _trained_model(cfg, pool, run, device, amp, ckpt, backbone)
            del pool
            console.log(t_log)
            made = sean_samples(cfg, ds, model, k, sources, targets, device, amp)
        metrics = _write_samples(run, cfg, ds, k, sources, made, training)
    return _summary(metrics, run)


def _summary(metrics: dict[str, Any], run: StageRun) -> dict[str, Any]:
    training = metrics["training"]
    return {"stage": "transfer", "class": metrics["class"], "samples": metrics["samples"],
            "method": metrics["method"], "reconstruction_error": metrics["reconstruction_error"],
            "class_local_change_ratio": metrics["class_local_change_ratio"],
            "style_moved": metrics["style_moved"],
            "generator": training["generator"], "lines": summary_lines(metrics),
            "outputs": [str(run.path / p) for p in run.outputs]}


STEP = Step("transfer", transfer,
            lambda cfg, workdir: ["rank", *backbone_stages(cfg["transfer"])], resumes=True)

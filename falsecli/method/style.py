"""Training and using the style-transfer model (:mod:`falsecli.method.sean`): the GAN's fit
loop, encoding and generating with the trained model, the transferred samples and their
quality figures. The transfer stage (:mod:`falsecli.stages.transfer`) decides what to train,
reuse or resume and writes the files.

Everything here is a pure function of its seeds: the crops of a training step depend on
(seed, step) only, and each generation on its own noise seed, so that a resumed training
repeats the uninterrupted one and a transfer and its reconstruction share their noise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from falsecli.core import console
from falsecli.core.checkpoint import capture_rng, restore_rng
from falsecli.core.errors import FalseCliError
from falsecli.data.dataset import Dataset, Section
from falsecli.method.pool import Pool, by_shape
from falsecli.method.sean import (LOSS_NAMES, N_UP, FeatureLossFn, LossWeights, Sean,
                                  optimizers, train_step)
from falsecli.method.stylemeasure import Descriptor, describe
from falsecli.method.stylemeasure import score as style_score

#: what :func:`fit` hands its checkpoint callback, and reads back to resume
STATE_KEYS = ("step", "model", "opt_g", "opt_d", "history", "seconds", "rng", "acc", "since")


# ---------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """What :func:`fit` trains with (the ``transfer`` keys of the same names)."""

    iterations: int
    crop: tuple[int, int]  # clipped to the smallest section of the pool
    batch_size: int
    lr: float
    seed: int
    log_every: int
    checkpoint_every: int
    weights: LossWeights
    amp: bool = False  # bf16 autocast (CUDA only)


@dataclasses.dataclass
class _Progress:
    """Where training stands besides the networks."""

    step: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # spent before this process took over
    acc: torch.Tensor = dataclasses.field(
        default_factory=lambda: torch.zeros(len(LOSS_NAMES)))  # loss sums since the read-out
    since: int = 0  # steps summed in ``acc``

    def read_out(self, step: int) -> str:
        """Append the mean losses since the last read-out to the history (the loop's only
        host sync) and say them."""
        losses = dict(zip(LOSS_NAMES, (self.acc / self.since).tolist()))
        self.history.append({"step": step, **{k: round(v, 5) for k, v in losses.items()}})
        self.acc.zero_()
        self.since = 0
        return "  ".join(f"{k} {v:.3f}" for k, v in losses.items())


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The crops of step ``step``: a pure function of (seed, step), so resuming repeats them."""
    return np.random.default_rng([seed, step])


def fit(model: Sean, pool: Pool, opts: FitOptions, device: torch.device,
        save: Callable[[dict[str, Any]], None], resume: Mapping[str, Any] | None = None,
        features: FeatureLossFn | None = None) -> dict[str, Any]:
    """Train ``model`` on random crops of ``pool`` for ``opts.iterations`` steps, from the
    checkpoint state ``resume`` when given, with the perceptual loss ``features`` when given
    (frozen, so not part of the state). Every ``opts.checkpoint_every`` steps ``save``
    receives the state to resume from (:data:`STATE_KEYS`). Returns the training summary:
    iterations, crop, the loss history and the training seconds."""
    opt_g, opt_d = optimizers(model, opts.lr)
    p = _Progress()
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt_g.load_state_dict(resume["opt_g"])
        opt_d.load_state_dict(resume["opt_d"])
        p = _Progress(resume["step"], resume["history"], resume["seconds"], resume["acc"],
                      resume["since"])
        restore_rng(resume["rng"], device)
        console.log(f"transfer: resuming generator training at step {p.step}")
    model.to(device).train()
    _optimizer_to(opt_g, device)
    _optimizer_to(opt_d, device)
    crop = _crop_size(pool, opts)
    p.acc = p.acc.to(device)
    t0 = time.perf_counter()

    def state(step: int) -> dict[str, Any]:
        return {"step": step, "model": model.state_dict(), "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(), "history": p.history,
                "seconds": p.seconds + time.perf_counter() - t0, "rng": capture_rng(device),
                "acc": p.acc.cpu(), "since": p.since}

    total = opts.iterations
    with console.progress() as bar:
        task = bar.add_task("transfer: GAN", total=total, completed=p.step, info="")
        for step in range(p.step, total):
            image, labels = pool.sample(step_rng(opts.seed, step), crop, opts.batch_size)
            p.acc += train_step(model, opt_g, opt_d, image, labels, opts.weights, amp=opts.amp,
                                features=features)
            p.since += 1
            done = step + 1
            bar.update(task, advance=1)
            if done % opts.log_every == 0 or done == total:
                bar.update(task, info=p.read_out(done))
            if done % opts.checkpoint_every == 0 and done < total:
                save(state(done))
    return {"iterations": total, "crop": list(crop), "history": p.history,
            "final_losses": {k: p.history[-1][k] for k in LOSS_NAMES} if p.history else {},
            "seconds": round(p.seconds + time.perf_counter() - t0, 2)}


def _crop_size(pool: Pool, opts: FitOptions) -> tuple[int, int]:
    """The crop of ``opts`` clipped to the pool, refused when too small to train on."""
    crop = pool.crop_size(opts.crop)
    coarse = opts.batch_size * -(-crop[0] // 2 ** N_UP) * -(-crop[1] // 2 ** N_UP)
    if coarse < 2:  # batch norm needs two values per channel at the coarsest scale
        raise FalseCliError(f"transfer: crop {list(crop)} x batch {opts.batch_size} is too "
                            "small to train on; use transfer.batch_size >= 2 or a crop larger "
                            f"than {2 ** N_UP}")
    return crop


def _optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a loaded optimizer's state next to its (moved) parameters."""
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)


# ---------------------------------------------------------------- generation


def _noise(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class Transferer:
    """Encode and generate with a trained model, in eval mode, one same-shape batch at a time."""

    def __init__(self, model: Sean, device: torch.device, amp: bool) -> None:
        self.model = model.eval()
        self.device = device
        self.amp = amp

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    @torch.no_grad()
    def codes(self, images: np.ndarray, labels: np.ndarray) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model.codes(self._tensor(images), self._tensor(labels)).float()

    @torch.no_grad()
    def generate(self, labels: np.ndarray, codes: torch.Tensor, noise_seed: int) -> np.ndarray:
        """Images (B, H, W) for labels (B, H, W); the same ``noise_seed`` gives the same noise."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model.generate(self._tensor(labels), codes,
                                      _noise(self.device, noise_seed))
        return out.float().cpu().numpy()


def reconstruction_error(tr: Transferer, ds: Dataset, sections: Sequence[Section], batch: int
                         ) -> dict[str, Any]:
    """Mean |G(E(x), y) - x| over the pixels of ``sections``, and the error of predicting the
    training mean (|x|: images are normalised), which puts the first number in context."""
    err = base = 0.0
    pixels = 0
    for i in range(0, len(sections), batch):
        for group in by_shape(sections[i:i + batch]).values():
            images, labels = ds.stack(group)
            recon = tr.generate(labels, tr.codes(images, labels), noise_seed=i)
            err += float(np.abs(recon - images).sum(dtype=np.float64))
            base += float(np.abs(images).sum(dtype=np.float64))
            pixels += images.size
    return {"reconstruction_error": err / pixels, "reconstruction_baseline": base / pixels,
            "reconstruction_sections": [s.name for s in sections]}


@dataclasses.dataclass(frozen=True)
class Composite:
    """Class-local compositing (``transfer.composite``): generated pixels within ``dilate``
    pixels of the class, the target's own pixels beyond ``dilate + feather``, and a linear
    blend by distance in between, so the sample keeps the target's geology outside the class.
    """

    dilate: int
    feather: int

    def weights(self, mask: np.ndarray) -> np.ndarray:
        """Weight of the generated image per pixel of one (H, W) class ``mask``: 1 up to
        ``dilate`` pixels (Euclidean) from the class, falling linearly to 0 at
        ``dilate + feather``; all 0 when the class is absent."""
        if not mask.any():
            return np.zeros(mask.shape, np.float32)
        dist = ndimage.distance_transform_edt(~mask)  # 0 on the class
        if self.feather == 0:
            return (dist <= self.dilate).astype(np.float32)
        return np.clip((self.dilate + self.feather - dist) / self.feather, 0, 1
                       ).astype(np.float32)

    def __call__(self, generated: np.ndarray, target: np.ndarray, masks: np.ndarray
                 ) -> np.ndarray:
        """(B, H, W) generated images blended into their (B, H, W) targets."""
        w = np.stack([self.weights(m) for m in masks])
        return w * generated + (1 - w) * target


@dataclasses.dataclass
class Samples:
    """Generated samples and, per sample, the mean absolute change inside and outside the
    class: against the reconstruction (same target, same noise, its own codes) and against
    the target itself, the target's mean |amplitude| outside the class, and how far the
    class's style moved toward the source's (:func:`stylemeasure.score`)."""

    images: list[np.ndarray] = dataclasses.field(default_factory=list)
    labels: list[np.ndarray] = dataclasses.field(default_factory=list)
    source: list[str] = dataclasses.field(default_factory=list)
    target: list[str] = dataclasses.field(default_factory=list)
    inside: list[float] = dataclasses.field(default_factory=list)
    outside: list[float] = dataclasses.field(default_factory=list)
    inside_target: list[float] = dataclasses.field(default_factory=list)
    outside_target: list[float] = dataclasses.field(default_factory=list)
    amplitude_outside: list[float] = dataclasses.field(default_factory=list)
    style_moved: list[float | None] = dataclasses.field(default_factory=list)
    style_to_source: list[float] = dataclasses.field(default_factory=list)
    style_target_to_source: list[float] = dataclasses.field(default_factory=list)

    def add(self, image: np.ndarray, labels: np.ndarray, source: str, target: str,
            original: np.ndarray, reference: np.ndarray, inside: np.ndarray,
            source_style: Descriptor | None) -> None:
        """One sample generated on ``labels`` for the target image ``original``;
        ``reference`` is what the change is measured against besides the target (the
        reconstruction), ``inside`` the class mask, ``source_style`` the source's class."""
        self.images.append(image)
        self.labels.append(labels)
        self.source.append(source)
        self.target.append(target)
        change, to_target = np.abs(image - reference), np.abs(image - original)
        self.inside.append(_mean(change[inside]))
        self.outside.append(_mean(change[~inside]))
        self.inside_target.append(_mean(to_target[inside]))
        self.outside_target.append(_mean(to_target[~inside]))
        self.amplitude_outside.append(_mean(np.abs(original[~inside])))
        moved = style_score(image, original, inside, source_style)
        self.style_moved.append(moved.moved)
        self.style_to_source.append(moved.to_source)
        self.style_target_to_source.append(moved.target_to_source)


def generate_samples(tr: Transferer, ds: Dataset, k: int, sources: Sequence[Section],
                     targets: Sequence[Section], per_source: int, batch: int, seed: int,
                     composite: Composite | None = None
                     ) -> tuple[Samples, Samples, list[torch.Tensor], list[Section]]:
    """``per_source`` transfers per source into random targets (without replacement while the
    pool lasts), and for each the identity sample: the same target and noise with the
    target's own codes (the control that isolates the style swap). With ``composite`` both
    are blended into their targets. Returns the transfers, the identity samples (same order),
    each source's class code and each source's first target."""
    rng = np.random.default_rng([seed, 1])
    out, identity = Samples(), Samples()
    source_codes, first_targets = [], []
    with console.progress() as bar:
        task = bar.add_task("transfer: generating", total=len(sources) * per_source, info="")
        for si, src in enumerate(sources):
            src_img, src_lab = ds.image(src), ds.label(src)
            code = tr.codes(src_img[None], src_lab[None])[0, k]
            src_style = describe(src_img, src_lab == k)
            source_codes.append(code)
            chosen = [targets[int(i)] for i in pick_targets(rng, len(targets), per_source)]
            first_targets.append(chosen[0])
            for b in range(0, per_source, batch):
                group = chosen[b:b + batch]
                images, labels = ds.stack(group)
                codes = tr.codes(images, labels)
                noise_seed = seed * 1_000_003 + si * 10_007 + b
                recon = tr.generate(labels, codes, noise_seed)
                swapped = codes.clone()
                swapped[:, k] = code
                trans = tr.generate(labels, swapped, noise_seed)
                inside = labels == k
                if composite is not None:
                    recon, trans = (composite(x, images, inside) for x in (recon, trans))
                for j, tgt in enumerate(group):
                    args = (labels[j], src.name, tgt.name, images[j], recon[j], inside[j],
                            src_style)
                    out.add(trans[j], *args)
                    identity.add(recon[j], *args)
                bar.update(task, advance=len(group), info=src.name)
    return out, identity, source_codes, first_targets


def pick_targets(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` random indices into ``n`` targets, without replacement while they last: each
    target is used once before any is used twice (F3 has far more targets than 64 per source,
    a small survey fewer)."""
    rounds = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(rounds)])[:count]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def change_metrics(s: Samples) -> dict[str, Any]:
    """The class-local change ratio against the reconstruction, per sample then averaged (and
    its parts), and the changes against the target (:func:`target_change_metrics`)."""
    inside, outside = np.array(s.inside), np.array(s.outside)
    ratio = inside / np.maximum(outside, 1e-12)
    per_source = {}
    for name in dict.fromkeys(s.source):
        sel = np.array(s.source) == name
        per_source[name] = float(ratio[sel].mean())
    return {"class_local_change_ratio": float(ratio.mean()),
            "change_inside": float(inside.mean()), "change_outside": float(outside.mean()),
            "class_local_change_ratio_per_source": per_source, **target_change_metrics(s)}


def target_change_metrics(s: Samples) -> dict[str, Any]:
    """How far the samples are from their targets, inside and outside the class (means over
    the samples), their ratio, and the outside change over the targets' own mean |amplitude|
    there (0: the target's geology is kept; about 1 or more: it is repainted). A ratio whose
    denominator is 0 is None."""
    inside, outside = float(np.mean(s.inside_target)), float(np.mean(s.outside_target))
    amplitude = float(np.mean(s.amplitude_outside))
    return {"change_inside_vs_target": inside, "change_outside_vs_target": outside,
            "class_local_change_ratio_vs_target": inside / outside if outside > 0 else None,
            "relative_change_outside": outside / amplitude if amplitude > 0 else None}


def figure_rows(tr: Transferer, ds: Dataset, k: int, sources: Sequence[Section],
                source_codes: Sequence[torch.Tensor], first_targets: Sequence[Section],
                seed: int, composite: Composite | None = None) -> list[dict[str, Any]]:
    """Fig. 3 rows: each source's first target, transferred from that source and from the next
    one (from its own style, i.e. reconstructed, when there is one source only), with the same
    noise, so that their difference shows only what the style code changes; composited into
    the target as the samples are."""
    rows = []
    for si, tgt in enumerate(first_targets):
        image, labels = ds.image(tgt), ds.label(tgt)
        codes = tr.codes(image[None], labels[None])
        other = (si + 1) % len(sources)
        alt_codes = codes.clone()
        if other != si:
            alt_codes[:, k] = source_codes[other]
        codes[:, k] = source_codes[si]
        transfer = tr.generate(labels[None], codes, seed + si)[0]
        alt = tr.generate(labels[None], alt_codes, seed + si)[0]
        if composite is not None:
            transfer, alt = (composite(x[None], image[None], (labels == k)[None])[0]
                             for x in (transfer, alt))
        rows.append(fig3_row(ds, sources, si, tgt, transfer, alt))
    return rows


def fig3_row(ds: Dataset, sources: Sequence[Section], si: int, target: Section,
             transfer: np.ndarray, alt: np.ndarray) -> dict[str, Any]:
    """One row of Fig. 3: ``target`` ``transfer``-red from source ``si``, and ``alt``, the
    same from the next source (from the target's own style when there is one source only)."""
    src, other = sources[si], sources[(si + 1) % len(sources)]
    alt_name = (f"from {other.name} − from {src.name}" if other is not src
                else "reconstruction − transfer")
    return {"target": ds.image(target), "transfer": transfer, "target_labels": ds.label(target),
            "source": ds.image(src), "source_labels": ds.label(src),
            "names": [target.name, f"from {src.name}", target.name, src.name, src.name],
            "difference": alt - transfer, "difference_name": alt_name}

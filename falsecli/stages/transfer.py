"""Stage 4: class-specific style transfer from the most-forgotten sections (paper §2.2, Fig. 3).

1. Train the SEAN-style model (:mod:`falsecli.method.sean`) on random ``transfer.crop`` crops of the
   training sections (the crop is clipped to the smallest training section), or reuse
   ``transfer/generator.pt`` when it was trained with the same data and training keys. Training
   checkpoints every ``transfer.checkpoint_every`` steps; an interrupted ``transfer`` continues
   from the checkpoint, ``--force`` starts over.
2. For each of the top ``transfer.sources`` sections of ``rank/ranking.csv`` for the class,
   generate ``transfer.per_source`` samples: a random training section is the target; its own
   style codes are kept except the class's, which is the source's; the image is generated on
   the target's label map, and the target's labels are the sample's labels.

Targets are the training sections that contain the class, of the most common shape among them
(F3: the crosslines), so that ``samples.npz`` holds full sections of one shape (N, H, W) that
retraining adds to its pool like any other section. Images are in ``ds.image`` units.

Quality figures (``metrics.json``): the reconstruction error on held-out (validation) sections,
and the class-local change ratio: mean |transfer - reconstruction| inside the class over the
same outside it, per sample (same target, same noise), averaged over the samples.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import pickle
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from falsecli.core import console
from falsecli.method import figures
from falsecli.core.config import Config, class_id
from falsecli.data.dataset import Dataset, Section, load_dataset
from falsecli.core.errors import FalseCliError
from falsecli.core.runtime import resolve_device, seed_everything
from falsecli.method.sean import LOSS_NAMES, N_UP, LossWeights, Sean, SeanConfig, optimizers, train_step
from falsecli.core.workdir import LOCK, Stage, StageRun, save_npz, save_with, stage_run, write_json

GENERATOR = "generator.pt"
CHECKPOINT = "checkpoint.pt"
#: transfer keys that change the trained generator (the others only change the sampling)
TRAIN_KEYS = ("iterations", "crop", "batch_size", "lr", "style_dim", "channels", "seed",
              "l1_weight", "fm_weight")


#: transfer keys that must be positive integers
POSITIVE = ("sources", "per_source", "iterations", "batch_size", "style_dim", "channels",
            "checkpoint_every", "log_every", "eval_sections")


def check_options(t: dict[str, Any]) -> None:
    """Fail before any work on values that cannot run."""
    for key in POSITIVE:
        if t[key] < 1:
            raise FalseCliError(f"config key 'transfer.{key}' is {t[key]}; it must be >= 1")
    crop = t["crop"]
    if len(crop) != 2 or min(crop) < 1:
        raise FalseCliError(f"config key 'transfer.crop' is {crop}; it must be [depth, width], "
                            "both >= 1, e.g. [128, 128]")
    if t["lr"] <= 0:
        raise FalseCliError(f"config key 'transfer.lr' is {t['lr']}; it must be > 0")


def generator_config(cfg: Config) -> dict[str, Any]:
    """What a stored generator must have been trained with to be reused."""
    return {"data": cfg["data"], "transfer": {k: cfg["transfer"][k] for k in TRAIN_KEYS}}


# ---------------------------------------------------------------- inputs


def read_sources(ranking_csv: Path, class_name: str, count: int) -> list[str]:
    """The top ``count`` section names of the class in ``rank/ranking.csv``, in rank order."""
    try:
        with open(ranking_csv, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("class") == class_name]
    except OSError as exc:
        raise FalseCliError(f"transfer: cannot read {ranking_csv} ({exc.strerror}) — run "
                            "'falsecli rank --force' to rewrite it") from None
    if not rows:
        raise FalseCliError(
            f"transfer: {ranking_csv} ranks no section for class '{class_name}' — run "
            f"'falsecli rank --class {class_name} --force -w {ranking_csv.parents[1]}' first")
    rows.sort(key=lambda r: int(r["rank"]))
    return [r["section"] for r in rows[:count]]


def resolve_sections(ds: Dataset, names: Sequence[str]) -> list[Section]:
    """Sections by name, from any split: val, train or a test volume's tracked sections."""
    splits = ["val", "train", *(v.name for v in ds.tests)]
    known = {s.name: s for split in splits for s in ds.sections(split)}
    missing = [n for n in names if n not in known]
    if missing:
        raise FalseCliError(f"transfer: ranked section '{missing[0]}' is not a section of the "
                            "configured data — rank again with the same data "
                            "('falsecli rank --force')")
    return [known[n] for n in names]


def _by_shape(sections: Sequence[Section]) -> list[list[Section]]:
    """Sections grouped by shape (first-seen order), so that each group stacks."""
    groups: dict[tuple[int, int], list[Section]] = {}
    for s in sections:
        groups.setdefault(s.shape, []).append(s)
    return list(groups.values())


@dataclasses.dataclass
class Pool:
    """Training sections grouped by shape, images and labels resident on the device."""

    sections: list[list[Section]]
    images: list[torch.Tensor]  # per group (n, H, W) float32
    labels: list[torch.Tensor]  # per group (n, H, W) uint8

    @classmethod
    def load(cls, ds: Dataset, sections: Sequence[Section], device: torch.device) -> Pool:
        pool = cls([], [], [])
        for group in _by_shape(sections):
            images, labels = ds.stack(group)
            pool.sections.append(group)
            pool.images.append(torch.from_numpy(images).to(device))
            pool.labels.append(torch.from_numpy(labels).to(device))
        return pool

    def targets(self, k: int, class_name: str) -> list[Section]:
        """Sections containing class ``k``, of the most common shape among them (ties: the
        larger shape): the transfer targets, all of one shape."""
        having = [[s for s, has in zip(group, (labels == k).flatten(1).any(1).tolist()) if has]
                  for group, labels in zip(self.sections, self.labels)]
        best = max(having, key=lambda g: (len(g), g[0].shape[0] * g[0].shape[1] if g else 0),
                   default=[])
        if not best:
            raise FalseCliError(f"transfer: no training section contains class '{class_name}', "
                                "so there is nothing to transfer its style into — choose "
                                "another class with --class")
        return best

    def crop_size(self, crop: Sequence[int]) -> tuple[int, int]:
        """``crop`` clipped to the smallest section, so every section can give a crop."""
        return (min([crop[0], *(img.shape[1] for img in self.images)]),
                min([crop[1], *(img.shape[2] for img in self.images)]))

    def sample(self, rng: np.random.Generator, crop: tuple[int, int], batch: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` random crops from one shape group (chosen in proportion to its size).

        Offsets are drawn on the host, so cropping is plain slicing: no device sync.
        """
        sizes = np.array([len(s) for s in self.sections], dtype=np.float64)
        g = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
        images, labels = self.images[g], self.labels[g]
        n, height, width = images.shape
        h, w = crop
        picks = zip(rng.integers(0, n, batch), rng.integers(0, height - h + 1, batch),
                    rng.integers(0, width - w + 1, batch))
        slices = [(int(i), slice(int(z), int(z) + h), slice(int(x), int(x) + w))
                  for i, z, x in picks]
        return (torch.stack([images[s] for s in slices]),
                torch.stack([labels[s] for s in slices]))


# ---------------------------------------------------------------- training


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
        # a truncated or foreign file: say so, then train afresh
        console.log(f"transfer: ignoring unreadable {path.name} ({exc})")
        return None


def _new_model(cfg: Config) -> Sean:
    t, d = cfg["transfer"], cfg["data"]
    return Sean(SeanConfig(len(d["classes"]), t["style_dim"], t["channels"], d["ignore_index"]))


def _step_rng(seed: int, step: int) -> np.random.Generator:
    """The crops of step ``step``: a pure function of (seed, step), so resuming repeats them."""
    return np.random.default_rng([seed, step])


def train_model(cfg: Config, pool: Pool, run: StageRun, device: torch.device, amp: bool
                ) -> tuple[Sean, dict[str, Any]]:
    """The trained model and a summary of its training: reused from ``generator.pt`` when the
    generator config matches, else trained (resuming from ``checkpoint.pt`` when it matches)."""
    t = cfg["transfer"]
    want = generator_config(cfg)
    stored = _load(run.path / GENERATOR)
    if stored is not None and stored["config"] == want:
        model = _new_model(cfg)
        model.encoder.load_state_dict(stored["encoder"])
        model.generator.load_state_dict(stored["generator"])
        console.log(f"transfer: reusing {run.path / GENERATOR} (same training config)")
        run.out(GENERATOR)
        return model.to(device), {**stored["training"], "generator": "reused"}

    history: list[dict[str, float]] = []
    start, seconds = 0, 0.0
    acc = torch.zeros(len(LOSS_NAMES))  # loss sums since the last read-out
    since = 0
    ckpt = _load(run.path / CHECKPOINT)
    resume = ckpt is not None and ckpt["config"] == want
    if ckpt is not None and not resume:
        console.log(f"transfer: {CHECKPOINT} was trained with another config; starting over")
    if not resume:
        seed_everything(t["seed"])  # the initialisation depends on the seed only
    model = _new_model(cfg)
    opt_g, opt_d = optimizers(model, t["lr"])
    if resume:
        model.load_state_dict(ckpt["model"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        start, history, seconds = ckpt["step"], ckpt["history"], ckpt["seconds"]
        acc, since = ckpt["acc"], ckpt["since"]
        _set_rng(ckpt["rng"], device)
        console.log(f"transfer: resuming generator training at step {start}")
    model.to(device).train()
    _optimizer_to(opt_g, device)
    _optimizer_to(opt_d, device)

    crop = pool.crop_size(t["crop"])
    coarse = t["batch_size"] * -(-crop[0] // 2 ** N_UP) * -(-crop[1] // 2 ** N_UP)
    if coarse < 2:  # batch norm needs two values per channel at the coarsest scale
        raise FalseCliError(f"transfer: crop {list(crop)} x batch {t['batch_size']} is too small "
                            f"to train on; use transfer.batch_size >= 2 or a crop larger than "
                            f"{2 ** N_UP}")
    weights = LossWeights(l1=t["l1_weight"], fm=t["fm_weight"])
    total, every = t["iterations"], t["log_every"]
    acc = acc.to(device)
    t0 = time.perf_counter()

    def save_checkpoint(step: int) -> None:
        state = {"config": want, "step": step, "model": model.state_dict(),
                 "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "history": history,
                 "seconds": seconds + time.perf_counter() - t0, "rng": _get_rng(device),
                 "acc": acc.cpu(), "since": since}
        save_with(run.path / CHECKPOINT, lambda tmp: torch.save(state, tmp))

    with console.progress() as bar:
        task = bar.add_task("transfer: GAN", total=total, completed=start, info="")
        for step in range(start, total):
            image, labels = pool.sample(_step_rng(t["seed"], step), crop, t["batch_size"])
            acc += train_step(model, opt_g, opt_d, image, labels, weights, amp=amp)
            since += 1
            done = step + 1
            if done % every == 0 or done == total:
                losses = dict(zip(LOSS_NAMES, (acc / since).tolist()))  # the only host sync
                history.append({"step": done, **{k: round(v, 5) for k, v in losses.items()}})
                acc.zero_()
                since = 0
                bar.update(task, info="  ".join(f"{k} {v:.3f}" for k, v in losses.items()))
            bar.update(task, advance=1)
            if done % t["checkpoint_every"] == 0 and done < total:
                save_checkpoint(done)

    training = {"iterations": total, "crop": list(crop), "history": history,
                "final_losses": {k: history[-1][k] for k in LOSS_NAMES} if history else {},
                "seconds": round(seconds + time.perf_counter() - t0, 2)}
    state = {"config": want, "sean": dataclasses.asdict(model.cfg), "classes": cfg["data"]["classes"],
             "encoder": model.encoder.state_dict(), "generator": model.generator.state_dict(),
             "training": training}
    save_with(run.out(GENERATOR), lambda tmp: torch.save(state, tmp))
    (run.path / CHECKPOINT).unlink(missing_ok=True)
    how = "resumed" if start else "trained"
    return model, {**training, "generator": how}


def _get_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's random state (noise, code dropout), so a resumed run continues the same draws."""
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _set_rng(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


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
        for group in _by_shape(sections[i:i + batch]):
            images, labels = ds.stack(group)
            recon = tr.generate(labels, tr.codes(images, labels), noise_seed=i)
            err += float(np.abs(recon - images).sum(dtype=np.float64))
            base += float(np.abs(images).sum(dtype=np.float64))
            pixels += images.size
    return {"reconstruction_error": err / pixels, "reconstruction_baseline": base / pixels,
            "reconstruction_sections": [s.name for s in sections]}


@dataclasses.dataclass
class Samples:
    """Generated samples, and per sample the mean |transfer - reconstruction| inside and
    outside the class."""

    images: list[np.ndarray] = dataclasses.field(default_factory=list)
    labels: list[np.ndarray] = dataclasses.field(default_factory=list)
    source: list[str] = dataclasses.field(default_factory=list)
    target: list[str] = dataclasses.field(default_factory=list)
    inside: list[float] = dataclasses.field(default_factory=list)
    outside: list[float] = dataclasses.field(default_factory=list)


def generate_samples(tr: Transferer, ds: Dataset, k: int, sources: Sequence[Section],
                     targets: Sequence[Section], per_source: int, batch: int, seed: int
                     ) -> tuple[Samples, list[torch.Tensor], list[Section]]:
    """``per_source`` transfers per source into random targets (without replacement while the
    pool lasts). Returns the samples, each source's class code and each source's first target.
    """
    rng = np.random.default_rng([seed, 1])
    out = Samples()
    source_codes, first_targets = [], []
    with console.progress() as bar:
        task = bar.add_task("transfer: generating", total=len(sources) * per_source, info="")
        for si, src in enumerate(sources):
            src_img, src_lab = ds.image(src), ds.label(src)
            code = tr.codes(src_img[None], src_lab[None])[0, k]
            source_codes.append(code)
            chosen = [targets[int(i)] for i in pick_targets(rng, len(targets), per_source)]
            first_targets.append(chosen[0])
            for b in range(0, per_source, batch):
                group = chosen[b:b + batch]
                images, labels = ds.stack(group)
                codes = tr.codes(images, labels)
                noise_seed = seed * 1_000_003 + si * 10_007 + b
                recon = tr.generate(labels, codes, noise_seed)
                codes[:, k] = code
                trans = tr.generate(labels, codes, noise_seed)
                change = np.abs(trans - recon)
                inside = labels == k
                for j, tgt in enumerate(group):
                    out.images.append(trans[j])
                    out.labels.append(labels[j])
                    out.source.append(src.name)
                    out.target.append(tgt.name)
                    out.inside.append(_mean(change[j][inside[j]]))
                    out.outside.append(_mean(change[j][~inside[j]]))
                bar.update(task, advance=len(group), info=src.name)
    return out, source_codes, first_targets


def pick_targets(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` random indices into ``n`` targets, without replacement while they last: each
    target is used once before any is used twice (F3 has far more targets than 64 per source,
    a small survey fewer)."""
    rounds = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(rounds)])[:count]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def change_metrics(s: Samples) -> dict[str, Any]:
    """The class-local change ratio, per sample then averaged (and its parts)."""
    inside, outside = np.array(s.inside), np.array(s.outside)
    ratio = inside / np.maximum(outside, 1e-12)
    per_source = {}
    for name in dict.fromkeys(s.source):
        sel = np.array(s.source) == name
        per_source[name] = float(ratio[sel].mean())
    return {"class_local_change_ratio": float(ratio.mean()),
            "change_inside": float(inside.mean()), "change_outside": float(outside.mean()),
            "class_local_change_ratio_per_source": per_source}


# ---------------------------------------------------------------- figures


def fig3(rows: Sequence[dict[str, Any]], classes: Sequence[str], ignore_index: int,
         class_name: str) -> Figure:
    """Paper Fig. 3, one row per style source: target | transfer | target annotation |
    style source | its annotation | difference of two transfers of the same target."""
    n = len(classes)
    cmap = figures.label_cmap(n)
    fig = Figure(figsize=(16, 2.6 * len(rows) + 0.6), dpi=figures.DPI, layout="constrained")
    axes = fig.subplots(len(rows), 6, squeeze=False)
    titles = ["target", "transfer", "target annotation", "style source", "source annotation"]
    for r, row in enumerate(rows):
        lo, hi = figures.seismic_limits(row["target"])
        panels = [(row["target"], "seis"), (row["transfer"], "seis"),
                  (row["target_labels"], "lab"), (row["source"], "seis"),
                  (row["source_labels"], "lab")]
        for c, (values, kind) in enumerate(panels):
            ax = axes[r, c]
            if kind == "seis":
                ax.imshow(values, cmap="gray", vmin=lo, vmax=hi, aspect="auto",
                          interpolation="nearest")
            else:
                ax.imshow(figures.mask_ignored(values, values, ignore_index), cmap=cmap,
                          vmin=-0.5, vmax=n - 0.5, aspect="auto", interpolation="nearest")
            ax.set_title(f"{titles[c]}\n{row['names'][c]}", fontsize=8)
        diff = row["difference"]
        lim = float(np.percentile(np.abs(diff), 99.5)) or 1.0
        im = axes[r, 5].imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                               interpolation="nearest")
        axes[r, 5].set_title(f"difference\n{row['difference_name']}", fontsize=8)
        fig.colorbar(im, ax=axes[r, 5], shrink=0.8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"class-specific style transfer of '{class_name}'")
    return fig


def loss_figure(history: Sequence[dict[str, float]]) -> Figure:
    """The GAN's losses over training (read out every ``transfer.log_every`` steps)."""
    fig = Figure(figsize=(8, 3), dpi=figures.DPI, layout="constrained")
    axes = fig.subplots(1, len(LOSS_NAMES))
    steps = [h["step"] for h in history]
    for ax, name in zip(axes, LOSS_NAMES):
        ax.plot(steps, [h[name] for h in history])
        ax.set_title(name)
        ax.set_xlabel("step")
    return fig


def figure_rows(tr: Transferer, ds: Dataset, k: int, sources: Sequence[Section],
                source_codes: Sequence[torch.Tensor], first_targets: Sequence[Section],
                seed: int) -> list[dict[str, Any]]:
    """Fig. 3 rows: each source's first target, transferred from that source and from the next
    one (from its own style, i.e. reconstructed, when there is one source only), with the same
    noise, so that their difference shows only what the style code changes."""
    rows = []
    for si, (src, tgt) in enumerate(zip(sources, first_targets)):
        image, labels = ds.image(tgt), ds.label(tgt)
        codes = tr.codes(image[None], labels[None])
        other = (si + 1) % len(sources)
        alt_codes = codes.clone()
        if other != si:
            alt_codes[:, k] = source_codes[other]
        codes[:, k] = source_codes[si]
        transfer = tr.generate(labels[None], codes, seed + si)[0]
        alt = tr.generate(labels[None], alt_codes, seed + si)[0]
        alt_name = (f"from {sources[other].name} − from {src.name}" if other != si
                    else "reconstruction − transfer")
        rows.append({"target": image, "transfer": transfer, "target_labels": labels,
                     "source": ds.image(src), "source_labels": ds.label(src),
                     "names": [tgt.name, f"from {src.name}", tgt.name, src.name, src.name],
                     "difference": alt - transfer, "difference_name": alt_name})
    return rows


# ---------------------------------------------------------------- the stage


def _clear_results(path: Path) -> None:
    """Remove an interrupted run's results but keep what resuming needs."""
    for child in path.iterdir():
        if child.name in (LOCK, GENERATOR, CHECKPOINT):
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _held_out(ds: Dataset, count: int) -> list[Section]:
    """``count`` validation sections, evenly spaced over inlines then crosslines."""
    val = ds.sections("val")
    picks = np.unique(np.linspace(0, len(val) - 1, min(len(val), count)).round().astype(int))
    return [val[i] for i in picks]


def _write_figures(run: StageRun, rows: list[dict[str, Any]], sources: Sequence[Section],
                   ds: Dataset, class_name: str, history: list[dict[str, float]]) -> None:
    """Fig. 3 for all sources together and for each alone, and the loss curves."""
    draw = functools.partial(fig3, classes=ds.classes, ignore_index=ds.ignore_index,
                             class_name=class_name)
    figures.save_figure(draw(rows), run.out("figures/fig3.png"))
    for row, src in zip(rows, sources):
        figures.save_figure(draw([row]), run.out(f"figures/fig3_{src.name}.png"))
    if history:
        figures.save_figure(loss_figure(history), run.out("figures/losses.png"))


def transfer(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Stage 4 (see the module docstring). Returns the stage summary."""
    workdir = Path(workdir)
    t, d = cfg["transfer"], cfg["data"]
    check_options(t)
    k = class_id(cfg, t["class"])
    class_name = d["classes"][k]
    device = resolve_device(cfg["train"]["device"])
    rank = Stage(workdir, "rank")
    with stage_run(workdir, "transfer", cfg, upstream=[rank], force=force, keep=not force,
                   seed=t["seed"], device=str(device)) as run:
        _clear_results(run.path)
        names = read_sources(rank.path / "ranking.csv", class_name, t["sources"])
        ds = load_dataset(cfg)
        sources = resolve_sections(ds, names)
        if len(sources) < t["sources"]:
            console.log(f"transfer: only {len(sources)} section(s) ranked for '{class_name}'; "
                        f"using them all (transfer.sources is {t['sources']})")
        pool = Pool.load(ds, ds.sections("train"), device)
        targets = pool.targets(k, class_name)
        amp = device.type == "cuda" and cfg["train"]["amp"]  # bf16 autocast, CUDA only
        model, training = train_model(cfg, pool, run, device, amp)
        del pool
        tr = Transferer(model, device, amp)

        console.log(f"transfer: '{class_name}' from {len(sources)} source(s) into "
                    f"{len(targets)} candidate target(s) of shape {list(targets[0].shape)}")
        samples, codes, firsts = generate_samples(tr, ds, k, sources, targets, t["per_source"],
                                                  t["batch_size"], t["seed"])
        save_npz(run.out("samples.npz"), images=np.stack(samples.images).astype(np.float32),
                 labels=np.stack(samples.labels).astype(np.uint8),
                 source=np.array(samples.source), target=np.array(samples.target))
        metrics = {"class": class_name, "class_id": k, "samples": len(samples.source),
                   "shape": list(samples.images[0].shape), "sources": names,
                   **reconstruction_error(tr, ds, _held_out(ds, t["eval_sections"]),
                                          t["batch_size"]),
                   **change_metrics(samples), "training": training}
        write_json(run.out("metrics.json"), metrics)
        _write_figures(run, figure_rows(tr, ds, k, sources, codes, firsts, t["seed"]), sources,
                       ds, class_name, training["history"])

    lines = [
        (f"transfer: {metrics['samples']} samples of '{class_name}' "
         f"{metrics['shape'][0]}x{metrics['shape'][1]}, generator {training['generator']}"),
        (f"reconstruction error {metrics['reconstruction_error']:.3f} "
         f"(predicting the mean: {metrics['reconstruction_baseline']:.3f}), "
         f"class-local change ratio {metrics['class_local_change_ratio']:.2f}"),
    ]
    return {"stage": "transfer", "class": class_name, "samples": metrics["samples"],
            "reconstruction_error": metrics["reconstruction_error"],
            "class_local_change_ratio": metrics["class_local_change_ratio"],
            "generator": training["generator"], "lines": lines,
            "outputs": [str(run.path / p) for p in run.outputs]}

"""The SEAN generator at the study scale (issue 24, item 3): how far it reconstructs held-out
sections and moves the class's style, against training steps, width and the perceptual loss.

    nice python benchmarks/generator.py WORKDIR [--only w16,w16-perc] [--steps 150,300,600]

WORKDIR gets ``train``, ``heatmap`` and ``rank`` of the study profile
(:data:`falsecli.stages.pipeline.STUDY`) unless it has them already (a study's workdir can be
reused). Each setting then fits one generator for the largest step count and is evaluated at
the others on the way (checkpoints of the same run, the training RNG untouched): the held-out
reconstruction error (:func:`style.reconstruction_error` on ``transfer.eval_sections``
validation sections; predicting zero errs by the baseline) and ``style_moved`` of the swap
and of its identity control over the study's samples (``transfer.sources`` x
``per_source``), each as the mean of the per-source means with a 95 % t interval over the
sources, and C5a's paired difference. Prints one Markdown row per (setting, step) and writes
the rows to ``WORKDIR/generator.json``. Training seconds exclude the evaluations.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

#: setting name -> transfer keys on top of the study profile
SETTINGS: dict[str, dict[str, Any]] = {
    "w16": {"channels": 16, "perceptual_weight": 0.0},
    "w16-perc": {"channels": 16, "perceptual_weight": 10.0},
    "w32": {"channels": 32, "perceptual_weight": 0.0},
    "w32-perc": {"channels": 32, "perceptual_weight": 10.0},
    "w16-perc-lr1e-3": {"channels": 16, "perceptual_weight": 10.0, "lr": 0.001},
}
DEFAULT_ONLY = "w16,w16-perc,w32,w32-perc"


def prepare(work: Path) -> dict[str, Any]:
    """The study config, and train / heatmap / rank in ``work`` (skipped when complete)."""
    from falsecli.core.manifest import Stage
    from falsecli.stages import heatmap, rank, train
    from falsecli.stages.pipeline import demo_config

    cfg = demo_config("study")
    cfg["train"]["device"] = "cpu"
    cfg["heatmap"]["run"] = "train"
    for step in (train.STEP, heatmap.STEP, rank.STEP):
        for name, step_cfg in step.folders(cfg, work).items():
            if not Stage(work, name).is_complete():
                t0 = time.perf_counter()
                step.run(step_cfg, work)
                print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return cfg


def _interval(values: list[float]) -> tuple[float, float, float]:
    from falsecli.method.statistics import interval

    return interval(values)


class Evaluator:
    """Reconstruction and style_moved of a model, on the study's held-out sections and
    samples."""

    def __init__(self, cfg: dict[str, Any], work: Path) -> None:
        from falsecli.core.config import class_id
        from falsecli.data.dataset import load_dataset
        from falsecli.method.pool import Pool
        from falsecli.method.transfermethod import held_out
        from falsecli.stages.rank import load_ranking
        from falsecli.stages.transfer import resolve_sections

        t = cfg["transfer"]
        self.t, self.k = t, class_id(cfg, t["class"])
        name = cfg["data"]["classes"][self.k]
        self.ds = load_dataset(cfg)
        self.pool = Pool.load(self.ds, self.ds.sections("train"), torch.device("cpu"))
        self.targets = self.pool.targets(self.k, name)
        self.sources = resolve_sections(
            self.ds, [r["section"] for r in load_ranking(work, name)[:t["sources"]]])
        self.held_out = held_out(self.ds, t["eval_sections"])

    def __call__(self, model: Any) -> dict[str, Any]:
        from falsecli.method import claims, style

        tr = style.Transferer(model, torch.device("cpu"), amp=False)
        t = self.t
        recon = style.reconstruction_error(tr, self.ds, self.held_out, t["batch_size"])
        swap, ident, _, _ = style.generate_samples(tr, self.ds, self.k, self.sources,
                                                   self.targets, t["per_source"],
                                                   t["batch_size"], t["seed"])
        model.train()
        row = {"error": recon["reconstruction_error"],
               "baseline": recon["reconstruction_baseline"]}
        for key, s in (("swap", swap), ("identity", ident)):
            row[key] = _interval(claims.cluster_means(s.style_moved, s.source))
        c5a = claims.c5a_style(swap.style_moved, ident.style_moved, swap.source)
        row["c5a"] = (c5a.numbers["difference"], c5a.numbers["low"], c5a.numbers["high"])
        return row


def fit_setting(cfg: dict[str, Any], work: Path, name: str, steps: list[int],
                evaluate: Evaluator) -> list[dict[str, Any]]:
    """One generator of setting ``name``, evaluated after each of ``steps``."""
    from falsecli.core.runtime import seed_everything
    from falsecli.method import perceptual, style
    from falsecli.method.sean import LossWeights, Sean, SeanConfig

    t = {**cfg["transfer"], **SETTINGS[name]}
    d = cfg["data"]
    seed_everything(t["seed"])
    model = Sean(SeanConfig(len(d["classes"]), t["style_dim"], t["channels"], d["ignore_index"]))
    features = (perceptual.from_run(work / "train", torch.device("cpu"))
                if t["perceptual_weight"] > 0 else None)
    every = math.gcd(*steps)
    opts = style.FitOptions(
        iterations=max(steps), crop=tuple(t["crop"]), batch_size=t["batch_size"], lr=t["lr"],
        seed=t["seed"], log_every=every, checkpoint_every=every,
        weights=LossWeights(l1=t["l1_weight"], fm=t["fm_weight"],
                            perceptual=t["perceptual_weight"]))
    rows: list[dict[str, Any]] = []
    clock = {"start": time.perf_counter(), "eval": 0.0}

    def at(step: int) -> None:
        t0 = time.perf_counter()
        row = {"setting": name, "step": step, **evaluate(model),
               "train_s": t0 - clock["start"] - clock["eval"]}
        clock["eval"] += time.perf_counter() - t0
        row["eval_s"] = time.perf_counter() - t0
        rows.append(row)
        print(markdown(row), flush=True)

    style.fit(model, evaluate.pool, opts, torch.device("cpu"), features=features,
              save=lambda state: at(state["step"]) if state["step"] in steps else None)
    at(max(steps))
    return rows


def _fmt(mean_low_high: tuple[float, float, float]) -> str:
    mean, low, high = mean_low_high
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def markdown(row: dict[str, Any]) -> str:
    return (f"| {row['setting']} | {row['step']} | {row['error']:.3f} | {_fmt(row['swap'])} | "
            f"{_fmt(row['identity'])} | {_fmt(row['c5a'])} | {row['train_s']:.0f} |")


HEADER = ("| setting | steps | held-out error | swap style_moved | identity style_moved | "
          "swap − identity (C5a) | training s |\n|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--only", default=DEFAULT_ONLY, help="comma-separated SETTINGS")
    parser.add_argument("--steps", default="150,300,600", help="evaluation steps")
    args = parser.parse_args()
    torch.set_num_threads(1)  # shared cores: see benchmarks/README.md
    names = args.only.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        sys.exit(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    steps = sorted(int(s) for s in args.steps.split(","))
    cfg = prepare(args.workdir)
    evaluate = Evaluator(cfg, args.workdir)
    print(HEADER, flush=True)
    rows = [row for name in names for row in fit_setting(cfg, args.workdir, name, steps,
                                                          evaluate)]
    out = args.workdir / "generator.json"
    old = json.loads(out.read_text()) if out.is_file() else []
    kept = [r for r in old if r["setting"] not in names]
    out.write_text(json.dumps(kept + rows, indent=1))
    print(f"baseline (predicting zero): {rows[0]['baseline']:.3f}; rows in {out}")


if __name__ == "__main__":
    main()

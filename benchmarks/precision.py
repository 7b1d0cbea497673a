"""Does bf16 autocast change a conclusion? The study profile's training runs twice, in bf16
(``train.amp``, on a CPU with AVX-512 BF16 or AMX) and in fp32, paired by method and seed.

    python benchmarks/precision.py WORKROOT [--jobs N] [--augs none,flip,rotate]

Trains ``train/`` and retrains ``--augs`` over the study's 4 seeds with the study profile
into ``WORKROOT/bf16`` and ``WORKROOT/fp32`` (complete runs are skipped, interrupted ones
continue), then prints, per method, fp32 − bf16 of the accuracies and the forgetting
statistics with paired 95 % t intervals over the seeds, and each precision's wall time;
writes the table to ``WORKROOT/precision.md`` and the numbers to ``WORKROOT/precision.json``.
The transfer methods are left out by default: their generated samples would differ between
the precisions too, which tests the generator, not the comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from falsecli.core.config import class_id
from falsecli.core.manifest import Stage
from falsecli.method.comparison import collect_runs
from falsecli.method.statistics import difference, forgetting_stats
from falsecli.stages.pipeline import STUDY, demo_config

#: the study's settings per precision
PRECISIONS = {"bf16": [], "fp32": ["train.amp=false"]}
#: accuracies compared, as (split, metric); test1 is the study's test volume
ACCURACY = [("val", "pixel_acc"), ("val", "miou"), ("test1", "pixel_acc"), ("test1", "miou")]
#: forgetting statistics compared (benchmarks/../method/statistics.py names)
FORGETTING = ["forgetting_events", "never_learned", "target_density", "boundary_density",
              "interior_density"]


def study(work: Path, sets: list[str], augs: list[str], jobs: str) -> float:
    """The study profile's ``train`` and ``retrain`` of ``augs`` into ``work``; seconds."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work.parent / "study.yaml"
    cfg.write_text(yaml.safe_dump(demo_config("study")))
    options = ["-c", str(cfg), "-w", str(work), "--quiet",
               *[a for s in sets for a in ("--set", s)]]
    seeds = ",".join(map(str, STUDY["retrain"]["seeds"]))
    t0 = time.perf_counter()
    commands = [["retrain", *[a for m in augs for a in ("--aug", m)], "--seeds", seeds,
                 "--jobs", jobs, "--resume"]]
    if not Stage(work, "train").is_complete():
        commands.insert(0, ["train", "--resume"])
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "falsecli", *command, *options])
        if done.returncode != 0:
            sys.exit(f"falsecli {command[0]} in {work} failed")
    return time.perf_counter() - t0


def values(work: Path) -> dict[str, dict[int, dict[str, float]]]:
    """Per method and seed: the compared accuracies and forgetting statistics."""
    cfg = demo_config("study")
    target = class_id(cfg, cfg["rank"]["class"])
    out: dict[str, dict[int, dict[str, float]]] = {}
    for run in collect_runs(work):
        ev = run.eval()
        row = {f"{split} {metric}": float(ev[split][metric]) for split, metric in ACCURACY}
        stats, _ = forgetting_stats(run.stage.path, target, run.epochs, 2, 10)
        row.update({name: float(stats[name]) for name in FORGETTING})
        out.setdefault(run.method, {})[run.seed] = row
    return out


def compare(root: Path) -> list[dict[str, object]]:
    """fp32 − bf16 per method and quantity, paired by seed."""
    runs = {p: values(root / p) for p in PRECISIONS}
    rows = []
    for method, seeds in sorted(runs["fp32"].items()):
        other = runs["bf16"].get(method, {})
        for quantity in next(iter(seeds.values())):
            d = difference({s: v[quantity] for s, v in seeds.items()},
                           {s: v[quantity] for s, v in other.items()})
            rows.append({"method": method, "quantity": quantity, "fp32_minus_bf16": d.mean,
                         "low": d.low, "high": d.high, "n": d.n,
                         "includes_0": bool(d.low <= 0 <= d.high)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--jobs", default="auto")
    parser.add_argument("--augs", default="none,flip,rotate")
    args = parser.parse_args()
    seconds = {p: study(args.root / p, sets, args.augs.split(","), args.jobs)
               for p, sets in PRECISIONS.items()}
    rows = compare(args.root)
    lines = ["| method | quantity | fp32 − bf16 | 95 % interval | n | includes 0 |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['quantity']} | {r['fp32_minus_bf16']:+.4f} | "
              f"[{r['low']:+.4f}, {r['high']:+.4f}] | {r['n']} | "
              f"{'yes' if r['includes_0'] else '**no**'} |" for r in rows]
    held = sum(r["includes_0"] for r in rows)
    lines.append(f"\n{held} of {len(rows)} intervals include 0; wall time "
                 + ", ".join(f"{p} {s / 60:.1f} min" for p, s in seconds.items()))
    text = "\n".join(lines)
    print(text)
    (args.root / "precision.md").write_text(text + "\n")
    (args.root / "precision.json").write_text(json.dumps({"rows": rows, "seconds": seconds},
                                                         indent=2))


if __name__ == "__main__":
    main()

"""The report-trust study: the paper's claims (C1–C5) on the `study` profile, then variants of
the transfer that could explain a failing C3, then the strict holdout.

    python benchmarks/study.py WORKROOT [--only base,iterations,...]

``base`` runs ``falsecli demo --profile study`` (baseline, flip, rotate, transfer and the
transfer-identity control over 4 seeds). Each transfer variant copies ``base`` without its
transfer results and redoes only ``transfer``, the ``transfer`` retraining (and the
``transfer-identity`` control for ``composite`` and ``statistics``) and the report, so every
variant shares the baseline, flip and rotate runs.
``strict`` is the whole study again with ``data.holdout: strict``. A variant whose report is
complete is not redone. Prints each variant's claims table (Markdown) and wall time, and
writes the tables of every finished variant to ``WORKROOT/study.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from falsecli.core.files import read_json
from falsecli.core.manifest import Stage
from falsecli.stages.report import read_claims
from falsecli.stages.transfer import METRICS

#: transfer variants: name -> --set options on top of the study profile
VARIANTS: dict[str, list[str]] = {
    "composite": ["transfer.composite=true"],
    "iterations": ["transfer.iterations=1200"],
    "samples": ["transfer.per_source=32"],
    "statistics": ["transfer.method=statistics"],
}
#: the retraining methods each variant redoes: the identity control for the composite and the
#: statistics transfer (a 2-core machine's time), the others are judged against baseline, flip
#: and rotate
REDO_METHODS = {"composite": ("transfer", "transfer-identity"),
                "statistics": ("transfer", "transfer-identity")}
#: what a transfer variant redoes (the rest is copied from base)
REDONE = ("transfer", "retrain/transfer", "retrain/transfer-identity", "report")


def falsecli(*args: str) -> dict:
    """Run one falsecli command, its summary parsed from --json."""
    done = subprocess.run([sys.executable, "-m", "falsecli", *args, "--json", "--quiet"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"falsecli {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def base(work: Path, sets: list[str]) -> dict:
    """The study profile's workflow; every method named, in case the workdir remembers
    settings from a partial run."""
    from falsecli.stages.pipeline import STUDY

    augs = f"retrain.augs=[{','.join(STUDY['retrain']['augs'])}]"
    return falsecli("demo", "--profile", "study", "-w", str(work),
                    *[a for s in [augs, *sets] for a in ("--set", s)])


def variant(source: Path, work: Path, sets: list[str], methods: tuple[str, ...]) -> dict:
    """Copy the base study without its transfer results, then redo transfer and the
    ``methods`` retraining runs, and the report."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source, work, ignore=shutil.ignore_patterns(".falsecli"))
    for rel in REDONE:
        shutil.rmtree(work / rel, ignore_errors=True)
    options = [a for s in sets for a in ("--set", s)]
    w = ["-w", str(work)]
    falsecli("transfer", *w, *options)
    falsecli("retrain", *w, *[a for m in methods for a in ("--aug", m)], *options)
    return falsecli("report", *w)


def table(name: str, work: Path, seconds: float | None) -> str:
    """The claims table of a finished variant, from its report."""
    claims = read_claims(work)
    left = (Stage(work, "report").manifest() or {}).get("left_out", [])
    took = "" if seconds is None else f" ({seconds / 60:.1f} min)"
    lines = [f"### {name}{took}", "", "| claim | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c['claim']} {c['statement']} | {c['measured']} | {c['verdict']}"
              + (f" — {c['note']}" if c.get("note") else "") + " |" for c in claims]
    if left:
        lines += ["", "Left out: " + "; ".join(left)]
    return "\n".join(lines + ["", transferred(work)]) + "\n"


def transferred(work: Path) -> str:
    """The transfer's own measures: how far the style moved (swap and identity control), the
    generator's held-out reconstruction error, and the change outside the class."""
    m = read_json(Stage(work, "transfer").path / METRICS)
    recon = m.get("reconstruction_error")
    recon_text = "none (no generator)" if recon is None else \
        f"{recon:.3f} (predicting zero: {m['reconstruction_baseline']:.3f})"
    return (f"Transfer ({m.get('method', 'sean')}): style_moved {m['style_moved']:.3f} "
            f"(identity {m['identity']['style_moved']:.3f}); held-out reconstruction error "
            f"{recon_text}; change outside the class "
            f"{m['relative_change_outside']:.3f} of the target's amplitude.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args()
    names = ["base", *VARIANTS, "strict"]
    chosen = [n for n in names if not args.only or n in args.only.split(",")]
    args.root.mkdir(parents=True, exist_ok=True)
    times_path = args.root / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    for name in chosen:
        work = args.root / name
        if (work / "report" / "manifest.json").is_file():
            continue
        t0 = time.perf_counter()
        if name == "base":
            base(work, [])
        elif name == "strict":
            base(work, ["data.holdout=strict"])
        else:
            variant(args.root / "base", work, VARIANTS[name],
                    REDO_METHODS.get(name, ("transfer",)))
        times[name] = time.perf_counter() - t0
        times_path.write_text(json.dumps(times))
        print(table(name, work, times[name]), flush=True)
    done = [n for n in names if (args.root / n / "report" / "manifest.json").is_file()]
    (args.root / "study.md").write_text("\n".join(table(n, args.root / n, times.get(n))
                                                   for n in done))


if __name__ == "__main__":
    main()

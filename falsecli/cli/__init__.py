"""Command-line interface: parses options, builds the config, calls one stage function.

Nothing here computes: each command names the config keys it offers as flags
(:class:`~falsecli.cli.options.Key`) and the options it uses, and calls the stage's API
function, which returns a summary dict (printed as text, or as JSON with ``--json``). Heavy
modules (torch) are imported inside the commands so that ``--help`` stays instant.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from falsecli import __version__
from falsecli.core import layout
from falsecli.cli.options import (Address, Context, Executor, Force, Group, Jobs, Key,
                                  Resume, registrar)

app = typer.Typer(
    name="falsecli",
    cls=Group,
    help="Explain a seismic facies segmentation network through its forgetting events, "
    "and repair its weak classes (Benkert, Aribido & AlRegib, ICIP 2021).\n\n"
    "Stages: train -> heatmap -> rank -> transfer -> retrain -> report (or: run, demo). "
    "Which section to label next: query, al.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

command = registrar(app)


def _version(value: bool) -> None:
    if value:
        print(f"falsecli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """falsecli: forgetting events of a seismic facies segmentation network."""


class Format(str, Enum):
    npy = "npy"
    segy = "segy"


class OutFormat(str, Enum):
    npy = "npy"
    segy = "segy"
    zarr = "zarr"


class CubeFormat(str, Enum):
    segy = "segy"
    zarr = "zarr"


# ---------------------------------------------------------------- data


@command("synth")
def synth_cmd(
    ctx: Context,
    out: Annotated[Path, typer.Option("--out", metavar="DIR",
                                      help="Folder to write the F3-layout volumes to.")],
    fmt: Annotated[Format, typer.Option("--format", metavar="npy|segy",
                                        help="Seismic file format.")] = Format.npy,
    force: Force = False,
) -> None:
    """Write the synthetic F3-like volumes in the F3 benchmark layout (train/, test_once/)."""
    cfg = ctx.config()
    from falsecli.data.synthetic import write_f3_layout

    ctx.emit(write_f3_layout(cfg, out, fmt.value, force=force))


@command("inspect")
def inspect_cmd(ctx: Context) -> None:
    """Load and validate the configured data; print shapes, value range, classes, sections."""
    cfg = ctx.config()
    from falsecli.stages.inspect import inspect_data, print_inspection

    ctx.emit(inspect_data(cfg), print_inspection)


# ---------------------------------------------------------------- stages 1-3


@command("train", "train.epochs", "train.batch_size", "train.lr", "train.aug", "train.device",
         "train.seed")
def train_cmd(ctx: Context, resume: Resume = False, force: Force = False) -> None:
    """Stage 1: train DeepLabv3/ResNet-18, tracking every tracked pixel after every epoch."""
    cfg = ctx.config(retrain=force)
    from falsecli.stages.train import train

    ctx.emit(train(cfg, ctx.workdir, force=force, resume=resume))


@command("heatmap", "heatmap.epochs", "heatmap.never_learned",
         Key("heatmap.run", help=f"Training run: {layout.RUN_FORMS}"),
         "heatmap.sections")
def heatmap_cmd(ctx: Context, force: Force = False) -> None:
    """Stage 2: forgetting and switch heat maps from the recorded history (paper eq. 1-3)."""
    cfg = ctx.config()
    from falsecli.stages.heatmap import heatmap

    ctx.emit(heatmap(cfg, ctx.workdir, force=force))


@command("rank", "rank.class", "rank.top", "rank.by", "rank.min_pixels")
def rank_cmd(ctx: Context, force: Force = False) -> None:
    """Stage 3: rank every tracked section by the class's forgetting (or switch) density."""
    cfg = ctx.config()
    from falsecli.stages.rank import print_ranking, rank

    ctx.emit(rank(cfg, ctx.workdir, force=force), print_ranking)


# ---------------------------------------------------------------- stages 4-6


@command("transfer", "transfer.class", "transfer.sources", "transfer.per_source",
         "transfer.iterations", "train.device")
def transfer_cmd(ctx: Context, resume: Resume = False, force: Force = False) -> None:
    """Stage 4: the class's style from the most-forgotten sections into training sections."""
    cfg = ctx.config()
    from falsecli.stages.transfer import transfer

    ctx.emit(transfer(cfg, ctx.workdir, force=force, resume=resume))


@command("retrain", Key("retrain.augs", "--aug"), "retrain.seeds", "retrain.epochs",
         "train.device")
def retrain_cmd(ctx: Context, resume: Resume = False, force: Force = False,
                jobs: Jobs = "auto", executor: Executor = "local", address: Address = None
                ) -> None:
    """Stage 5: train from scratch per method and seed into retrain/<aug>/seed<k>/."""
    cfg = ctx.config()
    from falsecli.stages.retrain import retrain

    ctx.emit(retrain(cfg, ctx.workdir, force=force, resume=resume,
                     parallel=ctx.parallel(jobs, executor, address)))


@command("report")
def report_cmd(ctx: Context, force: Force = False) -> None:
    """Stage 6: Table 1, Fig. 5, forgetting statistics and curves as report.md and report.html."""
    cfg = ctx.config()
    from falsecli.stages.report import report

    ctx.emit(report(cfg, ctx.workdir, force=force))


@command("trace", "trace.section", "trace.class", "trace.mask",
         Key("trace.run", help=f"Training run: {layout.RUN_FORMS}"),
         "trace.layers", "trace.top", "trace.method", "trace.normalize", "trace.layer",
         "train.device")
def trace_cmd(ctx: Context, force: Force = False) -> None:
    """Which training sections and classes made the network learn or forget a region: TracIn
    influence at the kept weights, or the region's representation split into the shares of
    training that built it (train.trace); per class and per epoch."""
    cfg = ctx.config()
    from falsecli.stages.trace import print_trace, trace

    ctx.emit(trace(cfg, ctx.workdir, force=force), print_trace)


# ---------------------------------------------------------------- active learning


@command("query", "query.budget", "query.strategy",
         Key("query.run", help=f"Training run whose pool is ranked (it tracked pool): "
                                 f"{layout.RUN_FORMS}"),
         "query.min_gap")
def query_cmd(ctx: Context, force: Force = False) -> None:
    """Which unlabelled training sections to label next: rank a run's pool by switch events
    (FALSE, GauSS), softmax uncertainty or at random; print the chosen section names."""
    cfg = ctx.config()
    from falsecli.stages.query import print_query, query

    ctx.emit(query(cfg, ctx.workdir, force=force), print_query)


@command("al", "al.initial", "al.rounds", "query.budget", "al.strategies", "al.seeds",
         "train.epochs", "train.device")
def al_cmd(ctx: Context, force: Force = False, jobs: Jobs = "auto",
           executor: Executor = "local", address: Address = None) -> None:
    """Simulate active learning on the labelled volume: per strategy and seed, train from
    scratch, query, reveal, round after round, into al/<strategy>/seed<k>/round<r>/ and
    al/curves.csv (resumes where it stopped)."""
    cfg = ctx.config()
    from falsecli.stages.al import al

    ctx.emit(al(cfg, ctx.workdir, force=force, parallel=ctx.parallel(jobs, executor, address)))


@command("show")
def show_cmd(
    ctx: Context,
    stage: Annotated[Optional[str], typer.Argument(
        metavar="[STAGE]", help="A stage folder: heatmap, rank, transfer, report, a run "
        f"({layout.RUN_FORMS}), {layout.PER_RUN_FORMS} \\[default: list every stage]")] = None,
) -> None:
    """Print what the workdir holds (each stage: fresh or stale), or one stage's result (rank:
    its table), without redoing anything."""
    cfg = ctx.config()
    from falsecli.stages.show import print_show, show

    ctx.emit(show(cfg, ctx.workdir, stage), print_show)


#: the keys of the whole workflow's commands: where it runs and from which seed
_WORKFLOW = ("train.device", "train.seed")


@command("run", *_WORKFLOW)
def run_cmd(ctx: Context, force: Force = False, jobs: Jobs = "auto",
            executor: Executor = "local", address: Address = None) -> None:
    """All six stages in order from the config, skipping the complete ones."""
    cfg = ctx.config(retrain=force)
    from falsecli.stages.pipeline import run

    ctx.emit(run(cfg, ctx.workdir, force=force, parallel=ctx.parallel(jobs, executor, address)))


def _profiles() -> type[Enum]:
    from falsecli.stages.pipeline import PROFILES

    return Enum("Profile", {name: name for name in PROFILES}, type=str)


Profile = _profiles()


@command("demo", *_WORKFLOW)
def demo_cmd(
    ctx: Context,
    profile: Annotated[Profile, typer.Option(  # type: ignore[valid-type]
        metavar="|".join(p.value for p in Profile),
        help="demo: every method and the transfer-identity control, 2 seeds, minutes; "
        "study: the same at 4 seeds on a smaller volume, ~12 min on 2 CPU cores")] = "demo",
    force: Force = False,
    jobs: Jobs = "auto",
    executor: Executor = "local",
    address: Address = None,
) -> None:
    """The whole workflow on the built-in synthetic volume with a small CPU profile."""
    from falsecli.stages.pipeline import demo_config, run

    cfg = ctx.config(base=demo_config(Profile(profile).value), retrain=force)
    ctx.emit(run(cfg, ctx.workdir, force=force, parallel=ctx.parallel(jobs, executor, address)))


# ---------------------------------------------------------------- interpretation


@command("predict", Key("predict.run", help=f"Model: {layout.RUN_FORMS}"),
         "predict.axes", "predict.batch_size", "train.device")
def predict_cmd(
    ctx: Context,
    out: Annotated[Path, typer.Option("--out", metavar="DIR",
                                      help="Folder to write the results to.")],
    input_path: Annotated[Optional[Path], typer.Option(
        "--input", metavar="PATH", help="Volume to predict, .npy or SEG-Y (.sgy/.segy) "
        "\\[default: the configured test volumes]")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="Labels of --input (.npy or SEG-Y): adds the benchmark's metrics")
    ] = None,
    fmt: Annotated[Optional[OutFormat], typer.Option(
        "--format", metavar="npy|segy|zarr", help="segy: also SEG-Y for .npy input; npy: no "
        "SEG-Y; zarr: a Zarr store for xarray instead of SEG-Y (pip install 'falsecli\\[zarr]') "
        "\\[default: SEG-Y for SEG-Y input]")] = None,
    force: Force = False,
) -> None:
    """Apply a run's model to a whole volume: facies, confidence and entropy as .npy and
    SEG-Y with the input's headers."""
    cfg = ctx.config()
    from falsecli.stages.predict import predict

    ctx.emit(predict(cfg, ctx.workdir, out, input_path=input_path, labels=labels,
                     fmt=fmt and fmt.value, force=force))


@command("export", Key("heatmap.run", help=f"Heat maps of: {layout.RUN_FORMS}"))
def export_cmd(
    ctx: Context,
    out: Annotated[Path, typer.Option("--out", metavar="DIR",
                                      help="Folder to write the cubes to.")],
    fmt: Annotated[CubeFormat, typer.Option(
        "--format", metavar="segy|zarr", help="zarr: one Zarr store per volume for xarray "
        "(pip install 'falsecli\\[zarr]')")] = CubeFormat.segy,
    force: Force = False,
) -> None:
    """Heat maps (forgetting, switch, never-learned) as SEG-Y cubes (or Zarr) with the
    training volume's geometry, to overlay the seismic in any SEG-Y viewer."""
    cfg = ctx.config()
    from falsecli.stages.export import export

    ctx.emit(export(cfg, ctx.workdir, out, fmt=fmt.value, force=force))


def main() -> None:
    """Console-script entry point."""
    app()

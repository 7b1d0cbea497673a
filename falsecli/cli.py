"""Command-line interface: parses options, builds the config, calls one stage function.

Nothing here computes: each command maps its flags onto config keys and calls the stage's
API function, which returns a summary dict (printed as text, or as JSON with ``--json``).
Heavy modules (torch) are imported inside the commands so that ``--help`` stays instant.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from falsecli import __version__
from falsecli.core import config, console, layout
from falsecli.core.config import remembered_config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import fs_error
from falsecli.core.layout import default_workdir
from falsecli.core.manifest import Stage

app = typer.Typer(
    name="falsecli",
    help="Explain a seismic facies segmentation network through its forgetting events, "
    "and repair its weak classes (Benkert, Aribido & AlRegib, ICIP 2021).\n\n"
    "Stages: train -> heatmap -> rank -> transfer -> retrain -> report (or: run, demo). "
    "Which section to label next: query, al.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _choice(name: str, key: str) -> type[Enum]:
    """A typer choice option built from the config rules, so both accept the same values."""
    return Enum(name, {c: c for c in config.choices(key)}, type=str)


Aug = _choice("Aug", "train.aug")
RetrainAug = _choice("RetrainAug", "retrain.augs")
NeverLearned = _choice("NeverLearned", "heatmap.never_learned")
RankBy = _choice("RankBy", "rank.by")
Axes = _choice("Axes", "predict.axes")


class Format(str, Enum):
    npy = "npy"
    segy = "segy"


@dataclass
class Context:
    """What every command receives: the common options, resolved."""

    name: str
    workdir: Path
    config_file: Optional[Path]
    sets: list[str]
    device: Optional[str]
    seed: Optional[int]
    force: bool
    json: bool

    def config(self, flags: dict[str, Any] | None = None,
               base: config.Config | None = None) -> config.Config:
        """Resolved config: the workdir's settings (``<workdir>/config.yaml``, written when its
        first stage completed; else train's; else ``base``, else the defaults) < file < --set <
        explicit flags.

        Changing the data or the model of a workdir that holds a training run is refused,
        except by a forced retraining (train, run, demo with ``--force``)."""
        explicit = {"train.device": self.device, "train.seed": self.seed, **(flags or {})}
        remembered = remembered_config(self.workdir)
        train = Stage(self.workdir, "train").manifest()
        if remembered.is_file():
            base = config.resolve(remembered)
        elif train is not None:  # a workdir from before config.yaml: its training settings
            base, remembered = config.merge(config.load_defaults(), train["config"]), \
                Stage(self.workdir, "train").manifest_path
        cfg = config.resolve(self.config_file, self.sets, explicit, base=base,
                             workdir=self.workdir)
        retrains = self.force and self.name in RETRAINS
        if train is not None and not retrains and self.name not in READ_ONLY:
            config.refuse_other_results(base, cfg, f"the workdir {self.workdir} ({remembered})")
        return cfg

    def emit(self, summary: dict[str, Any], text: Callable[[dict[str, Any]], None] | None = None
             ) -> None:
        """Print a stage's result on stdout: JSON for scripts, else text."""
        if self.json:
            print(json.dumps(summary, indent=2, default=str))
        elif text is not None:
            text(summary)
        else:
            _print_outputs(summary)


def _print_outputs(summary: dict[str, Any]) -> None:
    for line in summary.get("lines", []):
        console.stdout.print(line)
    for path in summary.get("outputs", []):
        print(path)


_DEFAULTS = config.load_defaults()
#: commands that may change a workdir's data or model with --force: they retrain train/
RETRAINS = ("train", "run", "demo")
#: commands that read data but write nothing into the workdir
READ_ONLY = ("synth", "inspect", "show")
#: commands that run under torchrun (DistributedDataParallel); the others refuse to
DISTRIBUTED = ("train", "retrain")


def _h(text: str, key: str) -> str:
    """Help text with the default read from the defaults file (escaped for rich markup)."""
    return f"{text} \\[default: {config.get(_DEFAULTS, key)!r} ({key})]"


_COMMON = [
    inspect.Parameter("workdir", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[Path], typer.Option("-w", "--workdir", envvar="FALSECLI_WORKDIR", metavar="DIR",
                                     help="Working directory \\[default: ./falsecli-work]")]),
    inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Optional[Path], typer.Option(
                          "-c", "--config", metavar="FILE",
                          help="YAML config file (see example.yaml).")]),
    inspect.Parameter("sets", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[list[str]], typer.Option(
            "--set", metavar="KEY=VALUE",
            help="Override a config key, value parsed as YAML: --set train.epochs=5")]),
    inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[str], typer.Option("--device", metavar="DEVICE",
                                    help=_h("auto | cpu | cuda | cuda:N", "train.device"))]),
    inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[int], typer.Option("--seed", help=_h("Random seed", "train.seed"))]),
    inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option("--force", help="Redo a stage that is already complete.")]),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option("-q", "--quiet", help="No progress bars or logs on stderr.")]),
    inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, typer.Option(
                          "--json", help="Machine-readable summary on stdout.")]),
    inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, typer.Option(
                          "--verbose", help="Show the traceback of an error.")]),
]
_COMMON_NAMES = [p.name for p in _COMMON]


#: metavars by option type: what a user types, not Python's type names
_METAVARS = {bool: "FLAG", int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def _metavar(kind: Any) -> str:
    """A readable metavar for an option of type ``kind``: FLAG, N, PATH, a|b|c, N..."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if typing.get_origin(kind) is list:
        return _metavar(typing.get_args(kind)[0]) + "..."
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "|".join(member.value for member in kind)
    return _METAVARS.get(kind, "VALUE")


def _with_metavar(param: inspect.Parameter) -> inspect.Parameter:
    """``param`` whose typer option shows a readable metavar unless it names its own."""
    kind, *extras = typing.get_args(param.annotation)
    for info in extras:
        if isinstance(info, typer.models.OptionInfo) and info.metavar is None:
            info.metavar = _metavar(kind)
    return param


class _Command(typer.core.TyperCommand):
    """A typer command whose --help option, too, shows the FLAG metavar."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = _METAVARS[bool]
        return option


def command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(ctx, **own_options)`` as a command that also takes the common options.

    The one place where a :class:`FalseCliError` becomes one line on stderr and exit code 1.
    """

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]

        def wrapper(**kwargs: Any) -> None:
            common = {k: kwargs.pop(k) for k in _COMMON_NAMES}
            console.set_quiet(common["quiet"])
            ctx = Context(
                name=name, workdir=common["workdir"] or default_workdir(),
                config_file=common["config_file"],
                sets=common["sets"] or [], device=common["device"], seed=common["seed"],
                force=common["force"], json=common["as_json"],
            )
            try:
                if int(os.environ.get("WORLD_SIZE", "1")) > 1 and name not in DISTRIBUTED:
                    raise FalseCliError("only train and retrain run under torchrun; run this "
                                        "command as a single process")
                fn(ctx, **kwargs)
            except (FalseCliError, OSError) as exc:
                if common["verbose"]:
                    console.stderr.print_exception()
                # a file-system fault no stage foresaw: still one line, naming the path
                text = str(exc if isinstance(exc, FalseCliError) else fs_error(exc))
                print(error_line(name, text), file=sys.stderr)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                print(f"falsecli {name}: interrupted", file=sys.stderr)
                raise typer.Exit(130) from None

        wrapper.__signature__ = inspect.Signature(
            [_with_metavar(p) for p in own + _COMMON])  # type: ignore[attr-defined]
        wrapper.__doc__ = fn.__doc__
        app.command(name, cls=_Command)(wrapper)
        return fn

    return decorate


def error_line(name: str, text: str) -> str:
    """One prefix style for every error: ``falsecli <command>: <message>``; a message that
    already starts with the command's own name ("rank: ...") does not repeat it. A message
    naming another stage or run keeps it ("falsecli run: heatmap: ...")."""
    return f"falsecli {name}: {text.removeprefix(f'{name}: ')}"


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


# ---------------------------------------------------------------- data


@command("synth")
def synth_cmd(
    ctx: Context,
    out: Annotated[Path, typer.Option("--out", metavar="DIR",
                                      help="Folder to write the F3-layout volumes to.")],
    fmt: Annotated[Format, typer.Option("--format", help="Seismic file format.")] = Format.npy,
) -> None:
    """Write the synthetic F3-like volumes in the F3 benchmark layout (train/, test_once/)."""
    cfg = ctx.config()
    from falsecli.data.synthetic import write_f3_layout

    ctx.emit(write_f3_layout(cfg, out, fmt.value, force=ctx.force))


@command("inspect")
def inspect_cmd(ctx: Context) -> None:
    """Load and validate the configured data; print shapes, value range, classes, sections."""
    cfg = ctx.config()
    from falsecli.stages.inspect import inspect_data, print_inspection

    ctx.emit(inspect_data(cfg), print_inspection)


# ---------------------------------------------------------------- stages 1-3


@command("train")
def train_cmd(
    ctx: Context,
    epochs: Annotated[Optional[int], typer.Option(help=_h("Epochs", "train.epochs"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help=_h("Sections per step", "train.batch_size"))] = None,
    lr: Annotated[Optional[float], typer.Option(help=_h("Adam learning rate", "train.lr"))
                  ] = None,
    aug: Annotated[Optional[Aug], typer.Option(help=_h("Augmentation", "train.aug"))] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last "
                                         "checkpoint.")] = False,
) -> None:
    """Stage 1: train DeepLabv3/ResNet-18, tracking every tracked pixel after every epoch."""
    cfg = ctx.config({"train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr,
                      "train.aug": aug and aug.value})
    from falsecli.stages.train import train
    ctx.emit(train(cfg, ctx.workdir, force=ctx.force, resume=resume))


@command("heatmap")
def heatmap_cmd(
    ctx: Context,
    epochs: Annotated[Optional[int], typer.Option(
        help="Use the first T recorded epochs \\[default: all]")] = None,
    never_learned: Annotated[Optional[NeverLearned], typer.Option(
        help=_h("Events given to never-learned pixels", "heatmap.never_learned"))] = None,
    run: Annotated[Optional[str], typer.Option(
        metavar="RUN",
        help=f"Training run: {layout.RUN_FORMS} \\[default: train]")] = None,
    sections: Annotated[Optional[list[str]], typer.Option(
        "--sections", metavar="SECTION",
        help="Sections to draw (repeatable) \\[default: the most forgotten]")
    ] = None,
) -> None:
    """Stage 2: forgetting and switch heat maps from the recorded history (paper eq. 1-3)."""
    cfg = ctx.config({"heatmap.epochs": epochs, "heatmap.run": run, "heatmap.sections": sections,
                      "heatmap.never_learned": never_learned and never_learned.value})
    from falsecli.stages.heatmap import heatmap
    ctx.emit(heatmap(cfg, ctx.workdir, force=ctx.force))


@command("rank")
def rank_cmd(
    ctx: Context,
    class_: Annotated[Optional[str], typer.Option(
        "--class", metavar="CLASS", help=_h("Class name or id", "rank.class"))] = None,
    top: Annotated[Optional[int], typer.Option(help=_h("Rows to print", "rank.top"))] = None,
    by: Annotated[Optional[RankBy], typer.Option(help=_h("Event kind", "rank.by"))] = None,
    min_pixels: Annotated[Optional[int], typer.Option(
        help=_h("Least pixels of the class in a ranked section", "rank.min_pixels"))] = None,
) -> None:
    """Stage 3: rank every tracked section by the class's forgetting (or switch) density."""
    cfg = ctx.config({"rank.class": class_, "rank.top": top, "rank.by": by and by.value,
                      "rank.min_pixels": min_pixels})
    from falsecli.stages.rank import print_ranking, rank
    ctx.emit(rank(cfg, ctx.workdir, force=ctx.force), print_ranking)


# ---------------------------------------------------------------- stages 4-6


@command("transfer")
def transfer_cmd(
    ctx: Context,
    class_: Annotated[Optional[str], typer.Option(
        "--class", metavar="CLASS",
        help=_h("Class whose style is transferred", "transfer.class"))] = None,
    sources: Annotated[Optional[int], typer.Option(
        help=_h("Top-ranked sections used as style sources", "transfer.sources"))] = None,
    per_source: Annotated[Optional[int], typer.Option(
        help=_h("Samples generated per source", "transfer.per_source"))] = None,
    iterations: Annotated[Optional[int], typer.Option(
        help=_h("Generator training steps", "transfer.iterations"))] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted generator training "
                                         "from its last checkpoint.")] = False,
) -> None:
    """Stage 4: train the SEAN-style generator, transfer the class's style from the
    most-forgotten sections into random training sections."""
    cfg = ctx.config({"transfer.class": class_, "transfer.sources": sources,
                      "transfer.per_source": per_source, "transfer.iterations": iterations})
    from falsecli.stages.transfer import transfer
    ctx.emit(transfer(cfg, ctx.workdir, force=ctx.force, resume=resume))


def _int_list(text: Optional[str], what: str) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise FalseCliError(f"{what} '{text}': expected integers separated by commas, "
                            "e.g. 0,1,2") from None


@command("retrain")
def retrain_cmd(
    ctx: Context,
    aug: Annotated[Optional[list[RetrainAug]], typer.Option(
        help=_h("Method(s) to train from scratch, repeatable", "retrain.augs"))] = None,
    seeds: Annotated[Optional[str], typer.Option(
        metavar="N,N,...", help=_h("Comma-separated seeds, e.g. 0,1,2", "retrain.seeds"))] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Epochs \\[default: retrain.epochs, else train.epochs]")] = None,
    resume: Annotated[bool, typer.Option(help="Continue interrupted runs from their last "
                                         "checkpoint.")] = False,
) -> None:
    """Stage 5: train from scratch per method and seed into retrain/<aug>/seed<k>/."""
    cfg = ctx.config({"retrain.augs": aug and [a.value for a in aug],
                      "retrain.seeds": _int_list(seeds, "--seeds"), "retrain.epochs": epochs})
    from falsecli.stages.retrain import retrain
    ctx.emit(retrain(cfg, ctx.workdir, force=ctx.force, resume=resume))


@command("report")
def report_cmd(ctx: Context) -> None:
    """Stage 6: Table 1, Fig. 5, forgetting statistics and curves as report.md and report.html."""
    cfg = ctx.config()
    from falsecli.stages.report import report

    ctx.emit(report(cfg, ctx.workdir, force=ctx.force))


@command("trace")
def trace_cmd(
    ctx: Context,
    section: Annotated[Optional[str], typer.Option(metavar="SECTION",
        help="Tracked section whose region is explained, e.g. inline_0005")] = None,
    class_: Annotated[Optional[str], typer.Option(
        "--class", metavar="CLASS", help="Query region: this class's pixels of the section \\[default: all]")
    ] = None,
    mask: Annotated[Optional[Path], typer.Option(
        help="Query region: a bool .npy of the section's shape (depth, width)")] = None,
    run: Annotated[Optional[str], typer.Option(metavar="RUN",
        help=_h(f"Training run: {layout.RUN_FORMS}", "trace.run"))] = None,
    layers: Annotated[Optional[str], typer.Option(metavar="LAYERS",
        help=_h("Parameters compared: last | head | all | name prefixes", "trace.layers"))
    ] = None,
    top: Annotated[Optional[int], typer.Option(
        help=_h("Proponents and opponents shown", "trace.top"))] = None,
) -> None:
    """Which training sections made the network learn or forget a region: TracIn influence
    over the run's kept checkpoints (train.keep_every), per class and per epoch."""
    cfg = ctx.config({"trace.section": section, "trace.class": class_,
                      "trace.mask": mask and str(mask), "trace.run": run,
                      "trace.layers": layers, "trace.top": top})
    from falsecli.stages.trace import print_trace, trace
    ctx.emit(trace(cfg, ctx.workdir, force=ctx.force), print_trace)


# ---------------------------------------------------------------- active learning


def _name_list(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [p for p in text.replace(" ", "").split(",") if p]


@command("query")
def query_cmd(
    ctx: Context,
    budget: Annotated[Optional[int], typer.Option(
        help=_h("Pool sections to choose", "query.budget"))] = None,
    strategy: Annotated[Optional[str], typer.Option(
        metavar="|".join(config.choices("query.strategy")),
        help=_h("Query strategy", "query.strategy"))] = None,
    run: Annotated[Optional[str], typer.Option(metavar="RUN", help=_h(
        f"Training run whose pool is ranked (it tracked pool): {layout.RUN_FORMS}",
        "query.run"))] = None,
    min_gap: Annotated[Optional[int], typer.Option(help=_h(
        "Least index distance on an axis between chosen and labelled sections",
        "query.min_gap"))] = None,
) -> None:
    """Which unlabelled training sections to label next: rank a run's pool by switch events
    (FALSE, GauSS), softmax uncertainty or at random; print the chosen section names."""
    cfg = ctx.config({"query.budget": budget, "query.strategy": strategy, "query.run": run,
                      "query.min_gap": min_gap})
    from falsecli.stages.query import print_query, query

    ctx.emit(query(cfg, ctx.workdir, force=ctx.force), print_query)


@command("al")
def al_cmd(
    ctx: Context,
    initial: Annotated[Optional[int], typer.Option(
        help=_h("Labelled sections at round 0", "al.initial"))] = None,
    rounds: Annotated[Optional[int], typer.Option(
        help=_h("Query-and-reveal rounds", "al.rounds"))] = None,
    budget: Annotated[Optional[int], typer.Option(
        help=_h("Sections revealed per round", "query.budget"))] = None,
    strategies: Annotated[Optional[str], typer.Option(
        metavar="S,S,...", help=_h("Comma-separated strategies", "al.strategies"))] = None,
    seeds: Annotated[Optional[str], typer.Option(
        metavar="N,N,...", help=_h("Comma-separated seeds", "al.seeds"))] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help=_h("Epochs of every round's training", "train.epochs"))] = None,
) -> None:
    """Simulate active learning on the labelled volume: per strategy and seed, train from
    scratch, query, reveal, round after round, into al/<strategy>/seed<k>/round<r>/ and
    al/curves.csv (resumes where it stopped)."""
    cfg = ctx.config({"al.initial": initial, "al.rounds": rounds, "query.budget": budget,
                      "al.strategies": _name_list(strategies),
                      "al.seeds": _int_list(seeds, "--seeds"), "train.epochs": epochs})
    from falsecli.stages.al import al

    ctx.emit(al(cfg, ctx.workdir, force=ctx.force))


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


@command("run")
def run_cmd(ctx: Context) -> None:
    """All six stages in order from the config, skipping the complete ones."""
    cfg = ctx.config()
    from falsecli.stages.pipeline import run

    ctx.emit(run(cfg, ctx.workdir, force=ctx.force))


def _profiles() -> type[Enum]:
    from falsecli.stages.pipeline import PROFILES

    return Enum("Profile", {name: name for name in PROFILES}, type=str)


Profile = _profiles()


@command("demo")
def demo_cmd(
    ctx: Context,
    profile: Annotated[Profile, typer.Option(  # type: ignore[valid-type]
        help="demo: 2 seeds, minutes; study: 4 seeds of every method and the "
        "transfer-identity control, ~12 min on 2 CPU cores")] = "demo",
) -> None:
    """The whole workflow on the built-in synthetic volume with a small CPU profile."""
    from falsecli.stages.pipeline import demo_config, run

    cfg = ctx.config(base=demo_config(Profile(profile).value))
    ctx.emit(run(cfg, ctx.workdir, force=ctx.force))


# ---------------------------------------------------------------- interpretation


@command("predict")
def predict_cmd(
    ctx: Context,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to write the results to.")],
    input_path: Annotated[Optional[Path], typer.Option(
        "--input", help="Volume to predict, .npy or SEG-Y (.sgy/.segy) \\[default: the "
        "configured test volumes]")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Labels of --input (.npy or SEG-Y): adds the benchmark's metrics")] = None,
    run: Annotated[Optional[str], typer.Option(metavar="RUN",
        help=_h(f"Model: {layout.RUN_FORMS}", "predict.run"))] = None,
    axes: Annotated[Optional[Axes], typer.Option(
        help=_h("Sections predicted; both averages the two softmax estimates",
                "predict.axes"))] = None,
    fmt: Annotated[Optional[Format], typer.Option(
        "--format", help="segy: also SEG-Y for .npy input; npy: no SEG-Y \\[default: SEG-Y "
        "for SEG-Y input]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help=_h("Sections per forward pass", "predict.batch_size"))] = None,
) -> None:
    """Apply a run's model to a whole volume: facies, confidence and entropy as .npy and
    SEG-Y with the input's headers."""
    cfg = ctx.config({"predict.run": run, "predict.axes": axes and axes.value,
                      "predict.batch_size": batch_size})
    from falsecli.stages.predict import predict

    ctx.emit(predict(cfg, ctx.workdir, out, input_path=input_path, labels=labels,
                     fmt=fmt and fmt.value, force=ctx.force))


@command("export")
def export_cmd(
    ctx: Context,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to write the SEG-Y cubes to.")],
    run: Annotated[Optional[str], typer.Option(metavar="RUN",
        help=_h(f"Heat maps of: {layout.RUN_FORMS}", "heatmap.run"))] = None,
) -> None:
    """Heat maps (forgetting, switch, never-learned) as SEG-Y cubes with the training
    volume's geometry, to overlay the seismic in any SEG-Y viewer."""
    cfg = ctx.config({"heatmap.run": run})
    from falsecli.stages.export import export

    ctx.emit(export(cfg, ctx.workdir, out, force=ctx.force))


def main() -> None:
    """Console-script entry point."""
    app()

"""The machinery of the commands: the options every command takes, the flags that set
config keys, the config a command resolves, and the one place where an error becomes one line.

A flag that sets a config key is built from the key's rule (type, choices), default and
comment (its help) in defaults.yaml, as Ultralytics' arguments are its config keys: a new key
is one line in defaults.yaml, one rule, and its mention on a command. A command lists only the
options it uses: ``--force`` and ``--resume`` where its function takes them, key flags where
it names them.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from falsecli.core import config, console, defaults, rules
from falsecli.core.errors import FalseCliError, did_you_mean
from falsecli.core.config import remembered_config
from falsecli.core.files import fs_error
from falsecli.core.layout import default_workdir
from falsecli.core.manifest import Stage


class _NoFlagMetavar:
    """Help that shows no metavar for an option that takes no value (--help, --force...)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class Group(_NoFlagMetavar, typer.core.TyperGroup):
    """The app's group: its --help, --version and completion options show no metavar."""


class _Command(_NoFlagMetavar, typer.core.TyperCommand):
    """A command: its --help, --force... show no metavar."""


_DEFAULTS = config.load_defaults()
#: commands that read data but write nothing into the workdir
READ_ONLY = ("synth", "inspect", "show")
#: commands that run under torchrun (DistributedDataParallel); the others refuse to
DISTRIBUTED = ("train", "retrain")


@dataclass(frozen=True)
class Key:
    """A flag that sets the config key ``key``: its type, choices, default and help come from
    the key's rule and defaults.yaml. The flag is ``--<last part of the key>`` unless
    ``flag`` names another; ``help`` replaces the comment where a command words it otherwise.
    A list key's flag is repeatable and each value may hold several items, comma-separated.
    """

    key: str
    flag: str = ""
    help: str = ""

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.rsplit(".", 1)[1].replace("_", "-")

    @property
    def param(self) -> str:
        """The parameter name typer sees (unique: the key's parts)."""
        return "key__" + self.key.replace(".", "__")

    def parameter(self) -> inspect.Parameter:
        rule = rules.RULES[self.key]
        kind, metavar = _kind(self.key, rule.items or rule)
        if rule.items is not None:
            kind, metavar = list[str], f"{metavar},..."
        names = [self.option] if kind is not bool else [f"{self.option}/--no-{self.option[2:]}"]
        default = json.dumps(config.get(_DEFAULTS, self.key))
        text = f"{self.help or defaults.comments()[self.key]} [default: {default} ({self.key})]"
        option = typer.Option(*names, metavar=metavar, help=escape(text), show_default=False)
        return inspect.Parameter(self.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[Optional[kind], option])

    def value(self, raw: Any) -> Any:
        """The config value of the flag's ``raw`` value (None: not given)."""
        items = rules.RULES[self.key].items
        if items is None:
            return raw
        if not raw:
            return None
        parts = [part for text in raw for part in text.replace(" ", "").split(",") if part]
        if items.kinds != (int,):
            return parts
        try:
            return [int(part) for part in parts]
        except ValueError:
            raise FalseCliError(f"{self.option} '{','.join(raw)}': expected integers separated "
                                "by commas, e.g. 0,1,2") from None


#: the option type and metavar of a rule's first type: what a user types
_TYPES: dict[type, tuple[type, str]] = {int: (int, "N"), float: (float, "NUMBER"),
                                        bool: (bool, "")}


def _kind(key: str, rule: rules.Rule) -> tuple[type, str]:
    kind, metavar = _TYPES.get(rule.kinds[0], (str, key.rsplit(".", 1)[1].upper()))
    return kind, "|".join(str(c) for c in rule.choices) if rule.choices else metavar


@dataclass
class Context:
    """What every command receives: the common options and the key flags, resolved."""

    name: str
    workdir: Path
    config_file: Optional[Path]
    sets: list[str]
    flags: dict[str, Any]
    json: bool

    def config(self, base: config.Config | None = None, retrain: bool = False
               ) -> config.Config:
        """Resolved config: the workdir's settings (``<workdir>/config.yaml``, written when its
        first stage completed; else train's; else ``base``, else the defaults) < file < --set <
        key flags.

        Changing the data or the model of a workdir that holds a training run is refused,
        except by a forced retraining (``retrain``: train, run, demo with ``--force``)."""
        remembered = remembered_config(self.workdir)
        train = Stage(self.workdir, "train").manifest()
        if remembered.is_file():
            base = config.resolve(remembered)
        elif train is not None:  # a workdir from before config.yaml: its training settings
            base, remembered = config.merge(config.load_defaults(), train["config"]), \
                Stage(self.workdir, "train").manifest_path
        cfg = config.resolve(self.config_file, self.sets, self.flags, base=base,
                             workdir=self.workdir)
        if train is not None and not retrain and self.name not in READ_ONLY:
            config.refuse_other_results(base, cfg, f"the workdir {self.workdir} ({remembered})")
        return cfg

    @staticmethod
    def parallel(jobs: str, executor: str, address: str | None) -> Any:
        """``--jobs``, ``--executor`` and ``--address``, checked before any work starts."""
        from falsecli.core.jobs import count
        from falsecli.core.parallel import EXECUTORS, Parallel

        count(jobs, 1)
        if executor not in EXECUTORS:
            raise FalseCliError(f"--executor '{executor}': expected one of "
                                f"{', '.join(EXECUTORS)}{did_you_mean(executor, EXECUTORS)}")
        if address is not None and executor != "ray":
            raise FalseCliError("--address names a Ray cluster: add --executor ray")
        return Parallel(jobs, executor, address)

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


#: the options every command takes: (type, option, default)
_COMMON: dict[str, tuple[Any, Any, Any]] = {
    "workdir": (Optional[Path], typer.Option(
        "-w", "--workdir", envvar="FALSECLI_WORKDIR", metavar="DIR",
        help="Working directory \\[default: ./falsecli-work]"), None),
    "config_file": (Optional[Path], typer.Option(
        "-c", "--config", metavar="FILE", help="YAML config file (see example.yaml)."), None),
    "sets": (Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Override a config key, value parsed as YAML: --set train.epochs=5"), None),
    "quiet": (bool, typer.Option("-q", "--quiet", help="No progress bars or logs on stderr."),
              False),
    "as_json": (bool, typer.Option("--json", help="Machine-readable summary on stdout."), False),
    "verbose": (bool, typer.Option("--verbose", help="Show the traceback of an error."), False),
}
#: the options a command names in its own signature when it uses them
Force = Annotated[bool, typer.Option("--force", help="Redo a stage that is already complete.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run from its last checkpoint.")]
Jobs = Annotated[str, typer.Option(
    "--jobs", metavar="N|auto",
    help="Independent runs N at a time, each in its own process, the cores split between "
    "them (auto: one per GPU, else one per core up to 4; with ray: per GPU, else per 2 CPUs "
    "of the cluster).")]
Executor = Annotated[str, typer.Option(
    "--executor", metavar="local|ray", help="Where the runs go: here, or Ray tasks "
    "(pip install 'falsecli\\[ray]'; the workdir must be on a filesystem every node shares).")]
Address = Annotated[Optional[str], typer.Option(
    "--address", metavar="ADDR", help="With --executor ray: the cluster (default: "
    "RAY_ADDRESS, else a Ray instance started here).")]


def _parameters(fn: Callable[..., None], keys: list[Key]) -> list[inspect.Parameter]:
    """The command's options: its key flags, its own (``fn``'s after ``ctx``), the common."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
           for p in list(inspect.signature(fn, eval_str=True).parameters.values())[1:]]
    common = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                annotation=Annotated[kind, option])
              for name, (kind, option, default) in _COMMON.items()]
    return [key.parameter() for key in keys] + own + common


Decorator = Callable[[Callable[..., None]], Callable[..., None]]


def registrar(app: typer.Typer) -> Callable[..., Decorator]:
    """``command = registrar(app)``; ``@command(name, *keys)`` registers ``fn(ctx, **own)``
    as a command offering the flags of ``keys``, ``fn``'s own options and the common ones.

    The one place where a :class:`FalseCliError` becomes one line on stderr and exit code 1.
    """

    def command(name: str, *keys: Key | str) -> Decorator:
        specs = [key if isinstance(key, Key) else Key(key) for key in keys]

        def decorate(fn: Callable[..., None]) -> Callable[..., None]:
            def wrapper(**kwargs: Any) -> None:
                common = {k: kwargs.pop(k) for k in _COMMON}
                raw = {spec: kwargs.pop(spec.param) for spec in specs}
                console.set_quiet(common["quiet"])

                def call() -> None:
                    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and name not in DISTRIBUTED:
                        raise FalseCliError("only train and retrain run under torchrun; run "
                                            "this command as a single process")
                    flags = {spec.key: spec.value(value) for spec, value in raw.items()}
                    fn(Context(name, common["workdir"] or default_workdir(),
                               common["config_file"], common["sets"] or [], flags,
                               common["as_json"]), **kwargs)

                _run(name, call, common["verbose"])

            wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
                _parameters(fn, specs))
            wrapper.__doc__ = fn.__doc__
            app.command(name, cls=_Command)(wrapper)
            return fn

        return decorate

    return command


def _run(name: str, call: Callable[[], None], verbose: bool) -> None:
    """``call()``, its errors one line on stderr and exit code 1 (Ctrl-C: 130)."""
    try:
        call()
    except (FalseCliError, OSError) as exc:
        if verbose:
            console.stderr.print_exception()
        # a file-system fault no stage foresaw: still one line, naming the path
        text = str(exc if isinstance(exc, FalseCliError) else fs_error(exc))
        print(error_line(name, text), file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print(f"falsecli {name}: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None


def error_line(name: str, text: str) -> str:
    """One prefix style for every error: ``falsecli <command>: <message>``; a message that
    already starts with the command's own name ("rank: ...") does not repeat it. A message
    naming another stage or run keeps it ("falsecli run: heatmap: ...")."""
    return f"falsecli {name}: {text.removeprefix(f'{name}: ')}"



"""The command-line contract: help, version, one-line errors, exit codes."""

import ast
import importlib
import inspect
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from falsecli import __version__

COMMANDS = ["synth", "inspect", "show", "train", "heatmap", "rank", "transfer", "retrain", "report",
            "run", "demo", "trace", "query", "al", "predict", "export"]
#: the options every command takes
COMMON = {"--workdir", "--config", "--set", "--quiet", "--json", "--verbose", "--help"}


def help_text(*command: str) -> str:
    from typer.testing import CliRunner

    from falsecli.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def help_options(command: str) -> set[str]:
    """The long options ``falsecli <command> --help`` lists (the first column of its table)."""
    return set(re.findall(r"^│[ *]+(--[a-z-]+)", help_text(command), re.MULTILINE))


def test_help_and_config_errors_do_not_import_torch(tmp_path) -> None:
    """--help, resolving the config and refusing a bad value stay instant: no torch."""
    code = ("import sys; from typer.testing import CliRunner; from falsecli.cli import app;"
            "from falsecli.core import config; config.resolve(sets=['train.epochs=2']);"
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
            "[CliRunner().invoke(app, [c, '--help']) for c in %r];"
            "r = CliRunner().invoke(app, ['run', '-w', %r, '--set', 'transfer.iterations=0']);"
            "assert r.exit_code == 1, r.output;"
            "assert 'torch' not in sys.modules, 'torch imported'" % (COMMANDS, str(tmp_path)))
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_common_options(cli, command: str) -> None:
    assert COMMON <= help_options(command)


def test_version_and_module_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "falsecli", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"falsecli {__version__}"


def test_unknown_key_is_one_line_exit_1(cli, tmp_path) -> None:
    result = cli("inspect", "-w", tmp_path, "--set", "train.epoch=3")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'train.epochs'" in lines[0]
    assert "Traceback" not in result.output


def test_out_of_range_value_fails_at_once_in_one_line(cli, tmp_path) -> None:
    work = tmp_path / "w"
    t0 = time.perf_counter()
    result = cli("run", "--set", "transfer.iterations=0", "-w", work)
    assert time.perf_counter() - t0 < 2
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "falsecli run: config key 'transfer.iterations' is 0; it must be >= 1"]
    assert not work.exists()  # refused before any work


def test_bad_list_item_is_refused(cli, tmp_path) -> None:
    result = cli("retrain", "-w", tmp_path, "--set", "retrain.augs=[bogus]")
    assert result.exit_code == 1
    assert "'retrain.augs[0]' is 'bogus'; it must be one of none | flip | rotate | transfer" \
        in result.stderr


def test_bad_usage_is_exit_2_a_bad_choice_exit_1(cli, tmp_path) -> None:
    """A flag that sets a config key is checked by the key's rule, as --set is."""
    assert cli("train", "--no-such-option").exit_code == 2
    assert cli("no-such-command").exit_code == 2
    result = cli("train", "-w", tmp_path, "--aug", "mixup")
    assert result.exit_code == 1 and result.stderr == (
        "falsecli train: config key 'train.aug' is 'mixup'; it must be one of none | flip | "
        "rotate\n")


def test_bad_seed_list(cli, tmp_path) -> None:
    result = cli("retrain", "-w", tmp_path, "--seeds", "0,x")
    assert result.exit_code == 1 and "--seeds '0,x'" in result.stderr


def test_missing_upstream_says_what_to_run(cli, tmp_path) -> None:
    result = cli("rank", "-w", tmp_path)
    assert result.exit_code == 1
    assert f"run 'falsecli heatmap -w {tmp_path}' first" in result.stderr


def test_only_training_runs_under_torchrun(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = cli("heatmap", "-w", tmp_path)
    assert result.exit_code == 1 and "only train and retrain run under torchrun" in result.stderr


def test_help_shows_readable_metavars() -> None:
    retrain, top = help_text("retrain"), help_text()
    for text in (retrain, top):
        assert "<bool>" not in text and "list[" not in text and "<str>" not in text
        assert "FLAG" not in text  # an option that takes no value shows none
    for metavar in ("KEY=VALUE", "DIR", "FILE", "N,...", "none|flip|rotate|transfer"):
        assert metavar in retrain, metavar
    for text, option in ((top, "--version"), (top, "--help"), (retrain, "--resume"),
                         (retrain, "--force")):  # nothing between the name and the help
        assert re.search(rf"{option}( +-h)? +[A-Z][a-z]", text), option


def test_one_error_prefix_and_the_path_once(cli, tmp_path) -> None:
    """Every error reads 'falsecli <command>: ...', the stage's name not repeated."""
    missing = tmp_path / "nope.yaml"
    result = cli("train", "-w", tmp_path, "-c", missing)
    assert result.stderr.count(str(missing)) == 1
    assert result.stderr.startswith(f"falsecli train: config file {missing}")
    result = cli("rank", "-w", tmp_path)  # the stage's own error starts "rank: ..."
    assert result.stderr.startswith("falsecli rank: no heat maps") and "rank: rank:" not in \
        result.stderr


def test_did_you_mean_for_classes_and_sections(tiny_cfg) -> None:
    from falsecli.core.config import class_id
    from falsecli.core.errors import FalseCliError, did_you_mean

    with pytest.raises(FalseCliError, match="did you mean 'scruff'"):
        class_id(tiny_cfg, "scruf")
    assert did_you_mean("inline_0050", ["inline_0005", "crossline_0050"]) in (
        "; did you mean 'inline_0005'?", "; did you mean 'crossline_0050'?")
    assert did_you_mean("salt", ["scruff", "zechstein"]) == ""


def test_show_lists_stages_and_prints_a_ranking_without_redoing_it(cli, tmp_path) -> None:
    from falsecli.core.files import write_text
    from falsecli.core.manifest import Stage
    from falsecli.core.swap import stage_run

    result = cli("show", "-w", tmp_path)
    assert result.exit_code == 1 and "falsecli train" in result.stderr
    with stage_run(tmp_path, "train", {}):
        pass
    options = {"class": "scruff", "class_id": 4, "by": "forgetting", "min_pixels": 5,
               "epochs": 3, "never_learned": "zero", "run": "train", "sections": 4}
    with stage_run(tmp_path, "rank", {}, upstream=[Stage(tmp_path, "train")]) as run:
        write_text(run.out("ranking.csv"), "class,rank,section,density,events,"
                   "class_pixels\nscruff,1,inline_0005,0.5,3,6\n")
        run.extra.update(options)
    before = (tmp_path / "rank" / "manifest.json").read_bytes()
    listing = json.loads(cli("show", "-w", tmp_path, "--json").stdout)
    assert [(s["stage"], s["status"]) for s in listing["stages"]] == [("train", "fresh"),
                                                                       ("rank", "fresh")]
    shown = cli("show", "rank", "-w", tmp_path)
    assert shown.exit_code == 0 and "inline_0005" in shown.stdout and "0.5000" in shown.stdout
    assert (tmp_path / "rank" / "manifest.json").read_bytes() == before  # nothing redone
    typo = cli("show", "rnak", "-w", tmp_path)
    assert typo.exit_code == 1 and "did you mean 'rank'" in typo.stderr


def test_show_lists_every_stage_in_workflow_order_numbers_by_value(cli, tmp_path) -> None:
    from falsecli.core.swap import stage_run

    names = ["report", "al/random/seed0/round10", "retrain/none/seed10", "al/random/seed0/round2",
             "query", "retrain/none/seed2", "train"]
    for name in names:
        with stage_run(tmp_path, name, {}):
            pass
    listing = json.loads(cli("show", "-w", tmp_path, "--json").stdout)
    assert [s["stage"] for s in listing["stages"]] == [
        "train", "retrain/none/seed2", "retrain/none/seed10", "query", "al/random/seed0/round2",
        "al/random/seed0/round10", "report"]


def test_config_and_cli_parsing_tests_run_without_torch() -> None:
    """The tests of config resolution and of the rules table never need torch (a new test or
    import that pulls it in makes this fail)."""
    files = [str(Path(__file__).with_name(name)) for name in ("test_config.py", "test_rules.py")]
    code = ("import sys, pytest; rc = pytest.main(['-q', '-p', 'no:cacheprovider', *sys.argv[1:]]);"
            "sys.exit(rc or 3 * ('torch' in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _reads(module: str, seen: set[str]) -> set[tuple[str, str]]:
    """The (section, key) pairs that ``module`` and the modules above core it imports,
    transitively, read: ``x["train"]["epochs"]``, or ``tc["epochs"]`` after
    ``tc = x["train"]``."""
    if module in seen:
        return set()
    seen.add(module)
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    sections = {target.id: _text(node.value.slice) for node in ast.walk(tree)
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript)
                for target in node.targets if isinstance(target, ast.Name)}
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _text(node.slice):
            inner = node.value
            section = (_text(inner.slice) if isinstance(inner, ast.Subscript) else
                       sections.get(inner.id) if isinstance(inner, ast.Name) else None)
            out.add((section, _text(node.slice)))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("falsecli.") \
                and not node.module.startswith("falsecli.core"):
            out |= _reads(node.module, seen)
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_lists_only_the_options_it_uses(command: str) -> None:
    """Its own options are parameters its function passes on, its key flags are keys that the
    stage it calls reads; it lists nothing else but the common options. (What the stage reads
    is over-approximated by what the modules it imports read: export imports predict, which
    reads train.device.)"""
    import typer

    from falsecli import cli

    fn = getattr(cli, f"{command}_cmd")
    own = list(inspect.signature(fn).parameters)[1:]
    body = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0].body
    used = {n.id for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    assert set(own) <= used, f"{command} ignores {set(own) - used}"
    params = typer.main.get_command(cli.app).commands[command].params
    keys = {p.opts[0]: re.search(r"\((\w+)\.(\w+)\)\]$", p.help or "") for p in params}
    keys = {option: match.groups() for option, match in keys.items() if match}
    own_options = {o for p in params if p.name in own for o in p.opts if o.startswith("--")}
    assert help_options(command) == COMMON | own_options | set(keys)
    modules = [node.module for stmt in body for node in ast.walk(stmt)
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("falsecli")]
    read = set().union(*(_reads(m, set()) for m in modules))
    for option, key in keys.items():
        assert key in read, f"{command} {option}: {'.'.join(key)} is never read"


@pytest.mark.parametrize("command", ["train", "heatmap", "rank", "transfer", "retrain", "report",
                                     "trace"])
def test_resume_is_offered_by_the_commands_whose_step_resumes(command: str) -> None:
    step = importlib.import_module(f"falsecli.stages.{command}").STEP
    assert ("--resume" in help_options(command)) == step.resumes

"""Run and stage folder names: parsed and formatted by falsecli.core.layout alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from falsecli.core import config, layout
from falsecli.core.errors import FalseCliError
from falsecli.core.layout import Run
from falsecli.core.manifest import Stage

NAMES = {
    "train": Run("train"),
    "retrain/none/seed0": Run("retrain", "none", 0),
    "retrain/transfer-identity/seed12": Run("retrain", "transfer-identity", 12),
    "al/least_confidence/seed3/round10": Run("al", "least_confidence", 3, 10),
}
BAD = ["retrain/flip", "retrain/mixup/seed0", "seed0", "al/switch/seed0", "retrain/flip/seed01",
       "al/switch/seed0/round0/query", "/", "", "train/heatmap"]


def expected_error(key: str, value: str) -> str:
    return (f"{key} is {value!r}; it must be train or retrain/<aug>/seed<k> or "
            f"al/<strategy>/seed<k>/round<r>, e.g. retrain/transfer/seed0")


def make_runs(workdir: Path, *names: str) -> Path:
    for name in names:
        (workdir / name).mkdir(parents=True)
    return workdir


@pytest.mark.parametrize("name", NAMES)
def test_parse_and_format_round_trip(name: str) -> None:
    assert layout.parse_run(name) == NAMES[name]
    assert NAMES[name].name == name


def test_helpers_format_the_run_names() -> None:
    assert layout.retrain_name("flip", 2) == "retrain/flip/seed2"
    assert layout.round_name("gauss", 1, 4) == "al/gauss/seed1/round4"


@pytest.mark.parametrize("name", ["al/switch/seed0/round0/", "retrain/flip/seed0/", "train/"])
def test_a_trailing_slash_is_dropped(name: str) -> None:
    assert layout.parse_run(name).name == name.rstrip("/")


@pytest.mark.parametrize("bad", BAD)
def test_one_error_text_for_a_bad_run_name(bad: str) -> None:
    with pytest.raises(FalseCliError) as caught:
        layout.parse_run(bad, "--run")
    assert str(caught.value) == expected_error("--run", bad)
    with pytest.raises(FalseCliError) as caught:
        config.check("trace.run", bad)
    assert str(caught.value) == expected_error("config key 'trace.run'", bad)


def test_a_mistyped_run_names_the_closest_run_of_the_workdir(tmp_path: Path) -> None:
    work = make_runs(tmp_path, "train", "retrain/flip/seed0", "al/switch/seed0/round1")
    with pytest.raises(FalseCliError) as caught:
        layout.parse_run("retrain/flip/sed0", "--run", work)
    assert str(caught.value) == (expected_error("--run", "retrain/flip/sed0")
                                 + "; did you mean 'retrain/flip/seed0'?")
    with pytest.raises(FalseCliError, match=r"did you mean 'al/switch/seed0/round1'\?$"):
        config.resolve(flags={"query.run": "al/switch/seed0/rund1"}, workdir=work)


def test_a_missing_run_names_the_closest_run_and_its_command(tmp_path: Path) -> None:
    work = make_runs(tmp_path, "retrain/flip/seed0")
    with pytest.raises(FalseCliError) as caught:
        Stage(work, "retrain/flip/seed1").require("heatmap")
    assert str(caught.value) == (
        f"heatmap: no training run in {work}/retrain/flip/seed1; did you mean "
        f"'retrain/flip/seed0'? — run 'falsecli retrain --aug flip --seeds 1 -w {work}' first")


def test_runs_lists_the_workdirs_runs_in_order_numbers_by_value(tmp_path: Path) -> None:
    work = make_runs(tmp_path, "al/random/seed0/round10", "retrain/none/seed10",
                     "al/random/seed0/round2", "retrain/none/seed2", "train",
                     "retrain/none/notes", "al/random/seed0/figures", "report")
    (work / "retrain" / "flip").mkdir()
    (work / "retrain" / "flip" / "seed0").write_text("a file, not a run")
    assert [r.name for r in layout.runs(work)] == [
        "train", "retrain/none/seed2", "retrain/none/seed10", "al/random/seed0/round2",
        "al/random/seed0/round10"]
    assert layout.runs(work, "retrain", "flip") == []
    assert [r.round for r in layout.runs(work, "al")] == [2, 10]


def test_per_run_stage_folders_and_their_commands() -> None:
    run = "al/switch/seed0/round1"
    assert (layout.heatmap_folder("train"), layout.query_folder("train"),
            layout.trace_folder("train", "inline_0005")) == ("heatmap", "query",
                                                             "trace/inline_0005")
    assert (layout.heatmap_folder(run), layout.query_folder(run),
            layout.trace_folder(run, "inline_0005")) == (
        f"{run}/heatmap", f"{run}/query", f"{run}/trace/inline_0005")
    assert layout.command(f"{run}/heatmap") == f"heatmap --run {run}"
    assert layout.command(f"{run}/trace/inline_0005") == f"trace --run {run} --section inline_0005"
    assert layout.command("trace/inline_0005") == "trace --section inline_0005"
    assert layout.command("query") == "query"
    assert layout.command(run) == "al"
    assert layout.command("retrain/rotate/seed4") == "retrain --aug rotate --seeds 4"
    assert layout.command("rank") == "rank"


def test_the_cli_takes_a_run_with_a_trailing_slash(cli, tmp_path: Path) -> None:
    """Shell completion ends a folder with '/': the run is found by its name without it."""
    work = make_runs(tmp_path, "retrain/flip/seed0")
    result = cli("heatmap", "-w", work, "--run", "al/switch/seed0/round0/")
    assert result.exit_code == 1
    assert (f"no training run in {work}/al/switch/seed0/round0 — run 'falsecli al -w {work}' "
            "first") in result.stderr
    typo = cli("heatmap", "-w", work, "--run", "retrain/flip/seed/")
    assert typo.exit_code == 1 and typo.stderr.count("\n") == 1
    assert typo.stderr.endswith("; did you mean 'retrain/flip/seed0'?\n")


def test_help_texts_name_every_form_of_a_run(cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # rich leaves out what does not fit
    for command in ("heatmap", "trace", "query", "predict", "export"):
        text = re.sub(r"[\s│]", "", cli(command, "--help").stdout)  # rich wraps in boxes
        assert "train or retrain/<aug>/seed<k> or al/<strategy>/seed<k>/round<r>".replace(
            " ", "") in text, command

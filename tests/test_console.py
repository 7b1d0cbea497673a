"""Progress off a terminal: plain lines a log file can keep; nothing with --quiet."""

import pytest

from falsecli.core import console


@pytest.fixture(autouse=True)
def not_quiet():
    console.set_quiet(False)
    yield
    console.set_quiet(False)


def epochs(n: int) -> None:
    """A training-like loop: many advances, one info update per epoch."""
    with console.progress() as bar:
        task = bar.add_task("train", total=n * 10, info="")
        for epoch in range(1, n + 1):
            for _ in range(10):
                bar.advance(task)
            bar.update(task, info=f"epoch {epoch}/{n} loss 0.5")
        figures = bar.add_task("figures", total=3, info="")
        for _ in range(3):
            bar.advance(figures)


def test_one_plain_line_per_epoch_and_per_silent_task(capsys) -> None:
    epochs(3)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [line.split(" [")[0] for line in lines] == [
        "train 33%: epoch 1/3 loss 0.5", "train 67%: epoch 2/3 loss 0.5",
        "train 100%: epoch 3/3 loss 0.5", "figures 100%: done"]
    assert not any("\x1b" in line or "━" in line for line in lines)  # no bar, no colour


def test_quiet_silences_progress_and_logs(capsys) -> None:
    console.set_quiet(True)
    epochs(2)
    console.log("run: train")
    assert capsys.readouterr().err == ""


def test_log_lines_are_not_wrapped(capsys) -> None:
    console.log("x" * 200)
    assert capsys.readouterr().err == "x" * 200 + "\n"


def test_bars_fit_80_columns(monkeypatch) -> None:
    """On an 80-column terminal the longest stage name and an epoch's text fit unclipped."""
    import io
    import sys

    from rich.console import Console

    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=out, width=80, force_terminal=True))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    info = "epoch 12/60 loss 0.123 val acc 0.873"
    with console.progress() as bar:
        task = bar.add_task("retrain/transfer/seed4", total=100, info="")
        bar.update(task, advance=50, info=info)
    text = out.getvalue()
    assert info in text and "…" not in text

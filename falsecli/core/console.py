"""Progress and logs on stderr: bars on a terminal, one plain line per epoch, generator
log step or stage elsewhere (a log file, CI, ``nohup``), nothing with --quiet.

stdout is reserved for results, so stages chain in shell scripts.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

stderr = Console(stderr=True)
stdout = Console(highlight=False, soft_wrap=True)
_quiet = False
_plain = False
#: columns of a bar: description, bar, time left, then the free text (losses,
#: accuracies); on an 80-column terminal the free text keeps ~40 columns
BAR_WIDTH = 12


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def set_plain(plain: bool) -> None:
    """Plain lines even on a terminal: a worker of ``--jobs`` shares stderr with others."""
    global _plain
    _plain = plain


def chatty() -> bool:
    """Whether progress bars are drawn (stderr is a terminal, not --quiet, not a worker)."""
    return not _quiet and not _plain and sys.stderr.isatty()


def log(message: str) -> None:
    """One line on stderr, unless --quiet (never wrapped: log files keep one line)."""
    if not _quiet:
        stderr.print(message, highlight=False, soft_wrap=True)


class PlainProgress:
    """The part of :class:`rich.progress.Progress` the stages use, printing plain lines
    instead of a bar: one per change of a task's ``info`` (an epoch, a generator log step)
    and one when a task that said nothing else ends."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks:
            if not task["said"] and exc[0] is None:
                self._say(task, "done")

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 info: str = "") -> int:
        self.tasks.append({"description": description, "total": total,
                           "completed": completed, "info": info, "said": False,
                           "t0": time.perf_counter()})
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.tasks[task_id]["completed"] += advance

    def update(self, task_id: int, *, advance: float | None = None, info: str | None = None,
               completed: float | None = None) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if info is not None and info != task["info"]:
            task["info"] = info
            self._say(task, info)

    @staticmethod
    def _say(task: dict[str, Any], text: str) -> None:
        task["said"] = True
        seconds = time.perf_counter() - task["t0"]
        done = f" {100 * task['completed'] / task['total']:.0f}%" if task["total"] else ""
        log(f"{task['description']}{done}: {text} [{seconds:.0f} s]")


def progress() -> Progress | PlainProgress:
    """A progress bar with a free-text ``info`` field (losses, accuracies) on a terminal;
    plain lines elsewhere; silent with --quiet."""
    if not chatty() and not _quiet:
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=BAR_WIDTH),
        TimeRemainingColumn(compact=True, elapsed_when_finished=True),
        TextColumn("{task.fields[info]}"),
        console=stderr, disable=not chatty(), transient=False,
    )

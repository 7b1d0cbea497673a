"""Progress bars and logs on stderr (off when stderr is not a terminal, or with --quiet).

stdout is reserved for results, so stages chain in shell scripts.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

stderr = Console(stderr=True)
stdout = Console(highlight=False, soft_wrap=True)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def chatty() -> bool:
    """Whether logs and progress bars are shown."""
    return not _quiet and sys.stderr.isatty()


def log(message: str) -> None:
    if chatty():
        stderr.print(message, highlight=False)


def progress() -> Progress:
    """A progress bar with a free-text ``info`` field (losses, accuracies)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=stderr, disable=not chatty(), transient=False,
    )

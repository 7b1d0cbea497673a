"""The one exception type the CLI turns into a single line and exit code 1."""

from __future__ import annotations

import difflib
from typing import Iterable


class FalseCliError(Exception):
    """A run-time problem the user can fix; the message names the file/key/value and the fix."""


class GridError(FalseCliError):
    """A SEG-Y's traces form no regular inline/crossline grid with the configured header
    bytes (so other byte pairs are worth naming: :func:`falsecli.data.geometry.byte_hint`)."""


def did_you_mean(value: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'scruff'?"`` for the closest of ``valid`` to a mistyped ``value``,
    else ``""``: the hint every "unknown X" error ends with."""
    close = difflib.get_close_matches(str(value), list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""

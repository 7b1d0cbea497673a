"""defaults.yaml read as documentation: each key's value as written and the comment beside it.

The comment is the one description of a key: the CLI's help of a flag and the configuration
reference both show it, so that a new key is documented once, where its default is.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Iterator

#: one line of defaults.yaml: indentation, key, the value as written, the comment
_LINE = re.compile(r"(?P<indent> *)(?P<key>\w+):(?P<value>[^#]*)(#\s?(?P<comment>.*))?")


def lines() -> Iterator[tuple[str, str, str]]:
    """(dotted key, value as written, comment) per key line of defaults.yaml, in its order;
    a section's value is empty."""
    text = resources.files("falsecli").joinpath("defaults.yaml").read_text(encoding="utf-8")
    stack: list[str] = []
    for line in text.splitlines():
        match = _LINE.fullmatch(line)
        if match is None:
            continue
        stack[len(match["indent"]) // 2:] = [match["key"]]
        yield ".".join(stack), match["value"].strip(), (match["comment"] or "").strip()


@cache
def comments() -> dict[str, str]:
    """The comment of every key of defaults.yaml (empty where it has none)."""
    return {key: comment for key, _, comment in lines()}

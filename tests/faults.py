"""Run the falsecli CLI and kill it with SIGKILL at a named point (fault-injection tests).

    python tests/faults.py POINT -- <falsecli arguments>

POINT is ``FILE:N:after`` (kill right after the N-th atomic write of a file named FILE is in
place, e.g. the first ``checkpoint.pt``), ``FILE:N:during`` (kill while the N-th write of FILE
is under way: its temporary file holds half the bytes and the target is untouched) or
``call:NAME:N`` (kill on the N-th call of ``falsecli.core.swap.NAME``, or of the function
``NAME`` given as ``module.function``, e.g. ``falsecli.method.inference.probabilities``: a
kill in the middle of a computation). Every atomic write ends in ``os.replace``, so patching
it here reaches them all without a hook in the product.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point.startswith("call:"):
        import importlib

        _, name, nth = point.split(":")
        where, _, name = name.rpartition(".")
        module = importlib.import_module(where or "falsecli.core.swap")
        real, calls = getattr(module, name), [0]

        def call(*args, **kwargs):  # noqa: ANN002, ANN003
            calls[0] += 1
            if calls[0] == int(nth):
                die()
            return real(*args, **kwargs)

        setattr(module, name, call)
        return
    target, nth, when = point.split(":")
    real, seen = os.replace, [0]

    def replace(src, dst, *args, **kwargs):  # noqa: ANN001 (os.replace's own signature)
        if Path(dst).name == target:
            seen[0] += 1
            if seen[0] == int(nth):
                if when == "during":
                    os.truncate(src, os.path.getsize(src) // 2)
                    die()
                real(src, dst, *args, **kwargs)
                die()
        return real(src, dst, *args, **kwargs)

    os.replace = replace


if __name__ == "__main__":
    point, sep, *argv = sys.argv[1:]
    assert sep == "--", __doc__
    import torch

    torch.set_num_threads(1)
    arm(point)
    from falsecli.cli import app

    app(argv, prog_name="falsecli")

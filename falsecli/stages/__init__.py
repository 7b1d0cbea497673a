"""The stages: one module per command (train, heatmap, rank, transfer, retrain, report,
inspect) and the pipeline that chains them. Each stage is a plain function of a config and a
workdir with one signature, ``fn(cfg, workdir, *, force=False, resume=False) -> summary``;
the CLI only parses options and calls it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from falsecli.core.config import Config


class StageFn(Protocol):
    """The one stage signature."""

    def __call__(self, cfg: Config, workdir: Path, *, force: bool = False,
                 resume: bool = False) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Step:
    """A stage as :mod:`falsecli.stages.pipeline` drives it, declared by the stage's module.

    ``plan(cfg, workdir)``: the stage folders the stage would write, each with the config
    that writes exactly that folder (retrain: one per method and seed). ``upstream(cfg,
    workdir)``: the stage folders it reads; a result that read another set is stale (a report
    that has not seen a new run).
    """

    name: str
    run: StageFn
    upstream: Callable[[Config, Path], list[str]]
    plan: Callable[[Config, Path], dict[str, Config]] | None = None

    def folders(self, cfg: Config, workdir: Path) -> dict[str, Config]:
        return self.plan(cfg, workdir) if self.plan is not None else {self.name: cfg}

"""The stages: one module per command, each a plain function of a config and a workdir that
returns a summary dict; the CLI only parses options and calls it.

- The workflow, chained by :mod:`~falsecli.stages.pipeline` (``run``, ``demo``): train,
  heatmap, rank, transfer, retrain, report; and trace, a stage of one run. Each declares its
  :class:`Step`; its function is ``fn(cfg, workdir, *, force=False)``, and a stage that
  keeps checkpoints (train, transfer, retrain: ``Step.resumes``) takes ``resume=False`` too.
- Active learning: query ``(cfg, workdir, *, force)``; al ``(cfg, workdir, *, force)``,
  whose interrupted rounds always continue.
- Outside the workdir: predict and export ``(cfg, workdir, out, *, ..., force)`` write to
  ``out``. Read-only: show ``(cfg, workdir, stage)``, inspect ``(cfg)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from falsecli.core.config import Config


@dataclass(frozen=True)
class Step:
    """A stage as :mod:`falsecli.stages.pipeline` drives it, declared by the stage's module.

    ``run(cfg, workdir, *, force)``, plus ``resume`` when ``resumes``: only a stage that keeps
    checkpoints can continue an interrupted run, and only it is offered ``resume``.
    ``plan(cfg, workdir)``: the stage folders the stage would write, each with the config
    that writes exactly that folder (retrain: one per method and seed). ``upstream(cfg,
    workdir)``: the stage folders it reads; a result that read another set is stale (a report
    that has not seen a new run). ``after(cfg)``: the steps whose folders must be complete
    before a folder of this step starts, given that folder's config from ``plan`` (retrain's
    baseline runs need train/, not transfer/).
    """

    name: str
    run: Callable[..., dict[str, Any]]
    upstream: Callable[[Config, Path], list[str]]
    plan: Callable[[Config, Path], dict[str, Config]] | None = None
    resumes: bool = False
    #: the steps a folder of this one (its config from ``plan``) waits for when runs go in
    #: parallel (``--jobs``); None: every step before it
    after: Callable[[Config], list[str]] | None = None

    def folders(self, cfg: Config, workdir: Path) -> dict[str, Config]:
        return self.plan(cfg, workdir) if self.plan is not None else {self.name: cfg}

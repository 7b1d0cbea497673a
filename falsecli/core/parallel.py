"""Independent runs in parallel: ``--jobs N``, here or on a Ray cluster (``--executor ray``).

A study is a grid of independent runs (methods x seeds, strategies x seeds). On a CPU the
network's threads scale poorly at these sizes, so N processes with the cores split between
them finish more runs per hour than one process with them all (1.05-1.15x on this project's
2-core machine, where each run slows beside the other; docs/speed.md), and in
``run`` and ``demo`` runs that wait for nothing go beside the chain heat maps -> rank ->
generator; with several GPUs each process gets its own. Each run writes
its own stage folder under its own lock, exactly as it would alone, so a killed batch resumes
like a killed run. :mod:`falsecli.core.jobs` schedules and runs them here,
:mod:`falsecli.core.rayrun` as Ray tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from falsecli.core import console
from falsecli.core.jobs import Job, LocalRunner, Runner, cores, count, gpus, schedule

#: ``--jobs auto`` on a CPU: at most this many processes (each needs its own memory: ~1.4 GB
#: for a demo-sized run, 3 GB for F3's; docs/speed.md)
AUTO_CPU_JOBS = 4
#: ``--executor``: here, or one Ray task per run
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Parallel:
    """How a command runs its independent runs: ``--jobs``, ``--executor``, ``--address``."""

    jobs: str = "1"
    executor: str = "local"
    address: str | None = None


#: one run at a time, here (what a stage function does unless told otherwise)
SERIAL = Parallel()


def resolve_jobs(spec: str | int, device: str) -> int:
    """Processes here: ``auto`` is one per visible GPU when ``device`` (train.device) may use
    CUDA, else one per core up to :data:`AUTO_CPU_JOBS`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1  # a torchrun process is one rank of one run
    n = count(spec, 0)
    return n or gpus(device) or max(1, min(cores(), AUTO_CPU_JOBS))


def run_jobs(jobs: list[Job], parallel: Parallel, what: str, device: str = "cpu"
             ) -> dict[str, Any]:
    """Each job's result by name. One process here runs them in order, errors raised as they
    come; otherwise ``parallel.jobs`` at a time, each as soon as those it comes ``after``
    are done, spread over the GPUs when ``device`` (train.device) uses CUDA."""
    runner: Runner
    if parallel.executor == "ray":
        from falsecli.core.rayrun import RayRunner

        runner = RayRunner(parallel.jobs, parallel.address, device)
    else:
        n = resolve_jobs(parallel.jobs, device)
        if n <= 1 or len(jobs) <= 1:
            results = {}
            for job in jobs:
                console.log(f"{what}: {job.name}")
                results[job.name] = job.fn(*job.args, **job.kwargs)
            return results
        runner = LocalRunner(min(n, len(jobs)), device)
    try:
        return schedule(jobs, runner, what)
    finally:
        runner.close()
